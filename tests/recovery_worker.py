"""A node for the recovery tests: joins, watches its round, rejoins, and reports each event.

Usage: ``python recovery_worker.py URL RUN_ID MIN MAX HEARTBEAT NODE_ID JOIN_TIMEOUT GUARD``.
Every event is one JSON line on stdout with ``t``, a ``time.monotonic()`` reading
(one clock for every process of this machine)::

    {"event": "placed", "round": 1, "rank": 0, "world": 4, "hosting": null}
    {"event": "reasserted", "round": 1, "hosting": "127.0.0.1:41234"}
    {"event": "change", "change": "member-lost"}
    {"event": "timeout", "error": "..."}
"""

from __future__ import annotations

import json
import sys
import time

from rdzv import Rendezvous, RendezvousTimeoutError, StoreError


def _say(**fields: object) -> None:
    print(json.dumps({**fields, "t": time.monotonic()}), flush=True)


def _hosting(node: Rendezvous) -> str | None:
    hosted = getattr(node.store, "hosted", None)
    return None if hosted is None else "{}:{}".format(*hosted.address)


def _watch(node: Rendezvous, round_: int) -> None:
    """Report re-assertions and return at the first change of the round."""
    seen = node.recoveries
    while True:
        try:
            change = node.wait_for_change(0.25)
        except StoreError as exc:
            _say(event="store-error", error=str(exc))
            change = None
        if node.recoveries != seen:
            seen = node.recoveries
            _say(event="reasserted", round=round_, hosting=_hosting(node))
        if change is not None:
            _say(event="change", change=change)
            return


def main() -> None:
    url, run_id, low, high, heartbeat, node_id, join_timeout, guard = sys.argv[1:]
    with Rendezvous(
        url, run_id, int(low), int(high), node_id=node_id, addr="127.0.0.1",
        heartbeat_interval=float(heartbeat), heartbeat_misses=4, last_call_timeout=0.5,
        join_timeout=float(join_timeout), split_brain_guard=guard == "1",
    ) as node:  # fmt: skip
        while True:
            try:
                info = node.next_rendezvous()
            except RendezvousTimeoutError as exc:
                _say(event="timeout", error=str(exc))
                return
            where = _hosting(node)
            _say(event="placed", round=info.round, rank=info.rank, world=info.world_size, hosting=where)
            _watch(node, info.round)


if __name__ == "__main__":
    main()
