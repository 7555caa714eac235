"""Failures that make no noise: a store host killed, a flow dropped silently, a stalled store.

Real ``rdzv serve`` and real node processes on loopback; faults staged with
SIGKILL, SIGSTOP and :class:`rdzv.testing.faultproxy.FaultProxy`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rdzv.errors import RendezvousTimeoutError, StoreTimeoutError, StoreUnavailableError
from rdzv.registry import open_store
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import Change, Rendezvous
from rdzv.store.base import Store
from rdzv.store.deadline import bounded
from rdzv.testing.faultproxy import FaultProxy, Mode
from rdzv.testing.net import free_port, wait_for_port
from rdzv.testing.servers import ServerProcess, serve_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

NODE = Path(__file__).parent / "programs" / "rdzv_node.py"
TOKEN = "silent-failure"
PATIENCE = 40.0


class NodeProcess:
    """``tests/programs/rdzv_node.py`` in a subprocess; its JSON events in a queue."""

    def __init__(
        self, url: str, node_id: str, lo: int, hi: int, *, heartbeat: float, last_call: float
    ) -> None:
        self.node_id = node_id
        args = [url, "job", node_id, str(lo), str(hi), str(heartbeat), str(last_call)]
        self.proc = subprocess.Popen([sys.executable, str(NODE), *args], stdout=subprocess.PIPE, text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, kind: str, timeout: float = PATIENCE) -> dict[str, Any]:
        """The next event of ``kind`` (earlier events of other kinds are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            if event["event"] == kind:
                return event

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as running:
        yield running


def _url(port: int, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": TOKEN, "is_host": 0, **options}.items())
    return f"tcp://127.0.0.1:{port}?{query}"


def _rank_leases(store: Store, round_: int) -> dict[str, int]:
    prefix = f"{Layout('job').prefix}{Layout.ranks(round_)}"
    return {e.key[len(prefix) :]: e.lease or 0 for e in store.list(prefix)}


def _after_the_kill(node: Rendezvous) -> tuple[float, float, BaseException]:
    """Seconds until the watching node noticed, seconds until its next join gave up, the error."""
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        node.wait_for_change(PATIENCE)
    noticed = time.monotonic() - start
    start = time.monotonic()
    with pytest.raises(StoreUnavailableError) as raised:
        node.next_rendezvous()
    return noticed, time.monotonic() - start, raised.value


@pytest.mark.parametrize("join_timeout", [4.0])
def test_with_the_store_host_killed_next_rendezvous_gives_up_within_join_timeout(join_timeout: float) -> None:
    port = free_port()
    host = NodeProcess(f"tcp://127.0.0.1:{port}?is_host=1", "host", 3, 3, heartbeat=0.5, last_call=1)
    nodes: list[Rendezvous] = []
    try:
        wait_for_port("127.0.0.1", port, PATIENCE)
        url = f"tcp://127.0.0.1:{port}?is_host=0"  # 30 s per operation, as by default
        nodes = [
            Rendezvous(url, "job", 3, 3, addr="127.0.0.1", join_timeout=join_timeout, heartbeat_interval=0.5)
            for _ in range(2)
        ]
        with ThreadPoolExecutor(2) as pool:
            assert [i.world_size for i in pool.map(lambda n: n.next_rendezvous(), nodes)] == [3, 3]
        host.next("round")
        host.proc.kill()
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(_after_the_kill, nodes))
        for noticed, took, error in outcomes:
            assert noticed < 5.0, f"the watching node noticed the kill after {noticed:.2f} s"
            assert took < join_timeout + 1.0, f"next_rendezvous gave up after {took:.2f} s"
            assert "nothing listens" in str(error)
    finally:
        for node in nodes:
            node.shutdown()
        host.stop()


def test_a_silently_dropped_node_notices_reconnects_and_rejoins(server: ServerProcess) -> None:
    """The node's flow is blackholed (no reset, no reply) while it watches its round.

    Its lease (1.5 s) runs out before it can tell (ping after 1 s of silence, dead 2 s
    later), so the others re-form without it; it must notice, reconnect on a fresh
    flow and rejoin, ending in the same round as everyone, not stuck in the old one.
    """
    with FaultProxy() as proxy:
        link = proxy.link("c->server", (server.host, server.port))
        nodes = [
            NodeProcess(_url(server.port), "a", 2, 3, heartbeat=0.5, last_call=1),
            NodeProcess(_url(server.port), "b", 2, 3, heartbeat=0.5, last_call=1),
            NodeProcess(_url(link.port, probe=1), "c", 2, 3, heartbeat=0.5, last_call=1),
        ]
        try:
            first = {n.node_id: n.next("round") for n in nodes}
            assert {e["world"] for e in first.values()} == {3}
            flows_before = link.accepted
            link.blackhole_flows()
            dropped_at = time.monotonic()
            noticed = nodes[2].next("change")
            assert noticed["t"] - dropped_at < 8.0, f"noticed after {noticed['t'] - dropped_at:.2f} s"
            assert link.accepted > flows_before  # it replaced the dead connection
            final = {n.node_id: _round_with(n, world=3) for n in nodes}
            assert len({e["round"] for e in final.values()}) == 1
            assert min(e["round"] for e in final.values()) > first["c"]["round"]
        finally:
            for node in nodes:
                node.stop()


def _round_with(node: NodeProcess, *, world: int) -> dict[str, Any]:
    """The node's first round event of ``world`` members from now on."""
    while True:
        event = node.next("round")
        if event["world"] == world:
            return event


def test_a_stalled_server_evicts_no_one_but_a_stopped_node_is_still_evicted(server: ServerProcess) -> None:
    """SIGSTOP of ``rdzv serve`` for longer than the lease, then of one node."""
    ttl = 1.0 * 3  # heartbeat 1 s, 3 misses
    nodes = [NodeProcess(_url(server.port), f"n{i}", 4, 4, heartbeat=1.0, last_call=1) for i in range(4)]
    watcher = open_store(_url(server.port))
    try:
        round_ = {n.next("round")["round"] for n in nodes}.pop()
        leases = _rank_leases(watcher, round_)
        assert len(leases) == 4

        os.kill(server.process.pid, signal.SIGSTOP)
        time.sleep(ttl + 2.0)  # the fault itself: the server is stopped this long
        os.kill(server.process.pid, signal.SIGCONT)
        woke = time.monotonic()
        # Wait until every member has refreshed its lease since the wake: by then an
        # uncompensated server would long have evicted them all.
        while time.monotonic() - woke < PATIENCE:
            infos = [watcher.lease_info(lease) for lease in leases.values()]
            if all(i is not None and i.since_refresh < time.monotonic() - woke for i in infos):
                break
            if any(i is None for i in infos):
                break
            time.sleep(0.1)  # polling the server's view of the leases
        assert _rank_leases(watcher, round_) == leases, "a healthy member was evicted after the stall"
        assert watcher.server_stats()["stalled_seconds"] >= ttl  # type: ignore[attr-defined]
        assert all(n.events.empty() for n in nodes), "a node saw a change after the stall"

        victim, survivors = nodes[3], nodes[:3]
        victim.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        for node in survivors:
            event = node.next("change")
            assert event["change"] == Change.MEMBER_LOST
            assert event["t"] - stopped_at < ttl + 5.0
        assert "n3" not in _rank_leases(watcher, round_)
    finally:
        watcher.close()
        for node in nodes:
            node.stop()


def test_with_the_store_silent_next_rendezvous_still_ends_within_join_timeout(server: ServerProcess) -> None:
    """The store host dies without a reset (power loss): every byte vanishes, new connections hang."""
    with FaultProxy() as proxy:
        link = proxy.link("nodes->server", (server.host, server.port))
        url = _url(link.port)  # 30 s per operation, as by default
        nodes = [
            Rendezvous(url, "job", 2, 2, addr="127.0.0.1", join_timeout=3, heartbeat_interval=0.5)
            for _ in range(2)
        ]
        try:
            with ThreadPoolExecutor(2) as pool:
                assert [i.world_size for i in pool.map(lambda n: n.next_rendezvous(), nodes)] == [2, 2]
            link.set_mode(Mode.BLACKHOLE)
            start = time.monotonic()
            with pytest.raises((StoreTimeoutError, StoreUnavailableError, RendezvousTimeoutError)) as raised:
                nodes[0].next_rendezvous()
            took = time.monotonic() - start
            print(f"silent store: gave up after {took:.2f} s with {raised.value!r}")
            assert took < 3 + 1.0, f"next_rendezvous gave up after {took:.2f} s"
        finally:
            link.set_mode(Mode.REJECT)  # shutdown's revoke fails fast rather than waiting out its bound
            for node in nodes:
                node.shutdown()


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_a_stalled_file_lock_holder_evicts_no_one(tmp_path: Path) -> None:
    """A process holds the file store's lock past every lease (a holder stopped mid-write)."""
    url = f"file://{tmp_path}?poll=0.05"
    ttl = 0.5 * 3
    nodes = [NodeProcess(url, f"n{i}", 2, 2, heartbeat=0.5, last_call=1) for i in range(2)]
    holder: subprocess.Popen[str] | None = None
    try:
        round_ = {n.next("round")["round"] for n in nodes}.pop()
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
        )
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        time.sleep(ttl * 2)  # the fault itself: the lock is held this long
        holder.kill()
        holder.wait(10)
        time.sleep(ttl + 1.0)  # an uncompensated store evicts everyone at once; give it every chance
        with open_store(url) as fresh:  # a new observer: it judges no lease before a full ttl
            assert set(_rank_leases(fresh, round_)) == {"n0", "n1"}
        assert all(n.events.empty() for n in nodes), "a node saw a change after the stall"
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)
            if holder.stdout is not None:
                holder.stdout.close()
        for node in nodes:
            node.stop()


def test_short_calls_alone_notice_a_dropped_flow_and_reconnect(server: ServerProcess) -> None:
    """A node past its join only heartbeats; each refresh gives up at its bound, before any probe
    interval, yet the connection is still probed and replaced."""
    with FaultProxy() as proxy:
        link = proxy.link("c->server", (server.host, server.port))
        with open_store(_url(link.port, probe=0.5)) as store:
            lease = store.grant(30)
            link.blackhole_flows()
            dropped_at = time.monotonic()
            refreshed = False
            while not refreshed and time.monotonic() - dropped_at < PATIENCE:
                try:
                    with bounded(time.monotonic() + 0.3):  # as the heartbeat bounds each beat
                        refreshed = store.refresh(lease)
                except StoreTimeoutError:
                    pass
            took = time.monotonic() - dropped_at
            assert refreshed
            assert link.accepted == 2  # the dead connection was replaced by a fresh one
            assert took < 0.5 * 3 + 2.0, f"a fresh connection after {took:.2f} s"
