"""A rendezvous node for multi-process tests: join rounds until the run closes.

Usage: rdzv_node.py URL RUN_ID NODE_ID MIN MAX HEARTBEAT_INTERVAL LAST_CALL [JOIN_TIMEOUT]

Prints one JSON line per event, stamped with ``time.monotonic()`` (one clock for
every process on a Linux machine): ``round`` (rank, world size), ``change``,
``closed``; ``store-error`` when watching the round failed (the node then tries
the next round), and ``gave-up`` (error type, seconds the join took) when
``next_rendezvous`` raised, after which the process exits with status 3.
"""

from __future__ import annotations

import json
import sys
import time

from rdzv.errors import RdzvError, RendezvousClosedError, StoreError
from rdzv.rendezvous.node import Change, Rendezvous


def say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def main() -> None:
    url, run_id, node_id, lo, hi, interval, last_call = sys.argv[1:8]
    join_timeout = float(sys.argv[8]) if len(sys.argv) > 8 else 60.0
    node = Rendezvous(
        url, run_id, int(lo), int(hi), node_id=node_id, addr="127.0.0.1",
        heartbeat_interval=float(interval), heartbeat_misses=3,
        last_call_timeout=float(last_call), join_timeout=join_timeout,
    )  # fmt: skip
    try:
        while True:
            started = time.monotonic()
            try:
                info = node.next_rendezvous()
            except RendezvousClosedError:
                say("closed")
                return
            except RdzvError as exc:
                say("gave-up", error=type(exc).__name__, message=str(exc), took=time.monotonic() - started)
                sys.exit(3)
            say("round", round=info.round, rank=info.rank, world=info.world_size)
            change = None
            try:
                while change is None:
                    change = node.wait_for_change(30)
            except StoreError as exc:
                say("store-error", error=type(exc).__name__, message=str(exc))
                continue
            say("change", change=change)
            if change == Change.CLOSED:
                say("closed")
                return
    finally:
        node.shutdown()


if __name__ == "__main__":
    main()
