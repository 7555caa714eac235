"""Authentication of the TCP store: HMAC challenge-response, refusals, and what crosses the wire."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from rdzv.errors import AuthenticationError, ConfigurationError
from rdzv.registry import open_store
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.client import TcpStore
from rdzv.store.tcp.connection import Connection
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


# -- no downgrade: the client authenticates the server too ------------------------------------


@pytest.fixture
def impostor() -> Iterator[ServerProcess]:
    """A genuine ``rdzv serve`` with no token: what an impostor on the store's address would offer."""
    with serve_process(token=None) as running:
        yield running


def test_client_with_token_refuses_a_server_offering_no_authentication(impostor: ServerProcess) -> None:
    address = f"127.0.0.1:{impostor.port}"
    with open_store(f"tcp://{address}?is_host=0&timeout=5&token={TOKEN}") as store:
        with pytest.raises(AuthenticationError, match="offers no authentication") as refused:
            store.put("rdzv/job/doc", b"coordinator=10.0.0.66")
        assert address in str(refused.value)
        assert refused.value.url == f"tcp://{address}"
    with open_store(impostor.url) as anyone:  # nothing reached the impostor
        assert anyone.list("").entries == ()


class _FakeAuthServer:
    """Says it authenticates, then answers the handshake with a proof it cannot have computed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.after_handshake = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(
                p.encode({"rdzv": p.VERSION, "server_id": "fake", "nonce": os.urandom(32), "auth": True})
            )
            (size,) = p.HEADER.unpack(conn.recv(4, socket.MSG_WAITALL))
            conn.recv(size, socket.MSG_WAITALL)
            conn.sendall(p.encode({"ok": True, "mac": os.urandom(32)}))
            with contextlib.suppress(OSError):
                while chunk := conn.recv(65536):
                    self.after_handshake += chunk

    def close(self) -> None:
        self._thread.join(10)
        self.listener.close()


def test_client_refuses_a_server_that_cannot_prove_the_token() -> None:
    fake = _FakeAuthServer()
    try:
        with (
            open_store(f"tcp://127.0.0.1:{fake.port}?is_host=0&timeout=5&token={TOKEN}") as store,
            pytest.raises(AuthenticationError, match=f"127.0.0.1:{fake.port} could not prove"),
        ):
            store.put("rdzv/job/doc", b"coordinator=10.0.0.66")
    finally:
        fake.close()
    assert fake.after_handshake == b""  # not one request was sent to it


def test_client_without_token_refuses_an_unauthenticated_server_unless_allowed(
    impostor: ServerProcess,
) -> None:
    address = ("127.0.0.1", impostor.port)
    with pytest.raises(AuthenticationError, match="not on loopback and offers no authentication"):
        Connection(address, token=None, tls=None, timeout=5, url="tcp://10.1.2.3:29400")
    allowed = Connection(
        address, token=None, tls=None, timeout=5, url=impostor.url, allow_unauthenticated=True
    )
    allowed.close()
