"""TLS on the TCP store: a real ``rdzv serve --tls-cert/--tls-key`` and a client trusting its CA."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv.errors import StoreUnavailableError
from rdzv.registry import open_store
from rdzv.testing.servers import ServerProcess, serve_process

TOKEN = "tls-token"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    cert, key = _self_signed(tmp_path, "server")
    with serve_process(token=TOKEN, args=["--tls-cert", str(cert), "--tls-key", str(key)]) as server:
        yield server, cert


def test_tls_client_shares_one_connection_across_threads(tls_server: tuple[ServerProcess, Path]) -> None:
    server, cert = tls_server
    url = f"{server.url}&tls=1&ca={cert}"
    errors: list[BaseException] = []
    with open_store(url) as store:
        since = store.put("w/start", b"0")
        woken: list[int | None] = []
        waiter = threading.Thread(target=lambda: woken.append(store.wait("w/end", since, 20)))
        waiter.start()

        def work(n: int) -> None:
            try:
                for i in range(50):
                    store.put(f"t{n}/{i}", bytes([i]) * 100)
                    assert store.get(f"t{n}/{i}").value == bytes([i]) * 100  # type: ignore[union-attr]
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(30)
        store.put("w/end", b"1")
        waiter.join(20)
        assert not errors
        assert woken[0] is not None
        assert len(store.list("t")) == 400


def test_tls_client_refuses_a_server_its_ca_does_not_sign(
    tls_server: tuple[ServerProcess, Path], tmp_path: Path
) -> None:
    server, _ = tls_server
    other_ca, _ = _self_signed(tmp_path, "other")
    with (
        open_store(f"{server.url}&tls=1&ca={other_ca}&timeout=5") as store,
        pytest.raises(StoreUnavailableError, match="TLS"),
    ):
        store.get("k")
