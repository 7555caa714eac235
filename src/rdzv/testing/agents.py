"""Real ``rdzv run`` agents for tests and benchmarks.

::

    agent = AgentProcess(server.url, "job", "n0", ["python", "train.py"], "--nnodes", "2")
    at, match = agent.expect(r"round (\\d+): started")   # when the line came, and what it said
    assert agent.finish(60) == 0

Each agent is a ``python -m rdzv run`` subprocess. A thread timestamps its
stderr (the agent's event lines) as they come, so a test waits for an event
instead of sleeping; another keeps its stdout (the workers' output).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

__all__ = ["FAST_SETTINGS", "AgentProcess"]

FAST_SETTINGS = (
    "--local-addr", "127.0.0.1", "--heartbeat-interval", "0.2", "--heartbeat-misses", "3",
    "--last-call-timeout", "1", "--monitor-interval", "0.1", "--term-timeout", "5", "--join-timeout", "60",
)  # fmt: skip
"""Loopback, a 0.6 s lease, a 1 s last call, workers checked every 0.1 s."""


class AgentProcess:
    """One ``rdzv run`` node: ``args`` are options after ``FAST_SETTINGS``, then ``-- command``."""

    def __init__(
        self,
        url: str,
        run_id: str,
        node_id: str,
        command: Sequence[str],
        *args: str,
        env: dict[str, str] | None = None,
        settings: Sequence[str] = FAST_SETTINGS,
    ) -> None:
        self.node_id = node_id
        argv = [sys.executable, "-m", "rdzv", "run", url, "--run-id", run_id, "--node-id", node_id]
        self.proc = subprocess.Popen(
            [*argv, *settings, *args, "--", *command], text=True, env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self._output: queue.Queue[tuple[float, str]] = queue.Queue()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        streams = [
            (self.proc.stderr, self.stderr, self._lines),
            (self.proc.stdout, self.stdout, self._output),
        ]
        self._readers = [threading.Thread(target=self._read, args=args, daemon=True) for args in streams]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[str], into: list[str], lines: queue.Queue[tuple[float, str]]) -> None:
        for line in pipe:
            into.append(line)
            lines.put((time.monotonic(), line))

    def expect(
        self, pattern: str, timeout: float = 45.0, *, stdout: bool = False
    ) -> tuple[float, re.Match[str]]:
        """Wait for the next stderr line (``stdout``: workers' line) matching ``pattern``.

        Returns when it came (monotonic) and the match; lines before it are passed
        over. Raises ``AssertionError`` with everything the agent said if none
        comes within ``timeout`` seconds.
        """
        lines = self._output if stdout else self._lines
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                message = f"{self.node_id}: no line matching {pattern!r}; got:\n{self.text}"
                raise AssertionError(message) from None
            found = re.search(pattern, line)
            if found:
                return at, found

    def finish(self, timeout: float = 45.0) -> int:
        """Wait for the agent to exit by itself; its exit status."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def text(self) -> str:
        """Everything the agent wrote to stderr so far."""
        return "".join(self.stderr)

    def kill(self) -> None:
        """SIGKILL the agent if it still runs (its workers die with it), and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
