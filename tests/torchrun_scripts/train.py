"""A torchrun worker for the end-to-end tests: gloo, all_reduce, one result line per worker.

``train.py MODE``; MODE is
* ``sum``: one all_reduce of ``rank + 1``, then exit;
* ``fail-once``: like ``sum``, but the first worker with local rank 1 to start (of
  any node) exits with status 3 before joining the group (a marker file in
  ``$RDZV_TEST_DIR`` makes it once per job);
* ``elastic:N``: all_reduce steps until the world is exactly N workers, then a few more;
* ``hold``: all_reduce steps until the file ``$RDZV_TEST_DIR/release`` exists (decided
  together: every worker sees the same answer), then exit;
* ``fail-always``: the worker with local rank 1 exits with status 3 before joining;
* ``drift:S``: like ``sum``, but the workers of every node but group rank 0 take S
  seconds longer to finish (the agents meet in torch's exit barrier).

Every worker prints ``STEP {...}`` per step and ``RESULT {...}`` at the end (JSON).
Workers die with their agent (PR_SET_PDEATHSIG), as they would with their node.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_agent() -> None:
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the agent died before prctl took effect
        os._exit(1)


def first_to_fail() -> bool:
    try:
        os.close(os.open(os.path.join(os.environ["RDZV_TEST_DIR"], "failed"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def report(kind: str, **fields: object) -> None:
    # One write(2) of under PIPE_BUF bytes: lines of workers sharing the agent's pipe never interleave.
    os.write(1, f"{kind} {json.dumps(fields, sort_keys=True)}\n".encode())


def main() -> int:
    die_with_agent()
    mode = sys.argv[1]
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    failing = mode == "fail-always" or (mode == "fail-once" and first_to_fail_here())
    if failing and os.environ["LOCAL_RANK"] == "1":
        report("FAILING", rank=rank, attempt=attempt)
        return 3
    dist.init_process_group("gloo")
    target = int(mode.split(":")[1]) if mode.startswith("elastic:") else world
    release = os.path.join(os.environ["RDZV_TEST_DIR"], "release")
    steps_at_target = 0
    step = 0
    while True:
        released = mode == "hold" and os.path.exists(release)
        value = torch.tensor([float(rank + 1), float(released)])
        dist.all_reduce(value)
        report("STEP", rank=rank, world=world, step=step)
        step += 1
        if mode == "hold":
            if value[1].item() > 0:
                break
        elif world == target:
            steps_at_target += 1
            if steps_at_target >= 3:
                break
            continue
        time.sleep(0.2)  # simulated work, so that the test can kill a node mid-training
    dist.destroy_process_group()
    if mode.startswith("drift:") and os.environ["GROUP_RANK"] != "0":
        time.sleep(float(mode.split(":")[1]))
    report(
        "RESULT",
        rank=rank,
        world=world,
        sum=value[0].item(),
        attempt=attempt,
        env_world=os.environ["WORLD_SIZE"],
        master=f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        agent_store=os.environ["TORCHELASTIC_USE_AGENT_STORE"],
        role=os.environ["ROLE_NAME"],
        role_rank=int(os.environ["ROLE_RANK"]),
        role_world=int(os.environ["ROLE_WORLD_SIZE"]),
        local_world=int(os.environ["LOCAL_WORLD_SIZE"]),
        group_rank=int(os.environ["GROUP_RANK"]),
    )
    return 0


def first_to_fail_here() -> bool:
    return os.environ["LOCAL_RANK"] == "1" and first_to_fail()


if __name__ == "__main__":
    sys.exit(main())
