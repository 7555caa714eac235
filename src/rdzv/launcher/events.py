"""What an agent reports while it runs: one small frozen record per thing that happened.

An embedding program passes ``on_event`` to :class:`rdzv.launcher.Agent` and
receives these in order; ``rdzv run`` prints them as one line each on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdzv.launcher.report import WorkerFailure

__all__ = [
    "Done",
    "Event",
    "HealthCheckFailed",
    "Restart",
    "RoundFormed",
    "ScaleChange",
    "Stopping",
    "WorkerFailed",
    "WorkersStarted",
]


@dataclass(frozen=True)
class RoundFormed:
    """This node took part in a new round: its place and the whole world's size."""

    round: int
    group_rank: int
    group_world_size: int
    first_rank: int
    """Global rank of this node's local rank 0."""
    local_world_size: int
    world_size: int

    def describe(self) -> str:
        last = self.first_rank + self.local_world_size - 1
        return (
            f"round {self.round} formed: node {self.group_rank} of {self.group_world_size}, "
            f"ranks {self.first_rank}-{last} of {self.world_size}"
        )


@dataclass(frozen=True)
class WorkersStarted:
    round: int
    ranks: tuple[int, ...]
    pids: tuple[int, ...]
    restart_count: int

    def describe(self) -> str:
        return (
            f"round {self.round}: started {len(self.ranks)} worker(s), ranks {list(self.ranks)}, "
            f"pids {list(self.pids)}, restart count {self.restart_count}"
        )


@dataclass(frozen=True)
class WorkerFailed:
    failure: WorkerFailure

    def describe(self) -> str:
        return f"worker failed: {self.failure.summary()}"


@dataclass(frozen=True)
class Restart:
    """The job restarts after a worker failure (on this node or another); one unit of the budget."""

    round: int
    restarts: int
    max_restarts: int

    def describe(self) -> str:
        return f"round {self.round}: restarting the job (restart {self.restarts} of {self.max_restarts})"


@dataclass(frozen=True)
class ScaleChange:
    """Membership changed (a member lost, nodes waiting to join): re-form, budget untouched."""

    round: int
    reason: str
    """A :class:`rdzv.Change` value."""

    def describe(self) -> str:
        return f"round {self.round}: membership change ({self.reason}): re-forming"


@dataclass(frozen=True)
class HealthCheckFailed:
    reason: str
    retry_in: float

    def describe(self) -> str:
        return f"health check failed, not joining: {self.reason}; retrying in {self.retry_in:.1f} s"


@dataclass(frozen=True)
class Stopping:
    """A stop was requested (a signal): the workers got it and have ``grace`` seconds."""

    signal_name: str
    grace: float

    def describe(self) -> str:
        return (
            f"{self.signal_name}: stopping the workers (grace {self.grace:g} s; "
            "signal again to kill them now)"
        )


@dataclass(frozen=True)
class Done:
    """The agent is finished: ``exit_code`` is what ``rdzv run`` exits with."""

    exit_code: int
    reason: str

    def describe(self) -> str:
        return f"done (exit {self.exit_code}): {self.reason}"


Event = (
    RoundFormed | WorkersStarted | WorkerFailed | Restart | ScaleChange | HealthCheckFailed | Stopping | Done
)
