"""The elastic agent of one node: rendezvous, run the workers, watch workers and round together.

::

    health check ─► next_rendezvous ─► exchange worker counts ─► start K workers
          ▲                                                          │ watch
          │  a worker failed: spend one restart of the job's budget  │
          └──┤  a member lost / nodes waiting: re-form, budget kept  ◄┘
             all workers 0: exit barrier ─► outcome, close ─► exit 0
             budget spent: outcome, close ─► every node exits 1

A node's agent never decides alone that the job ended: the outcome is written to
the store before the run is closed, and every agent that sees the run closed
reads it, so all nodes exit the same way with the same message.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import BinaryIO, TypeVar

from rdzv.errors import ConfigurationError, RendezvousClosedError, StoreError
from rdzv.launcher.env import RoundPlan
from rdzv.launcher.events import (
    Done,
    Event,
    HealthCheckFailed,
    Restart,
    RoundFormed,
    ScaleChange,
    Stopping,
    WorkerFailed,
    WorkersStarted,
)
from rdzv.launcher.health import run_health_check
from rdzv.launcher.job import JobState, NodeSlot, Outcome, exchange_slots
from rdzv.launcher.output import Console
from rdzv.launcher.report import WorkerFailure, format_report
from rdzv.launcher.spec import LaunchSpec
from rdzv.launcher.workers import WorkerGroup
from rdzv.rendezvous.address import PortReservation
from rdzv.rendezvous.node import Change, Rendezvous, RendezvousInfo

__all__ = ["Agent", "AgentInterrupted"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Ending = tuple[int, str]
"""How the agent ends: exit code and the reason, for people."""


class AgentInterrupted(BaseException):
    """Raised out of a blocking rendezvous call by :meth:`Agent.handle_signal`."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Agent:
    """Runs ``spec``'s workers on this node for as long as the job lasts; :meth:`run` returns the exit code.

    The agent takes over ``rendezvous`` and shuts it down when it ends.
    ``on_event`` receives an :data:`~rdzv.launcher.events.Event` for every step
    (called on the agent's thread; keep it quick). ``joining`` gives a context
    manager the agent enters around every wait for a round (``rdzv run`` draws
    its progress line in it).

    Group rank 0's coordinator ports (``MASTER_PORT`` and the JAX port) stay
    reserved from when they are announced until just before its workers start,
    so no other process takes them in between.
    """

    def __init__(
        self,
        spec: LaunchSpec,
        rendezvous: Rendezvous,
        *,
        on_event: Callable[[Event], None] | None = None,
        joining: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
    ) -> None:
        self.spec = spec
        self._rdzv = rendezvous
        self._job = JobState(rendezvous.store, rendezvous.run_id)
        self._on_event = on_event or (lambda event: None)
        self._joining = joining
        self._jax_port = PortReservation()
        self._console = Console(stdout or sys.stdout.buffer, stderr or sys.stderr.buffer)
        self._stop_signal: int | None = None
        self._interruptible = False
        self._wakeup = threading.Event()
        self._files: Path | None = None
        self._last_round = (0, 0)
        """Round number and node count of the last round this node took part in."""
        self._workers: WorkerGroup | None = None
        self.ending_reason = ""
        """Why :meth:`run` returned (the job's report when it failed)."""

    @property
    def run_id(self) -> str:
        return self._rdzv.run_id

    @property
    def node_id(self) -> str:
        return self._rdzv.node_id

    # -- stopping -----------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop soon (from any thread): forward ``signum`` to the workers, leave, end with 128+signum."""
        if self._stop_signal is None:
            self._stop_signal = signum
        self._wakeup.set()

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """A ``signal.signal`` handler: like :meth:`request_stop`, and cuts a blocking join short.

        A second signal ends the grace period: the workers are killed at once.
        """
        if self._stop_signal is not None and self._workers is not None:
            self._workers.signal_all(signal.SIGKILL)
        self.request_stop(signum)
        if self._interruptible:
            self._interruptible = False
            raise AgentInterrupted(signum)

    def _check_stop(self) -> None:
        if self._stop_signal is not None:
            raise AgentInterrupted(self._stop_signal)

    def _interruptibly(self, call: Callable[[], T]) -> T:
        self._check_stop()
        self._interruptible = True
        try:
            return call()
        finally:
            self._interruptible = False

    # -- the loop -----------------------------------------------------------------

    def run(self) -> int:
        """Run until the job ends (or a stop is requested); return the exit code for this node."""
        with tempfile.TemporaryDirectory(prefix="rdzv-run-") as files:
            self._files = Path(files)
            try:
                code, reason = self._loop()
                self._depart()
            except AgentInterrupted as exc:
                code = 128 + exc.signum
                reason = f"{signal.Signals(exc.signum).name}: workers stopped, node left run {self.run_id}"
            finally:
                self._jax_port.release()
                self._rdzv.shutdown()  # a member lost to the others, not a closed run
        self.ending_reason = reason
        self._emit(Done(code, reason))
        return code

    def _loop(self) -> Ending:
        while True:
            ending = self._health_gate()
            if ending is not None:
                return ending
            try:
                with self._joining():
                    info = self._interruptibly(self._rdzv.next_rendezvous)
            except RendezvousClosedError:
                return self._closed_ending()
            plan = self._plan(info)
            if plan is None:
                continue  # the round changed while its nodes were exchanging counts
            ending = self._run_round(plan)
            if ending is not None:
                return ending

    def _plan(self, info: RendezvousInfo) -> RoundPlan | None:
        jax_port = self._jax_port.take() if info.rank == 0 else 0
        deadline = time.monotonic() + self._rdzv.settings.join_timeout
        slots = exchange_slots(
            info, NodeSlot(self.spec.nproc_per_node, jax_port), deadline, self._round_interrupted
        )
        if not slots:
            return None
        self._last_round = (info.round, info.world_size)
        plan = RoundPlan(
            self.run_id, self.node_id, info.round, info.rank, tuple(s.nproc for s in slots),
            info.coordinator_host, info.coordinator_port, slots[0].jax_port,
            self._job.restart_count(), self.spec.max_restarts, self.spec.role,
        )  # fmt: skip
        formed = RoundFormed(
            plan.round, plan.group_rank, plan.group_world_size, plan.first_rank,
            plan.local_world_size, plan.world_size,
        )  # fmt: skip
        self._emit(formed)
        return plan

    def _round_interrupted(self) -> bool:
        return self._stop_signal is not None or self._rdzv.wait_for_change(0) is not None

    def _run_round(self, plan: RoundPlan) -> Ending | None:
        """Run the workers of one round: an ending, or ``None`` to re-form."""
        assert self._files is not None
        log_dir = self.spec.log_dir / self.run_id if self.spec.log_dir else None
        self._rdzv.release_port()  # the coordinator ports are the workers' to bind from now on
        self._jax_port.release()
        try:
            workers = WorkerGroup.start(self.spec, plan, self._console, self._files, log_dir)
        except OSError as exc:
            raise ConfigurationError(f"cannot run {self.spec.command[0]!r}: {exc.strerror}") from exc
        self._workers = workers
        try:
            self._emit(WorkersStarted(plan.round, workers.ranks, workers.pids, plan.restart_count))
            return self._watch(plan, workers)
        finally:
            if self._stop_signal is not None:
                self._emit(Stopping(signal.Signals(self._stop_signal).name, self.spec.term_timeout))
            workers.stop(self._stop_signal or signal.SIGTERM, self.spec.term_timeout)
            self._workers = None

    def _watch(self, plan: RoundPlan, workers: WorkerGroup) -> Ending | None:
        while True:
            self._check_stop()
            failures = workers.failures()
            if failures:
                return self._on_failure(plan, failures, workers)
            if workers.all_succeeded():
                return self._exit_barrier(plan)
            change = self._rdzv.wait_for_change(self.spec.monitor_interval)
            if change is not None:
                return self._on_change(plan, change)

    def _on_change(self, plan: RoundPlan, change: str) -> Ending | None:
        if change == Change.CLOSED:
            return self._closed_ending()
        if self._job.round_failed(plan.round):
            self._emit(Restart(plan.round, self._job.restart_count(), self.spec.max_restarts))
        else:
            self._emit(ScaleChange(plan.round, change))
        return None

    def _on_failure(
        self, plan: RoundPlan, failures: list[WorkerFailure], workers: WorkerGroup
    ) -> Ending | None:
        """Stop this node's workers and spend a restart (once per round, whichever node fails)."""
        for failure in failures:
            self._emit(WorkerFailed(failure))
        workers.stop(signal.SIGTERM, self.spec.term_timeout)
        spent = self._job.record_failure(failures[0])
        if spent is None:  # another node's failure already restarts this round
            spent = self._job.restart_count()
        if spent > self.spec.max_restarts:
            report = format_report(self.run_id, self._job.failures(), self.spec.max_restarts)
            return self._finish(Outcome(False, report))
        self._emit(Restart(plan.round, spent, self.spec.max_restarts))
        return None

    def _exit_barrier(self, plan: RoundPlan) -> Ending | None:
        """Every local worker exited 0: wait for every node's, then the job succeeded."""
        if self._job.arrive_done(plan.round) >= plan.group_world_size:
            ranks = f"all {plan.world_size} workers on {plan.group_world_size} node(s)"
            return self._finish(Outcome(True, f"job {self.run_id} succeeded: {ranks} exited 0"))
        since = self._job.revision()
        while True:
            self._check_stop()
            change = self._rdzv.wait_for_change(self.spec.monitor_interval)
            if change == Change.NODES_WAITING and not self._job.round_failed(plan.round):
                # A node that wants in while this round finishes is no reason to run it again.
                since = self._job.wait(since, self.spec.monitor_interval) or since
            elif change is not None:
                return self._on_change(plan, change)

    def _finish(self, outcome: Outcome) -> Ending:
        """Record how the job ended, then close the run: every other agent reads the same outcome."""
        self._job.set_outcome(outcome)
        self._rdzv.set_closed()
        return self._closed_ending()

    def _health_gate(self) -> Ending | None:
        """Run the health check until it passes; ``None`` means go and join."""
        command = self.spec.health_check
        if command is None:
            return None
        delay, longest = self.spec.health_backoff
        deadline = time.monotonic() + self._rdzv.settings.join_timeout
        timeout = self.spec.health_check_timeout
        while True:
            result = self._interruptibly(lambda: run_health_check(command, timeout))
            if result.ok:
                return None
            if self._rdzv.is_closed():
                return self._closed_ending()
            if time.monotonic() + delay > deadline:
                return 1, f"health check still failing after the join timeout: {result.reason}"
            self._emit(HealthCheckFailed(result.reason, delay))
            self._wakeup.wait(delay)
            self._check_stop()
            delay = min(delay * 2, longest)

    def _depart(self) -> None:
        """After the job ended: a node hosting the store keeps it up until the others have read."""
        round_, world = self._last_round
        if round_ == 0:
            return
        hosting = getattr(self._rdzv.store, "hosted", None) is not None
        try:
            self._job.depart(round_, world, hosting, self._rdzv.settings.close_timeout)
        except StoreError as exc:
            log.info("rdzv run: leaving round %d: %s", round_, exc)

    def _closed_ending(self) -> Ending:
        outcome = self._job.outcome()
        if outcome is None:
            return 1, f"run {self.run_id} was closed without an outcome (not by rdzv run): stopping"
        return (0 if outcome.ok else 1), outcome.report

    def _emit(self, event: Event) -> None:
        self._on_event(event)
