"""Wall time of a 2-node x 2-worker torchrun job with ``--rdzv-backend=rdzv`` against ``c10d``.

Run: .venv/bin/python benchmarks/torchrun_vs_c10d.py [--runs 5]

Each run starts two ``torchrun --nnodes=2 --nproc-per-node=2`` agents on
loopback with the endpoint ``127.0.0.1:PORT`` (a fresh port and run id), whose
workers do ``init_process_group("gloo")`` and a few ``all_reduce`` steps
(``tests/torchrun_scripts/train.py sum``), and times launch to both agents'
exit. Backends alternate run by run so machine load hits both alike; both use
their default settings. Most of the time is torch starting up four workers;
the rendezvous is the difference. Report the machine with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rdzv.testing.net import free_port

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tests" / "torchrun_scripts" / "train.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def one_run(backend: str, tag: str) -> float:
    port = free_port()
    args = [
        str(TORCHRUN),
        "--nnodes=2",
        "--nproc-per-node=2",
        f"--rdzv-backend={backend}",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        f"--rdzv-id=bench-{tag}",
        "--local-addr=127.0.0.1",
        "--monitor-interval=0.1",
        str(TRAIN),
        "sum",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RDZV_TEST_DIR": "/nonexistent"}
    start = time.monotonic()
    agents = [
        subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    codes = [agent.wait(timeout=300) for agent in agents]
    elapsed = time.monotonic() - start
    if codes != [0, 0]:
        raise SystemExit(f"{backend} run {tag} failed with exit codes {codes}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {"rdzv": [], "c10d": []}
    for i in range(runs):
        for backend in times:
            times[backend].append(one_run(backend, f"{backend}-{i}-{os.getpid()}"))
            print(f"run {i + 1}/{runs} {backend}: {times[backend][-1]:.2f} s", flush=True)
    for backend, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{backend}: median {statistics.median(values):.2f} s over {runs} runs ({shown})")
    ratio = statistics.median(times["rdzv"]) / statistics.median(times["c10d"])
    print(f"rdzv / c10d median wall time: {ratio:.2f}")


if __name__ == "__main__":
    main()
