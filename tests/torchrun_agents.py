"""torchrun agents for the end-to-end tests: real ``torchrun`` processes, their output line by line.

Each ``torchrun`` runs in its own session; its workers die with it
(``PR_SET_PDEATHSIG`` in the worker scripts), so killing the session kills the
node. Tests wait for lines the workers print, never for time to pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).parent / "torchrun_scripts"
TRAIN = SCRIPTS / "train.py"
HANDLER_NODE = SCRIPTS / "handler_node.py"
RUN_SECONDS = 60.0
# Short beats and last call keep each run to seconds; the monitor notices failures at once.
FAST_CONF = "last_call_timeout=1,heartbeat_interval=0.5,heartbeat_misses=4"


class Agent:
    """One ``torchrun`` process (a node), its output collected line by line."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = RUN_SECONDS, *, nth: int = 1) -> str:
        """Block until ``nth`` lines match ``pattern``; return the last; fail with the output if not."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= nth:
                    return found[nth - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"no line matching {pattern!r}; output:\n{self.output}")
                self._changed.wait(remaining)

    def finish(self, timeout: float = RUN_SECONDS) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"torchrun did not finish within {timeout} s; output:\n{self.output}")
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL the node: the agent's session (its workers follow by PDEATHSIG)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(RUN_SECONDS)  # ends when the last worker holding the pipe is gone
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def send(self, command: str) -> None:
        """A line on the process's stdin (for ``handler_node.py``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(line.split(" ", 1)[1]) for line in self.lines if line.startswith(kind + " ")]


@contextlib.contextmanager
def launcher(tmp_path: Path, **extra_env: str) -> Iterator[Any]:
    """``launch(*torchrun_args) -> Agent``, ``launch.python(script, *args)``; all killed on exit."""
    agents: list[Agent] = []
    # LOGLEVEL=INFO: the agents' logs show each rendezvous in a failing test's output.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LOGLEVEL": "INFO"}
    env["RDZV_TEST_DIR"] = str(tmp_path)
    env.update(extra_env)

    class Launch:
        def __call__(self, *args: str) -> Agent:
            return self.run(str(BIN / "torchrun"), *args)

        def python(self, script: Path, *args: str) -> Agent:
            return self.run(sys.executable, str(script), *args)

        def run(self, *argv: str) -> Agent:
            agent = Agent(list(argv), env)
            agents.append(agent)
            return agent

    try:
        yield Launch()
    finally:
        for agent in agents:
            agent.kill()


def torchrun_args(
    endpoint: int | str, run_id: str, nnodes: str, *extra: str, conf: str = FAST_CONF, nproc: int = 2
) -> list[str]:
    """Arguments for one agent; an ``int`` endpoint is the TCP store at ``127.0.0.1:PORT``."""
    return [
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=rdzv",
        f"--rdzv-endpoint={f'127.0.0.1:{endpoint}' if isinstance(endpoint, int) else endpoint}",
        f"--rdzv-id={run_id}",
        f"--rdzv-conf={conf}",
        "--local-addr=127.0.0.1",
        "--monitor-interval=0.1",
        *extra,
    ]


def results(*agents: Agent) -> list[dict[str, Any]]:
    return sorted((r for a in agents for r in a.records("RESULT")), key=lambda r: r["rank"])


def assert_world_of_four(found: list[dict[str, Any]], output: str) -> None:
    assert [r["rank"] for r in found] == [0, 1, 2, 3], output
    assert {(r["world"], r["env_world"], r["sum"]) for r in found} == {(4, "4", 10.0)}, output
    assert len({r["master"] for r in found}) == 1, output
