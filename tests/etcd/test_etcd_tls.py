"""etcd+https:// against an etcd that serves TLS and requires client certificates."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv.errors import AuthenticationError
from rdzv.registry import open_store
from rdzv.testing.etcd import EtcdCluster
from rdzv.testing.tls import make_tls_files

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1, tls=True) as cluster:
        yield cluster


def test_ca_and_client_certificate_give_a_working_store(tls_etcd: EtcdCluster) -> None:
    url = tls_etcd.url("secure", **tls_etcd.client_tls_options())
    assert url.startswith("etcd+https://")
    with open_store(url) as store:
        since = store.put("w/k", b"v")
        assert store.get("w/k").value == b"v"  # type: ignore[union-attr]
        assert store.wait("w/", since - 1, 5) == since


def test_missing_client_certificate_raises_authentication_error_at_once(tls_etcd: EtcdCluster) -> None:
    ca = tls_etcd.client_tls_options()["ca"]
    with open_store(tls_etcd.url("secure", ca=ca, timeout=5)) as store:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="TLS"):
            store.put("k", b"v")
        assert time.monotonic() - started < 2


def test_untrusted_server_raises_authentication_error(tls_etcd: EtcdCluster, tmp_path: Path) -> None:
    stranger = make_tls_files(tmp_path / "other")
    options = {**tls_etcd.client_tls_options(), "ca": str(stranger.ca)}
    with (
        open_store(tls_etcd.url("secure", **options)) as store,
        pytest.raises(AuthenticationError, match="TLS"),
    ):
        store.get("k")
