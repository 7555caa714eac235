"""The recovery scenario of ``rdzv bench``: the node hosting the store is SIGKILLed.

The store URL lists two candidate hosts (``tcp://127.0.0.1:P1,127.0.0.1:P2``,
``is_host=auto``). One worker process holds a single node and opens the store
first, so it hosts the first candidate; the other workers hold the other N-1
nodes (threads sharing one client per worker). All N form round 1; then the
hosting process is SIGKILLed. Its clients move to the second candidate, where
one worker starts serving, and every survivor re-asserts round 1 there. The
hosting node was a member: after the recovery window (one lease ttl) the
survivors see it lost and form round 2 with the N-1 of them. Times, from the
SIGKILL (``time.monotonic()``, one clock on this machine):

* ``rebuilt_s``: the last survivor re-asserted round 1 on the new host;
* ``noticed_s``: the last survivor's ``wait_for_change()`` returned;
* ``recovered_s``: the last survivor is back in a round (round 2, N-1 members).
  The survivors are released into round 2 when the last one noticed, so this
  is ``noticed_s`` plus one rendezvous of N-1 nodes.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
import uuid
from typing import Any

from rdzv.bench.harness import BenchConfig, _ask, _merge, _split, _Worker
from rdzv.bench.worker import WorkerSpec
from rdzv.testing.net import free_port

__all__ = ["run_recovery"]


def _specs(n: int, cfg: BenchConfig) -> list[WorkerSpec]:
    token = secrets.token_hex(8)
    url = f"tcp://127.0.0.1:{free_port()},127.0.0.1:{free_port()}?token={token}"
    run_id = f"recovery-{uuid.uuid4().hex[:8]}"

    def spec(nodes: tuple[int, ...]) -> WorkerSpec:
        return WorkerSpec("rdzv", url, run_id, nodes, n, cfg.heartbeat_interval, cfg.heartbeat_misses,
                          cfg.join_timeout, doomed=(0,))  # fmt: skip

    return [spec((0,)), *(spec(group) for group in _split(list(range(1, n)), cfg.workers))]


def _latest(times: list[Any], start: float) -> float | None:
    if not times or any(t is None for t in times):
        return None
    return float(max(times)) - start


def run_recovery(n: int, cfg: BenchConfig) -> dict[str, Any]:
    """Kill the hosting node of an ``n``-node round; time until every survivor is back in a round."""
    specs = _specs(n, cfg)
    host = _Worker(specs[0], in_process=False)
    workers = [host]
    result: dict[str, Any] = {"n": n, "lease_ttl_s": cfg.lease_ttl, "target_s": cfg.lease_ttl + 2}
    try:
        host.recv(120)  # it opened the store first: it hosts the first candidate
        workers += [_Worker(spec, in_process=False) for spec in specs[1:]]
        for worker in workers[1:]:
            worker.recv(120)
        joined = _merge(_ask(workers, "go", 1, cfg.join_timeout + 10))
        result["errors"] = joined["errors"]
        if joined["errors"]:
            return result
        survivors = workers[1:]
        killed = time.monotonic()
        assert host.pid is not None
        os.kill(host.pid, signal.SIGKILL)
        noticed = _merge(_ask(survivors, "await", 2, cfg.lease_ttl + cfg.join_timeout + 30))
        result["rebuilt_s"] = _latest(noticed.get("reasserted", []), killed)
        result["noticed_s"] = _latest(noticed["times"], killed)
        result["changes"] = noticed.get("changes", [])
        rejoined = _merge(_ask(survivors, "go", 3, cfg.join_timeout + 10))
        result["recovered_s"] = _latest(rejoined["times"], killed)
        result["errors"] += noticed["errors"] + rejoined["errors"]
    finally:
        for worker in workers[1:]:
            worker.finish()
        if host.process.is_alive():  # a failure before the kill
            host.process.kill()
        host.process.join(10)
        host.conn.close()
    return result
