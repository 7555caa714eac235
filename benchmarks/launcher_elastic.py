"""How fast `rdzv run` re-forms: a third node joining, and a node dying.

Run: .venv/bin/python benchmarks/launcher_elastic.py [--runs 5] [--heartbeat-interval 0.2]
     [--heartbeat-misses 3] [--last-call-timeout 1]

Each run starts a fresh ``rdzv serve`` and two agents (``--nnodes 2:3
--nproc-per-node 2``) whose workers wait to be released. Once both run their
workers, a third agent (``--nproc-per-node 1``) starts: **scale-up** is the time
from its start until all three nodes have started their workers in the 5-worker
round. Then the third agent is SIGKILLed (its workers die with it): **scale-down**
is the time until both survivors have started their workers again in the
4-worker round. Times are ``time.monotonic()`` on one machine, read from the
agents' event lines as they are written. Report the machine with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rdzv.testing.agents import FAST_SETTINGS, AgentProcess
from rdzv.testing.servers import serve_process

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "launcher_programs" / "worker.py"
STARTED = r"round \d+: started"


def one_run(index: int, settings: list[str], patience: float) -> tuple[float, float]:
    with serve_process() as server, tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(WORKER), "run", out]
        run_id = f"elastic{index}"
        agents: list[AgentProcess] = []

        def start(node_id: str, nproc: str) -> AgentProcess:
            agent = AgentProcess(server.url, run_id, node_id, command, "--nnodes", "2:3",
                                 "--nproc-per-node", nproc, settings=settings)  # fmt: skip
            agents.append(agent)
            return agent

        try:
            pair = [start("n0", "2"), start("n1", "2")]
            for agent in pair:
                agent.expect(STARTED, patience)
            began = time.monotonic()
            third = start("n2", "1")
            started = []
            for agent in [*pair, third]:
                agent.expect(r"formed: .* of 5$", patience)
                started.append(agent.expect(STARTED, patience)[0])
            scale_up = max(started) - began
            third.proc.kill()
            killed = time.monotonic()
            scale_down = max(agent.expect(STARTED, patience)[0] for agent in pair) - killed
            (Path(out) / "release").write_text("")
            for agent in pair:
                agent.finish(60)
            return scale_up, scale_down
        finally:
            for agent in agents:
                agent.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--heartbeat-interval", default="0.2")
    parser.add_argument("--heartbeat-misses", default="3")
    parser.add_argument("--last-call-timeout", default="1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    settings = list(FAST_SETTINGS)
    for option in ("heartbeat-interval", "heartbeat-misses", "last-call-timeout"):
        settings[settings.index(f"--{option}") + 1] = getattr(args, option.replace("-", "_"))
    lease = float(args.heartbeat_interval) * int(args.heartbeat_misses)
    patience = 2 * (lease + float(args.last_call_timeout)) + 30
    ups, downs = [], []
    for index in range(args.runs):
        up, down = one_run(index, settings, patience)
        ups.append(up)
        downs.append(down)
        print(f"run {index}: scale-up {up:.2f} s, scale-down {down:.2f} s", flush=True)
    figures = {
        "scale-up (third node start -> 5 workers running)": ups,
        "scale-down (SIGKILL of a node -> survivors' workers running)": downs,
    }
    for name, values in figures.items():
        print(f"{name}: median {statistics.median(values):.2f} s, "
              f"min {min(values):.2f} s, max {max(values):.2f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "scale_up": ups, "scale_down": downs}))


if __name__ == "__main__":
    main()
