"""Hosting the store inside a node: exactly one binds, and its end is reported fast."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from rdzv.errors import StoreError, StoreUnavailableError
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.net import free_port
from rdzv.testing.proxy import RecordingProxy

TOKEN = "hosting-token"
FAST = 5.0  # "fails fast": far below the 30 s operation timeout the clients use


def _auto(port: int) -> TcpStore:
    return TcpStore.from_url(f"tcp://127.0.0.1:{port}?token={TOKEN}")


def test_two_auto_stores_on_one_port_exactly_one_hosts() -> None:
    port = free_port()
    stores: list[TcpStore] = []
    lock = threading.Lock()

    def open_one() -> None:
        store = _auto(port)
        with lock:
            stores.append(store)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert len(stores) == 6
        assert sum(s.hosted is not None for s in stores) == 1
        stores[0].put("k", b"shared")
        assert all(s.get("k").value == b"shared" for s in stores)  # type: ignore[union-attr]
    finally:
        for s in sorted(stores, key=lambda s: s.hosted is not None):  # the host last
            s.close()


def test_is_host_1_on_a_taken_port_raises() -> None:
    with _auto(free_port()) as host:
        assert isinstance(host, TcpStore)
        with pytest.raises(StoreUnavailableError, match="already in use"):
            TcpStore("127.0.0.1", host.address[1], token=TOKEN, is_host="1")


def test_a_refused_connection_fails_fast_whatever_the_operation_timeout() -> None:
    store = TcpStore.from_url(f"tcp://127.0.0.1:{free_port()}?is_host=0&timeout=30")
    start = time.monotonic()
    with store, pytest.raises(StoreUnavailableError, match="nothing listens"):
        store.get("k")
    assert time.monotonic() - start < FAST


@pytest.fixture
def host_and_client() -> Iterator[tuple[TcpStore, TcpStore]]:
    host = _auto(free_port())
    client = _auto(host.address[1])
    assert host.hosted is not None
    assert client.hosted is None
    yield host, client
    client.close()
    host.close()


def test_host_closing_fails_other_clients_fast_even_a_blocked_wait(
    host_and_client: tuple[TcpStore, TcpStore],
) -> None:
    host, client = host_and_client
    since = client.put("w/k", b"x")
    errors: list[BaseException] = []
    started = threading.Event()

    def blocked_wait() -> None:
        started.set()
        try:
            client.wait("w/", since, 30)
        except StoreError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=blocked_wait)
    waiter.start()
    started.wait(10)
    client.server_stats()  # the wait was sent before this, on the same connection
    start = time.monotonic()
    host.close()
    waiter.join(FAST)
    assert isinstance(errors[0], StoreUnavailableError)
    assert "shutting down" in str(errors[0])
    with pytest.raises(StoreUnavailableError):
        client.get("w/k")
    assert time.monotonic() - start < FAST


HOST_SCRIPT = textwrap.dedent(
    """
    import sys
    from rdzv.store.tcp.client import TcpStore
    store = TcpStore("127.0.0.1", 0, token=sys.argv[1], is_host="1")
    store.put("from-host", b"1")
    print(store.address[1], flush=True)
    sys.stdin.read()
    """
)


def test_sigkilled_hosting_process_fails_clients_fast() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST_SCRIPT, TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with _auto(port) as client:
            assert client.get("from-host") is not None
            proc.kill()
            proc.wait(10)
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1"):
                client.wait("nothing/", 10**9, 30)
            assert time.monotonic() - start < FAST
    finally:
        proc.kill()
        proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_a_cut_connection_is_reopened_transparently(host_and_client: tuple[TcpStore, TcpStore]) -> None:
    host, _ = host_and_client
    host.put("k", b"v")
    with (
        RecordingProxy(host.address) as proxy,
        TcpStore("127.0.0.1", proxy.port, token=TOKEN, is_host="0") as client,
    ):
        assert client.get("k") is not None
        proxy.cut()
        assert client.get("k").value == b"v"  # type: ignore[union-attr]
        assert client.put("k2", b"w") > 0
