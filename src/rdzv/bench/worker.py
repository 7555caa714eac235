"""One benchmark worker: many simulated nodes, one thread each.

With ``connections="per-node"`` (the default of ``rdzv bench``) every node opens
its own store from the URL, as a deployed node does; its client connects and
authenticates (the token handshake) on its first call, after the release. With
``"shared"`` the nodes of a worker share one client that connected before the
release.

The harness talks to a worker over a pipe, one command at a time::

    ("go", phase, timeout)   release ``phase`` (1: join, 3: rejoin) and report when done
    ("await", phase, timeout) report when every node finished ``phase`` (2: notice a loss)
    ("tally", None, 0)       the summed operation counts of this worker's nodes, now
    ("cut", index, 0)        cut node ``index`` off the store (it stops heartbeating)
    ("exit", None, 0)        report peak memory and stop

Phase 1 is ``next_rendezvous()``; phase 2 is ``wait_for_change()`` after it, which
returns when a member is lost; phase 3 is the survivors' next round, with
``min_nodes = max_nodes = N - 1``. Times are ``time.monotonic()`` readings,
comparable across processes on one machine.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from rdzv.bench.counting import CountingStore, Tally
from rdzv.bench.stores import peak_rss_of
from rdzv.registry import open_store
from rdzv.rendezvous.node import Rendezvous
from rdzv.store.base import Store

__all__ = ["WorkerSpec", "run_worker"]

STACK_SIZE = 512 * 1024
"""Thread stack size: thousands of node threads fit in little memory."""
SWITCH_INTERVAL = 0.05
"""GIL switch interval of a worker (CPython's default is 5 ms). Each thread waiting for the GIL
wakes once per interval; with a thousand node threads in one process those futile wake-ups
take the machine's CPU, where one node per process (a deployment) has none."""


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker simulates."""

    system: str
    """``rdzv`` or ``torch``."""
    url: str
    """Store URL for rdzv; ``HOST:PORT`` of the TCPStore for torch."""
    run_id: str
    nodes: tuple[int, ...]
    """Global indices of the nodes this worker holds."""
    world: int
    heartbeat_interval: float
    heartbeat_misses: int
    join_timeout: float
    doomed: tuple[int, ...] = ()
    """Nodes that will be cut off or killed: they take no part in phases 2 and 3."""
    connections: str = "per-node"
    """``per-node``: a store client per node; ``shared``: one per worker process."""
    in_process: bool = False
    """Runs as a thread of the harness (memory store): leave the process's settings alone."""


@dataclass
class _Node:
    index: int
    join: Callable[[], object]
    watch: Callable[[], str | None]
    rejoin: Callable[[], object]
    store: CountingStore | None
    doomed: bool
    stop: Callable[[], object] = lambda: None
    recovered: Callable[[], float | None] = lambda: None
    """When the node last re-asserted its round on a store that lost its state."""
    times: dict[int, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    change: str | None = None
    tally: Tally = field(default_factory=Tally)
    stamps: dict[str, float] = field(default_factory=dict)


class _Phases:
    """Release gates and completion counts of the three phases."""

    def __init__(self, nodes: int, doomed: int) -> None:
        self.go = {1: threading.Event(), 3: threading.Event()}
        self.expected = {1: nodes, 2: nodes - doomed, 3: nodes - doomed}
        self._done = {1: 0, 2: 0, 3: 0}
        self._cond = threading.Condition()

    def finish(self, phase: int) -> None:
        with self._cond:
            self._done[phase] += 1
            self._cond.notify_all()

    def wait_all(self, phase: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._done[phase] >= self.expected[phase], timeout)


def _step(node: _Node, phase: int, action: Callable[[], object]) -> bool:
    try:
        result = action()
    except Exception as exc:  # recorded and reported: torch raises its own exception tree
        node.errors[phase] = f"{type(exc).__name__}: {exc}"
        return False
    node.times[phase] = time.monotonic()
    if phase == 2:
        node.change = result if isinstance(result, str) or result is None else str(result)
    return True


def _node_main(node: _Node, phases: _Phases, system: str) -> None:
    phases.go[1].wait()
    ok = _step(node, 1, node.join)
    if node.store is not None:
        node.tally = node.store.tally()
        node.stamps = dict(node.store.stamps)
    phases.finish(1)
    if not ok or system != "rdzv":
        return
    if node.doomed:
        _step(node, 2, node.watch)  # returns (or fails) once it is cut off; not counted
        return
    _step(node, 2, node.watch)
    phases.finish(2)
    phases.go[3].wait()
    _step(node, 3, node.rejoin)
    phases.finish(3)


def _rdzv_node(spec: WorkerSpec, shared: Store | None, index: int) -> _Node:
    own = open_store(spec.url) if shared is None else None  # tcp connects on its first call
    client = own if own is not None else shared
    assert client is not None
    store = CountingStore(client)
    rdzv = Rendezvous(
        store,
        spec.run_id,
        spec.world,
        spec.world,
        node_id=f"node{index:05d}",
        addr=f"node{index}:29500",
        join_timeout=spec.join_timeout,
        heartbeat_interval=spec.heartbeat_interval,
        heartbeat_misses=spec.heartbeat_misses,
    )
    ttl = spec.heartbeat_interval * spec.heartbeat_misses

    def watch() -> str | None:
        return rdzv.wait_for_change(ttl + spec.join_timeout)

    def rejoin() -> object:
        # The survivors form the next round by themselves, as `--nnodes N-1` would.
        survivors = max(spec.world - 1, 1)
        rdzv.settings = replace(rdzv.settings, min_nodes=survivors, max_nodes=survivors)
        return rdzv.next_rendezvous()

    def stop() -> None:
        rdzv.shutdown()
        if own is not None:
            own.close()

    return _Node(
        index, rdzv.next_rendezvous, watch, rejoin, store, index in spec.doomed, stop,
        lambda: rdzv.last_recovery,
    )  # fmt: skip


def _make_nodes(spec: WorkerSpec) -> tuple[list[_Node], Callable[[], None]]:
    if spec.system == "torch":
        from rdzv.bench.torch_runner import torch_nodes

        joins, close = torch_nodes(spec)
        return [
            _Node(i, join, _none, _none, None, False) for i, join in zip(spec.nodes, joins, strict=True)
        ], close
    if spec.connections == "per-node":
        return [_rdzv_node(spec, None, i) for i in spec.nodes], _none
    shared = open_store(spec.url)
    shared.get("bench/connect")  # the one shared client connects and authenticates before the release
    return [_rdzv_node(spec, shared, i) for i in spec.nodes], shared.close


def _none() -> None:
    return None


def _report(nodes: list[_Node], phase: int, cpu_at_ready: float = 0.0) -> dict[str, Any]:
    counted = [n for n in nodes if phase == 1 or not n.doomed]
    report: dict[str, Any] = {
        "times": [n.times.get(phase) for n in counted],
        "errors": sorted({e for n in counted if (e := n.errors.get(phase))}),
    }
    if phase == 1:
        report["cpu_s"] = [time.process_time() - cpu_at_ready]
        report["ops"] = [n.tally.total_ops for n in counted]
        report["bytes"] = [n.tally.bytes for n in counted]
        report["by_op"] = dict(sum((n.tally for n in counted), Tally()).ops)
        report["timeline"] = {  # latest per kind: arrivals, completion (the completer's CAS), wake-ups
            op: [max((n.stamps[op] for n in counted if op in n.stamps), default=None)]
            for op in ("grant", "add", "put_many", "cas", "wait")
        }
    if phase == 2:
        report["changes"] = sorted({str(n.change) for n in counted})
        report["reasserted"] = [n.recovered() for n in counted]
    return report


def _tally(nodes: list[_Node]) -> dict[str, Any]:
    total = sum((n.store.tally() for n in nodes if n.store is not None), Tally())
    return {"ops": total.total_ops, "bytes": total.bytes, "by_op": dict(total.ops), "at": time.monotonic()}


def peak_rss_mib() -> float | None:
    """Peak resident memory of this process in MiB (``VmHWM``: unlike ``ru_maxrss``, reset by exec)."""
    return peak_rss_of(os.getpid())


def run_worker(conn: Connection, spec: WorkerSpec) -> None:
    """Worker entry point (a process, or a thread for the in-process memory store)."""
    logging.getLogger("rdzv").setLevel(logging.ERROR)  # a cut-off node's heartbeat complains
    threading.stack_size(STACK_SIZE)
    if not spec.in_process:
        sys.setswitchinterval(SWITCH_INTERVAL)
    nodes, close = _make_nodes(spec)
    phases = _Phases(len(nodes), sum(n.doomed for n in nodes))
    threads = [
        threading.Thread(target=_node_main, args=(n, phases, spec.system), daemon=True, name=f"n{n.index}")
        for n in nodes
    ]
    for thread in threads:
        thread.start()
    cpu_at_ready = time.process_time()
    conn.send({"ready": len(nodes)})
    try:
        while _serve(conn, nodes, phases, cpu_at_ready):
            pass
    finally:
        close()


def _serve(conn: Connection, nodes: list[_Node], phases: _Phases, cpu_at_ready: float) -> bool:
    command, arg, timeout = conn.recv()
    if command == "go":
        phases.go[arg].set()
        phases.wait_all(arg, timeout)
        conn.send(_report(nodes, arg, cpu_at_ready))
    elif command == "await":
        phases.wait_all(arg, timeout)
        conn.send(_report(nodes, arg))
    elif command == "tally":
        conn.send(_tally(nodes))
    elif command == "cut":
        for node in nodes:
            if node.index == arg and node.store is not None:
                node.store.cut()
        conn.send({"cut": arg})
    elif command == "exit":
        for node in nodes:
            node.stop()  # end heartbeat threads (they would outlive an in-process worker)
        conn.send({"peak_rss_mib": peak_rss_mib()})
        return False
    return True
