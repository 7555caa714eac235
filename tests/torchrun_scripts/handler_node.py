"""One node driven as torch's agent drives its handler, with commands read from stdin.

``handler_node.py ENDPOINT RUN_ID NNODES CONF_JSON``: builds the handler through
torch's registry from ``RendezvousParameters(**CONF_JSON)`` (values as torch
would pass them: bools, ints, strings), joins, prints ``JOINED {...}``, then
runs one command per stdin line and prints its result as a JSON line:

* ``waiting``: ``num_nodes_waiting()`` -> ``WAITING {"seconds", "result" | "error"}``
* ``shutdown``: ``shutdown()`` -> ``SHUTDOWN {"seconds", "closed"}``, then exits
  (the interpreter waits for a host's lingering thread).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time


def report(kind: str, **fields: object) -> None:
    os.write(1, f"{kind} {json.dumps(fields, sort_keys=True)}\n".encode())


def timed(call: object) -> dict[str, object]:
    start = time.monotonic()
    try:
        result: dict[str, object] = {"result": call()}  # type: ignore[operator]
    except Exception as exc:  # reported, for the test to check its type
        result = {"error": type(exc).__name__, "message": str(exc)}
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    from torch.distributed.elastic.rendezvous import api, rendezvous_handler_registry

    endpoint, run_id, nnodes, conf = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    low, _, high = nnodes.partition(":")
    params = api.RendezvousParameters(
        "rdzv", endpoint, run_id, int(low), int(high or low), local_addr="127.0.0.1", **conf
    )
    handler = rendezvous_handler_registry.create_handler(params)
    info = handler.next_rendezvous()
    report("JOINED", rank=info.rank, world=info.world_size)
    for line in sys.stdin:
        command = line.strip()
        if command == "waiting":
            report("WAITING", **timed(handler.num_nodes_waiting))
        elif command == "shutdown":
            report("SHUTDOWN", **timed(handler.shutdown))
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
