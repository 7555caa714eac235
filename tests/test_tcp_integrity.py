"""Frame MACs: a proxy on the path that rewrites or replays bytes after the handshake is caught."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from rdzv.errors import StoreUnavailableError
from rdzv.registry import open_store
from rdzv.testing.proxy import RecordingProxy
from rdzv.testing.servers import ServerProcess, serve_process

TOKEN = "integrity-token-77"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as running:
        yield running


def _rewrite(direction: str, old: bytes, new: bytes) -> Callable[[str, bytes], bytes]:
    """Replace ``old`` by ``new`` (same length) in bytes going ``direction`` ("client": to the server)."""
    return lambda way, data: data.replace(old, new) if way == direction else data


def _through(proxy: RecordingProxy, token: str | None = TOKEN) -> str:
    query = f"&token={token}" if token else ""
    return f"tcp://127.0.0.1:{proxy.port}?is_host=0&timeout=5{query}"


def test_a_value_rewritten_on_its_way_to_the_client_is_detected(server: ServerProcess) -> None:
    tamper = _rewrite("server", b"honest-value", b"forged-value")
    with (
        RecordingProxy(("127.0.0.1", server.port), tamper=tamper) as proxy,
        open_store(_through(proxy)) as store,
    ):
        store.put("rdzv/job/doc", b"honest-value")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="failed its integrity check"):
            store.get("rdzv/job/doc")
        assert time.monotonic() - started < 4  # at once, not after retrying until the timeout
    assert b"forged-value" in proxy.downstream_bytes()  # the forgery did reach the client


def test_a_value_rewritten_on_its_way_to_the_server_is_refused_and_not_stored(
    server: ServerProcess,
) -> None:
    tamper = _rewrite("client", b"honest-value", b"forged-value")
    with (
        RecordingProxy(("127.0.0.1", server.port), tamper=tamper) as proxy,
        open_store(_through(proxy)) as store,
        pytest.raises(StoreUnavailableError, match="failed its integrity check"),
    ):
        store.put("rdzv/job/doc", b"honest-value")
    with open_store(server.url) as direct:
        assert direct.get("rdzv/job/doc") is None
    assert "integrity: frame 0 failed its integrity check" in server.log_text()


def test_a_replayed_request_is_refused(server: ServerProcess) -> None:
    def replay(way: str, data: bytes) -> bytes:
        return data + data if way == "client" and b"replayed/counter" in data else data

    with (
        RecordingProxy(("127.0.0.1", server.port), tamper=replay) as proxy,
        open_store(_through(proxy)) as store,
    ):
        store.add("replayed/counter", 5)
    with open_store(server.url) as direct:
        assert direct.get("replayed/counter").value == b"5"  # type: ignore[union-attr]
    assert "failed its integrity check" in server.log_text()


def test_without_a_token_nothing_detects_tampering(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limit of the mechanism, staged: no token, no key, no MAC (use a token, or TLS)."""
    monkeypatch.delenv("RDZV_TOKEN", raising=False)
    with serve_process(token=None) as open_server:
        tamper = _rewrite("server", b"honest-value", b"forged-value")
        with (
            RecordingProxy(("127.0.0.1", open_server.port), tamper=tamper) as proxy,
            open_store(_through(proxy, token=None)) as store,
        ):
            store.put("k", b"honest-value")
            assert store.get("k").value == b"forged-value"  # type: ignore[union-attr]
