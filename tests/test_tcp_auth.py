"""Authentication of the TCP store: HMAC challenge-response, refusals, and what crosses the wire."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from rdzv.errors import AuthenticationError, ConfigurationError
from rdzv.registry import open_store
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.proxy import RecordingProxy
from rdzv.testing.servers import ServerProcess, serve_process

TOKEN = "s3cret-token-1f2e"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as running:
        yield running


def _url(server: ServerProcess, query: str = "") -> str:
    return f"tcp://127.0.0.1:{server.port}?is_host=0&timeout=5{query}"


def test_wrong_token_raises_authentication_error(server: ServerProcess) -> None:
    with (
        open_store(_url(server, "&token=wrong")) as store,
        pytest.raises(AuthenticationError, match="rejected our token"),
    ):
        store.get("k")
    assert "authentication failed: the client presented a wrong token" in server.log_text()


def test_missing_token_raises_authentication_error(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RDZV_TOKEN", raising=False)
    with open_store(_url(server)) as store, pytest.raises(AuthenticationError, match="requires a token"):
        store.get("k")


def test_token_is_read_from_rdzv_token_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDZV_TOKEN", TOKEN)
    with open_store(_url(server)) as store:
        store.put("k", b"v")
        assert store.get("k") is not None


def test_token_never_crosses_the_wire(server: ServerProcess) -> None:
    with RecordingProxy(("127.0.0.1", server.port)) as proxy:
        with open_store(f"tcp://127.0.0.1:{proxy.port}?is_host=0&token={TOKEN}") as store:
            store.put("k", b"value")
            assert store.get("k") is not None
        sent, received = proxy.upstream_bytes(), proxy.downstream_bytes()
    assert b"value" in sent  # the recording works
    assert TOKEN.encode() not in sent
    assert TOKEN.encode() not in received


def test_serve_refuses_non_loopback_host_without_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rdzv", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "refusing to listen on non-loopback 0.0.0.0 without a token" in result.stderr


def test_hosting_store_refuses_non_loopback_host_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RDZV_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="without a token"):
        TcpStore("0.0.0.0", 0, is_host="1")


def test_unknown_url_option_lists_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown tcp:// option\(s\) colour; valid options: token"):
        open_store("tcp://127.0.0.1:1?colour=blue")
