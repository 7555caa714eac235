"""One benchmark run: N simulated nodes in W worker processes against one fresh store.

Nodes are threads: each worker process holds N/W of them. Each node has its
own store client (``connections="per-node"``: it connects and authenticates
after the release, as a node that starts does), or the nodes of a worker share
one client connected beforehand (``"shared"``). The harness
drives the phases over pipes and takes every time from ``time.monotonic()``,
which is one clock for all processes of this machine:

1. release: all nodes call ``next_rendezvous()`` at once (``min = max = N``);
   latency is release to the last return;
2. steady state: operations and payload bytes per node per second while the
   round runs (heartbeats only);
3. failure: one node is SIGKILLed (its own process; with the in-process memory
   store it is cut off from the store instead); detection is the kill to the
   last survivor's ``wait_for_change()`` returning;
4. re-rendezvous: the N-1 survivors are released into the next round
   (``min = max = N - 1``); time from release to the last return.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rdzv.bench.stores import StoreHost, start_store, start_torch_store
from rdzv.bench.worker import WorkerSpec, peak_rss_mib, run_worker
from rdzv.errors import RdzvError
from rdzv.rendezvous.recovery import REASSERT_MARGIN

__all__ = ["CONNECTIONS", "BenchConfig", "run_rdzv", "run_torch"]

CONNECTIONS = ("per-node", "shared")
HOLD_SLACK = 0.05
"""Seconds past a young server's first-round hold before the release (clock reads differ)."""

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class BenchConfig:
    store: str = "tcp"
    workers: int = 4
    heartbeat_interval: float = 2.0
    heartbeat_misses: int = 3
    join_timeout: float = 60.0
    torch_timeout: float = 30.0
    steady_seconds: float = 4.0
    connections: str = "per-node"
    """``per-node`` (a store client per node) or ``shared`` (one per worker process)."""

    @property
    def lease_ttl(self) -> float:
        return self.heartbeat_interval * self.heartbeat_misses


class _Worker:
    """A worker process (or thread, for the memory store) and the pipe to it."""

    def __init__(self, spec: WorkerSpec, in_process: bool) -> None:
        self.spec = spec
        self.conn, child = _SPAWN.Pipe()
        self.process: Any
        if in_process:
            self.process = threading.Thread(target=run_worker, args=(child, spec), daemon=True)
        else:
            self.process = _SPAWN.Process(target=run_worker, args=(child, spec), daemon=True)
        self.process.start()

    @property
    def pid(self) -> int | None:
        return getattr(self.process, "pid", None)

    def send(self, command: str, arg: Any = None, timeout: float = 0.0) -> None:
        self.conn.send((command, arg, timeout))

    def recv(self, timeout: float) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise RdzvError(f"benchmark worker (nodes {self.spec.nodes[0]}..) did not answer in {timeout} s")
        reply: dict[str, Any] = self.conn.recv()
        return reply

    def finish(self) -> float | None:
        """Ask for peak memory and end the worker."""
        peak = None
        try:
            self.send("exit")
            peak = self.recv(30).get("peak_rss_mib")
        except (RdzvError, OSError, EOFError):
            pass
        self.process.join(10)
        if isinstance(self.process, multiprocessing.process.BaseProcess) and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()
        return None if isinstance(self.process, threading.Thread) else peak


def _ask(workers: list[_Worker], command: str, arg: Any, timeout: float) -> list[dict[str, Any]]:
    for worker in workers:
        worker.send(command, arg, timeout)
    return [worker.recv(timeout + 30) for worker in workers]


def _split(indices: list[int], parts: int) -> list[tuple[int, ...]]:
    parts = max(1, min(parts, len(indices)))
    return [tuple(indices[i::parts]) for i in range(parts)]


def _merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"times": [], "errors": []}
    for reply in replies:
        for key, value in reply.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                into = merged.setdefault(key, {})
                for name, count in value.items():
                    into[name] = into.get(name, [] if isinstance(count, list) else 0) + count
    return merged


def _elapsed(report: dict[str, Any], start: float) -> float | None:
    times = report["times"]
    if report["errors"] or not times or any(t is None for t in times):
        return None
    return float(max(times)) - start


def _specs(system: str, host: StoreHost, n: int, cfg: BenchConfig, victim: bool) -> list[WorkerSpec]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    timeout = cfg.torch_timeout if system == "torch" else cfg.join_timeout
    ordinary = list(range(n - 1 if victim and not host.in_process else n))
    groups = [tuple(ordinary)] if host.in_process else _split(ordinary, cfg.workers)
    doomed = (n - 1,) if victim else ()
    if victim and not host.in_process:
        groups.append((n - 1,))
    return [
        WorkerSpec(system, host.url, run_id, group, n, cfg.heartbeat_interval, cfg.heartbeat_misses,
                   timeout, doomed, cfg.connections, host.in_process)
        for group in groups
    ]  # fmt: skip


def _start(specs: list[WorkerSpec], in_process: bool) -> list[_Worker]:
    workers = [_Worker(spec, in_process) for spec in specs]
    for worker in workers:
        worker.recv(120)  # "ready": nodes built, threads parked at the release gate
    return workers


def run_rdzv(n: int, cfg: BenchConfig) -> dict[str, Any]:
    """Every figure of one rdzv run with ``n`` nodes."""
    host = start_store(cfg.store, n)
    started = time.monotonic()  # the server counts its age from its own start, before this
    workers: list[_Worker] = []
    result: dict[str, Any] = {"n": n}
    try:
        workers = _start(_specs("rdzv", host, n, cfg, victim=n >= 2), host.in_process)
        # A tcp server younger than one heartbeat interval (+ a margin) holds back a run's first
        # round, for members of a round it may have lost to re-assert it (rendezvous/recovery.py).
        # A job pays that once at its start; the benchmark measures the rendezvous itself.
        young = started + cfg.heartbeat_interval + REASSERT_MARGIN + HOLD_SLACK - time.monotonic()
        if cfg.store == "tcp" and young > 0:
            time.sleep(young)
        _phases(workers, host, n, cfg, result)
    finally:
        result["server_peak_mib"] = host.peak_rss_mib()
        peaks = [worker.finish() for worker in workers]
        known = [p for p in peaks if p is not None]
        result["worker_peak_mib"] = max(known) if known else peak_rss_mib()
        host.stop()
    return result


def _phases(workers: list[_Worker], host: StoreHost, n: int, cfg: BenchConfig, out: dict[str, Any]) -> None:
    server_cpu = host.cpu_seconds()
    start = time.monotonic()
    joined = _merge(_ask(workers, "go", 1, cfg.join_timeout + 10))
    after = host.cpu_seconds()
    out["server_cpu_s"] = None if after is None or server_cpu is None else after - server_cpu
    out["server_cpu_ms_per_node"] = None if out["server_cpu_s"] is None else out["server_cpu_s"] * 1000 / n
    out["worker_cpu_s"] = sum(joined["cpu_s"])  # all node threads of all workers
    out["latency_s"] = _elapsed(joined, start)
    out["errors"] = joined["errors"]
    out["ops_per_node"] = statistics.fmean(joined["ops"])
    out["ops_per_node_max"] = max(joined["ops"])
    out["bytes_per_node"] = statistics.fmean(joined["bytes"])
    out["bytes_per_node_max"] = max(joined["bytes"])
    out["timeline_ms"] = {
        op: round((max(t for t in stamps if t) - start) * 1000, 1) if any(stamps) else None
        for op, stamps in joined.get("timeline", {}).items()
    }
    out["ops_by_kind_per_node"] = {k: round(v / n, 3) for k, v in sorted(joined["by_op"].items())}
    if out["latency_s"] is None or n < 2:
        return
    out.update(_steady(workers, n, cfg))
    survivors = workers if host.in_process else workers[:-1]
    killed = time.monotonic()
    if host.in_process:
        _ask(workers, "cut", n - 1, 5)
    else:
        assert workers[-1].pid is not None
        os.kill(workers[-1].pid, signal.SIGKILL)
    noticed = _merge(_ask(survivors, "await", 2, cfg.lease_ttl + 30))
    out["detect_s"] = _elapsed(noticed, killed)
    out["detect_bound_s"] = cfg.lease_ttl + 1
    out["detect_changes"] = noticed.get("changes", [])
    out["errors"] += noticed["errors"]
    start = time.monotonic()
    rejoined = _merge(_ask(survivors, "go", 3, cfg.join_timeout + 10))
    out["rejoin_s"] = _elapsed(rejoined, start)
    out["errors"] += rejoined["errors"]


def _steady(workers: list[_Worker], n: int, cfg: BenchConfig) -> dict[str, Any]:
    time.sleep(min(cfg.heartbeat_interval, 0.5))  # let every node settle into wait_for_change
    before = _ask(workers, "tally", None, 0)
    begun = time.monotonic()
    time.sleep(cfg.steady_seconds)
    after = _ask(workers, "tally", None, 0)
    seconds = time.monotonic() - begun
    ops = sum(r["ops"] for r in after) - sum(r["ops"] for r in before)
    size = sum(r["bytes"] for r in after) - sum(r["bytes"] for r in before)
    return {
        "heartbeat_ops_per_node_s": ops / n / seconds,
        "heartbeat_bytes_per_node_s": size / n / seconds,
        "heartbeat_bytes_per_node_interval": size / n / seconds * cfg.heartbeat_interval,
    }


def run_torch(n: int, cfg: BenchConfig) -> dict[str, Any]:
    """torch c10d's latency for ``n`` nodes (``None`` with ``timed_out`` when it failed)."""
    host = start_torch_store()
    workers: list[_Worker] = []
    result: dict[str, Any] = {"n": n}
    try:
        workers = _start(_specs("torch", host, n, cfg, victim=False), in_process=False)
        start = time.monotonic()
        joined = _merge(_ask(workers, "go", 1, cfg.torch_timeout + 15))
        result["latency_s"] = _elapsed(joined, start)
        result["timed_out"] = result["latency_s"] is None
        result["errors"] = joined["errors"][:3]
    finally:
        result["server_peak_mib"] = host.peak_rss_mib()
        peaks = [p for p in (worker.finish() for worker in workers) if p is not None]
        result["worker_peak_mib"] = max(peaks) if peaks else None
        host.stop()
    return result
