"""A rendezvous node for multi-process tests: join rounds until the run closes.

Usage: rdzv_node.py URL RUN_ID NODE_ID MIN MAX HEARTBEAT_INTERVAL LAST_CALL

Prints one JSON line per event, stamped with ``time.monotonic()`` (one clock for
every process on a Linux machine): ``round`` (rank, world size), ``change``,
``closed``.
"""

from __future__ import annotations

import json
import sys
import time

from rdzv.errors import RendezvousClosedError
from rdzv.rendezvous.node import Change, Rendezvous


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def main() -> None:
    url, run_id, node_id, lo, hi, interval, last_call = sys.argv[1:8]
    node = Rendezvous(
        url, run_id, int(lo), int(hi), node_id=node_id, addr="127.0.0.1",
        heartbeat_interval=float(interval), heartbeat_misses=3,
        last_call_timeout=float(last_call), join_timeout=60,
    )  # fmt: skip
    try:
        while True:
            try:
                info = node.next_rendezvous()
            except RendezvousClosedError:
                say("closed")
                return
            say("round", round=info.round, rank=info.rank, world=info.world_size)
            change = None
            while change is None:
                change = node.wait_for_change(30)
            say("change", change=change)
            if change == Change.CLOSED:
                say("closed")
                return
    finally:
        node.shutdown()


if __name__ == "__main__":
    main()
