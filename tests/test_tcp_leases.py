"""Server-side lease expiry and push waits on the TCP store, at scale."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from rdzv.registry import open_store
from rdzv.store.base import Store
from rdzv.store.tcp.client import TcpStore
from rdzv.store.tcp.connection import Connection
from rdzv.store.tcp.waiters import Waiter, WaiterIndex
from rdzv.testing.servers import ServerProcess, serve_process

TOKEN = "lease-token"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as running:
        yield running


@pytest.fixture
def store(server: ServerProcess) -> Iterator[Store]:
    with open_store(server.url) as handle:
        yield handle


def test_lease_expiry_wakes_a_waiter_after_the_ttl(store: Store) -> None:
    lease = store.grant(0.3)
    since = store.put("members/a", b"1", lease=lease)
    start = time.monotonic()
    revision = store.wait("members/", since, 10)
    elapsed = time.monotonic() - start
    assert revision is not None
    assert revision > since
    assert 0.2 < elapsed < 3
    assert store.get("members/a") is None


def test_refresh_keeps_a_lease_alive_past_its_ttl(store: Store) -> None:
    lease = store.grant(0.4)
    since = store.put("members/a", b"1", lease=lease)
    for _ in range(4):
        assert store.wait("members/", since, 0.2) is None
        assert store.refresh(lease)
    assert store.get("members/a") is not None


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys
    from rdzv.registry import open_store
    store = open_store(sys.argv[1])
    lease = store.grant(0.5)
    store.put("members/victim", b"alive", lease=lease)
    print("ready", flush=True)
    while True:
        store.refresh(lease)
        store.wait("nothing/", 10**12, 0.1)
    """
)


def test_sigkilled_clients_lease_expires_on_the_server(server: ServerProcess, store: Store) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, server.url], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        entry = store.get("members/victim")
        assert entry is not None
        since = store.list("").revision
        assert store.wait("members/", since, 0.7) is None  # refreshed while alive
        proc.kill()
        proc.wait(10)
        assert store.wait("members/", store.list("").revision, 10) is not None
        assert store.get("members/victim") is None
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_4096_waiters_on_one_prefix_are_all_woken_by_one_put(server: ServerProcess, store: Store) -> None:
    assert isinstance(store, TcpStore)
    since = store.put("round/doc", b"0")
    conn = Connection(("127.0.0.1", server.port), token=TOKEN.encode(), tls=None, timeout=10, url=store.url)
    try:
        pending = [conn.send("wait", ["round/", since, 60])[1] for _ in range(4096)]
        _, ping = conn.send("ping", [])  # a connection's requests are handled in order
        assert conn.await_reply(ping, time.monotonic() + 20)
        assert store.server_stats()["waiters"] == 4096
        revision = store.put("round/doc", b"1")
        assert all(conn.await_reply(p, time.monotonic() + 20) for p in pending)
        assert {p.result for p in pending} == {revision}
        assert store.server_stats()["waiters"] == 0
    finally:
        conn.close()


def test_waiter_index_wakes_only_matching_prefixes() -> None:
    index = WaiterIndex()
    woken: list[str] = []
    for prefix in ["a/", "a/b/", "b/", ""]:
        index.add(Waiter(prefix, 0, lambda rev, prefix=prefix: woken.append(prefix)))
    assert index.wake(["a/b/c"], 5) == 3
    assert sorted(woken) == ["", "a/", "a/b/"]
    assert len(index) == 1


def test_server_stats_report_connections_keys_leases_and_ops(store: Store) -> None:
    assert isinstance(store, TcpStore)
    lease = store.grant(30)
    store.put("k", b"v", lease=lease)
    stats = store.server_stats()
    assert stats["connections"] >= 1
    assert stats["keys"] == 1
    assert stats["leases"] == 1
    assert stats["ops_total"] >= 3
    assert {"waiters", "ops_per_second", "revision"} <= set(stats)


def test_lease_info_reports_ttl_and_time_left_by_the_server_clock(store: Store) -> None:
    lease = store.grant(30)
    info = store.lease_info(lease)
    assert info is not None
    assert info.ttl == 30
    assert 0 < info.remaining <= 30
    store.revoke(lease)
    assert store.lease_info(lease) is None
