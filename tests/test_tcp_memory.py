"""Bounded memory: what a connection holds is freed when it closes, and no frame hangs forever."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.fuzz import memory_mib
from rdzv.testing.servers import ServerProcess, serve_process
from rdzv.testing.wire import WireClient

TOKEN = "memory-token-3b"
MiB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN, args=["--frame-timeout", "1"]) as running:
        yield running


def _stat_becomes(store: TcpStore, name: str, wanted: int, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while (value := int(store.server_stats()[name])) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)  # a counter in another process: there is no event to wait on
    return value


def test_closing_connections_with_pending_waits_frees_waiters_and_buffers_at_once(
    server: ServerProcess,
) -> None:
    stats = TcpStore.from_url(server.url)
    try:
        before = memory_mib(server.process.pid)
        clients = []
        for _ in range(20):
            raw = WireClient(server.port)
            assert raw.handshake(TOKEN.encode())["ok"]
            raw.send([1, "wait", ["nothing/here/", 0, 7 * 24 * 3600.0]])  # blocks for a week
            raw.send_raw(p.HEADER.pack(3 * MiB) + b"\0" * (2 * MiB))  # and 2 MiB of a frame left hanging
            clients.append(raw)
        assert _stat_becomes(stats, "waiters", 20) == 20
        grown = memory_mib(server.process.pid)
        for raw in clients:
            raw.close()
        started = time.monotonic()
        assert _stat_becomes(stats, "waiters", 0) == 0
        assert _stat_becomes(stats, "connections", 1) == 1
        freed_in = time.monotonic() - started
        after = memory_mib(server.process.pid)
    finally:
        stats.close()
    print(f"RSS {before:.1f} -> {grown:.1f} (20 pending waits + 40 MiB half frames) -> {after:.1f} MiB")
    assert grown - before > 20  # the buffers were really held
    assert after - before < 8
    assert freed_in < 5  # at once: the waits had a week to run


def test_a_frame_left_half_sent_after_authentication_is_timed_out(server: ServerProcess) -> None:
    with WireClient(server.port) as raw:
        assert raw.handshake(TOKEN.encode())["ok"]
        frame = p.encode([1, "put", ["k", b"v" * 100, None]], raw.send_mac)
        raw.send_raw(frame[:50])
        started = time.monotonic()
        frames = raw.receive_until_closed()
        assert time.monotonic() - started < 9  # by the 1 s limit, long before the default 30 s
    assert frames[-1][2] == {"kind": p.KIND_PROTOCOL, "message": "a frame did not arrive whole within 1.0 s"}


def test_a_silent_connection_is_closed_before_authentication(server: ServerProcess) -> None:
    with WireClient(server.port) as raw:
        raw.read_hello()
        frames = raw.receive_until_closed()
    assert frames[-1][2] == {"kind": p.KIND_LIMIT, "message": "no handshake within the time limit"}


def test_a_client_that_never_reads_its_replies_cannot_grow_the_server(server: ServerProcess) -> None:
    with TcpStore.from_url(server.url) as store:
        store.put("big", b"\1" * MiB)
        before = memory_mib(server.process.pid)
        with WireClient(server.port) as raw:
            assert raw.handshake(TOKEN.encode())["ok"]
            raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            for i in range(1, 2001):  # 2 GiB of replies, pipelined, never read
                raw.send([i, "get", ["big"]])
            assert store.get("big") is not None  # the server still serves others
            during = memory_mib(server.process.pid)
    print(f"RSS {before:.1f} -> {during:.1f} MiB with 2,000 unread 1 MiB replies")
    assert during - before < 40
