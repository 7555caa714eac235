"""The K worker processes of one node in one round: start, watch, stop.

Each worker leads its own process group, so a signal reaches what it started
too, and a Ctrl-C on the terminal reaches the agent alone (which forwards it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rdzv.launcher.env import RoundPlan
from rdzv.launcher.output import Console, StreamPump
from rdzv.launcher.report import ERROR_FILE_ENV, WorkerFailure, read_error_file
from rdzv.launcher.spec import LaunchSpec, Std

__all__ = ["WorkerGroup"]

PUMP_DRAIN = 2.0
"""Seconds to wait for a finished worker's last lines before giving up on them."""


@dataclass
class _Worker:
    local_rank: int
    rank: int
    process: subprocess.Popen[bytes]
    pumps: tuple[StreamPump, StreamPump]
    error_file: Path
    log: BinaryIO | None


class WorkerGroup:
    """This node's workers for one round."""

    def __init__(self, workers: list[_Worker], plan: RoundPlan) -> None:
        self._workers = workers
        self._plan = plan

    @classmethod
    def start(
        cls, spec: LaunchSpec, plan: RoundPlan, console: Console, files: Path, log_dir: Path | None
    ) -> WorkerGroup:
        """Start every local rank; ``files`` holds their error files, ``log_dir`` their logs."""
        workers: list[_Worker] = []
        try:
            for local_rank in range(plan.local_world_size):
                workers.append(_spawn(spec, plan, local_rank, console, files, log_dir))
        except BaseException:
            WorkerGroup(workers, plan).stop(signal.SIGKILL, 0)
            raise
        return cls(workers, plan)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(w.process.pid for w in self._workers)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(w.rank for w in self._workers)

    def failures(self) -> list[WorkerFailure]:
        """Workers that have exited non-zero, each with the last lines of its stderr."""
        now = time.time()
        failed = [w for w in self._workers if (w.process.poll() or 0) != 0]
        return [self._failure(w, now) for w in failed]

    def all_succeeded(self) -> bool:
        return all(w.process.poll() == 0 for w in self._workers)

    def signal_all(self, signum: int) -> None:
        for worker in self._workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, grace: float = 10.0) -> None:
        """Send ``signum``; SIGKILL whatever is left after ``grace`` seconds; reap and close."""
        if any(w.process.poll() is None for w in self._workers):
            self.signal_all(signum)
        deadline = time.monotonic() + grace
        for worker in self._workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(deadline - time.monotonic(), 0))
        self.signal_all(signal.SIGKILL)  # also what a worker left behind in its group
        for worker in self._workers:
            worker.process.wait()
            for pump in worker.pumps:
                pump.join(PUMP_DRAIN)
            if worker.log is not None:
                worker.log.close()

    def _failure(self, worker: _Worker, now: float) -> WorkerFailure:
        worker.pumps[1].join(PUMP_DRAIN)
        return WorkerFailure(
            rank=worker.rank,
            local_rank=worker.local_rank,
            node_id=self._plan.node_id,
            round=self._plan.round,
            returncode=worker.process.returncode,
            at=now,
            stderr_tail=tuple(worker.pumps[1].tail),
            error_message=read_error_file(worker.error_file),
        )


def _spawn(
    spec: LaunchSpec, plan: RoundPlan, local_rank: int, console: Console, files: Path, log_dir: Path | None
) -> _Worker:
    rank = plan.first_rank + local_rank
    error_file = files / f"round_{plan.round}" / f"rank_{rank}" / "error.json"
    error_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env, **plan.worker_env(local_rank), ERROR_FILE_ENV: str(error_file)}
    log: BinaryIO | None = None
    if log_dir is not None:
        path = log_dir / f"round_{plan.round}" / f"rank_{rank}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "ab")  # noqa: SIM115 - closed by WorkerGroup.stop
    process = subprocess.Popen(
        spec.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=_die_with_agent if sys.platform == "linux" else None,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    prefix = f"[{rank}]:".encode() if plan.local_world_size > 1 else b""
    lock = threading.Lock()

    def pump(pipe: BinaryIO, std: int, sink: BinaryIO, tail: bool) -> StreamPump:
        shown = console if spec.to_console(local_rank, std) else None
        return StreamPump(
            pipe, console=shown, sink=sink, prefix=prefix, log=log, log_lock=lock, keep_tail=tail
        )

    pumps = (
        pump(process.stdout, Std.OUT, console.stdout, False),  # type: ignore[arg-type]
        pump(process.stderr, Std.ERR, console.stderr, True),  # type: ignore[arg-type]
    )
    return _Worker(local_rank, rank, process, pumps, error_file, log)


def _die_with_agent() -> None:
    """In the child, before exec: a worker whose agent dies (SIGKILL, a crash) is killed too."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
