"""The lighter tcp client: no thread per connection or per lease, against a real ``rdzv serve``."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from rdzv.errors import StoreUnavailableError
from rdzv.registry import open_store
from rdzv.rendezvous.node import Rendezvous
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.servers import ServerProcess, serve_process


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token="io-token") as running:
        yield running


def tcp(url: str) -> TcpStore:
    store = open_store(url)
    assert isinstance(store, TcpStore)
    return store


def until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll a condition that has no event to wait on (another process's doing), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_many_connections_in_one_process_start_no_thread_per_connection(server: ServerProcess) -> None:
    warm = tcp(server.url)
    warm.put("warm", b"1")  # the process's I/O thread exists from here on
    before = threading.active_count()
    stores = [tcp(server.url) for _ in range(40)]
    try:
        for i, store in enumerate(stores):
            store.put(f"k{i}", str(i).encode())
        for i, store in enumerate(stores):
            entry = store.get(f"k{(i + 1) % len(stores)}")
            assert entry is not None
            assert entry.value == str((i + 1) % len(stores)).encode()
        assert threading.active_count() == before  # 40 connections, not one thread more
    finally:
        for store in [warm, *stores]:
            store.close()


def test_a_caller_blocked_in_wait_delivers_other_callers_replies(server: ServerProcess) -> None:
    store = tcp(server.url)
    try:
        since = store.put("other", b"0")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(store.wait, "watched/", since, 30.0)
            for i in range(200):  # their replies arrive while the waiting caller may hold the socket
                store.put("other", str(i).encode())
                entry = store.get("other")
                assert entry is not None
                assert entry.value == str(i).encode()
            assert not waiting.done()
            changed = store.put("watched/key", b"x")
            assert waiting.result(10) == changed
    finally:
        store.close()


def test_an_idle_connection_learns_of_a_server_shutdown_without_a_caller() -> None:
    with serve_process(token="io-token") as running:
        store = tcp(running.url)
        store.put("k", b"v")
        connection = store._conn
        assert connection is not None
        running.stop()  # SIGTERM: the server sends every client a shutdown notice, then closes
        assert until(lambda: connection.lost is not None), "the I/O thread never read the notice"
        assert connection.lost is not None
        assert connection.lost.final
        with pytest.raises(StoreUnavailableError, match="shutting down"):
            store.get("k")
        store.close()


def test_heartbeats_of_many_nodes_in_one_process_share_a_few_threads(server: ServerProcess) -> None:
    before = {t.name for t in threading.enumerate()}
    nodes = [
        Rendezvous(server.url, "beats", 24, 24, node_id=f"n{i}", addr="127.0.0.1:1", heartbeat_interval=0.2)
        for i in range(24)
    ]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(lambda node: node.next_rendezvous(), nodes))
        assert until(lambda: all(node._heartbeat.refreshes >= 3 for node in nodes))
        started = {t.name for t in threading.enumerate()} - before
        beat_threads = [name for name in started if name.startswith("rdzv-beats")]
        assert len(beat_threads) < len(nodes) // 2, started
        assert not [name for name in started if name.startswith("rdzv-tcp-reader")]
    finally:
        for node in nodes:
            node.shutdown()
