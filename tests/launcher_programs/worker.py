"""A worker for the `rdzv run` tests: ``worker.py MODE DIR``; what it saw goes to files in DIR.

Modes:
  env           write its environment to DIR/env_round<R>_rank<N>.json and exit 0
  fail-once     rank 1 exits 3 on the job's first attempt; everyone else exits 0
  fail-always   rank 1 exits 3 (after a line on stderr) on every attempt
  fail-in-turn  local rank 0 of the node whose GROUP_RANK equals the restart count exits 3;
                the others wait for DIR/release
  run           wait for DIR/release, then exit 0; on SIGTERM, write DIR/sigterm_<node>_<rank>, exit 143
  stubborn      ignore SIGTERM and wait for DIR/release
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

VARIABLES = [
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID", "RDZV_ROUND", "RDZV_RUN_ID", "RDZV_NODE_ID",
    "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_BIND_ADDRESS", "TORCHELASTIC_ERROR_FILE",
]  # fmt: skip


def on_sigterm(out: Path) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        marker = out / f"sigterm_{os.environ['RDZV_NODE_ID']}_{os.environ['RANK']}"
        marker.write_text("")
        sys.exit(143)

    signal.signal(signal.SIGTERM, handler)


def wait_for_release(out: Path) -> None:
    deadline = time.monotonic() + 90
    while not (out / "release").exists():
        if time.monotonic() > deadline:
            sys.exit("never released")
        time.sleep(0.05)


def main(mode: str, out: Path) -> int:
    env = os.environ
    rank, restarts = int(env["RANK"]), int(env["TORCHELASTIC_RESTART_COUNT"])
    on_sigterm(out)
    if mode == "env":
        values = {name: env.get(name) for name in VARIABLES}
        (out / f"env_round{env['RDZV_ROUND']}_rank{rank}.json").write_text(json.dumps(values))
    elif mode == "fail-once" and rank == 1 and restarts == 0:
        print("rank 1 fails on the first attempt", file=sys.stderr)
        return 3
    elif mode == "fail-always" and rank == 1:
        print("rank 1 always fails", file=sys.stderr)
        return 3
    elif mode == "fail-in-turn":
        if int(env["GROUP_RANK"]) == restarts and env["LOCAL_RANK"] == "0":
            print(f"node {env['RDZV_NODE_ID']} fails at restart {restarts}", file=sys.stderr)
            return 3
        wait_for_release(out)
    elif mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"rank {rank} ignores SIGTERM", flush=True)
        wait_for_release(out)
    elif mode == "run":
        print(f"rank {rank} running", flush=True)
        wait_for_release(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
