"""A process that uses a ``file://`` store, driven line by line by ``test_file_store_processes``.

Usage: ``python file_store_worker.py ROLE URL [ARGS]``. Each role prints JSON
lines to stdout; ``ready`` lines are answered by a ``go`` line on stdin so the
test can start every worker's contended part at once.
"""

from __future__ import annotations

import json
import os
import sys
import time

from rdzv.registry import open_store
from rdzv.store.base import Store


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _ready() -> None:
    _say(ready=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected 'go'")


def add(store: Store, times: str) -> None:
    _ready()
    for _ in range(int(times)):
        store.add("counter", 1)
    _say(done=True)


def cas(store: Store) -> None:
    _ready()
    _say(won=store.compare_and_set("race", str(os.getpid()).encode(), 0).succeeded)


def hold(store: Store, ttl: str) -> None:
    """Hold a lease with a key on it, refreshing four times a ttl until killed."""
    lease = store.grant(float(ttl))
    revision = store.put("held/key", b"alive", lease=lease)
    _say(lease=lease, revision=revision)
    while store.refresh(lease):
        time.sleep(float(ttl) / 4)  # the heartbeat period, not synchronisation
    _say(lost=True)


def wait(store: Store, prefix: str, since: str) -> None:
    _say(waiting=True)
    _say(revision=store.wait(prefix, int(since), 20))


def rendezvous(url: str, run_id: str, nodes: str) -> None:
    """Join a run of exactly ``nodes`` nodes; print this node's place; leave on ``go``."""
    from rdzv import Rendezvous

    with Rendezvous(url, run_id, int(nodes), int(nodes), addr="127.0.0.1", join_timeout=60) as node:
        info = node.next_rendezvous()
        _say(rank=info.rank, world_size=info.world_size, round=info.round)
        _ready()


def main() -> None:
    role, url, *args = sys.argv[1:]
    if role == "rendezvous":
        rendezvous(url, *args)
        return
    with open_store(url) as store:
        {"add": add, "cas": cas, "hold": hold, "wait": wait}[role](store, *args)


if __name__ == "__main__":
    main()
