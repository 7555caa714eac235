"""What an agent runs: the worker command, how many per node, and how it treats them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from rdzv.errors import ConfigurationError

__all__ = ["LaunchSpec", "Std", "parse_std", "worker_command"]


class Std:
    """Which of a worker's streams an option applies to (torchrun's 0-3 values)."""

    NONE = 0
    OUT = 1
    ERR = 2
    ALL = 3


def parse_std(text: str, nproc: int, option: str) -> dict[int, int]:
    """``"3"`` (every local rank) or ``"0:1,1:2"`` (per local rank) -> {local rank: Std value}."""
    text = text.strip()
    if text.isdigit():
        return dict.fromkeys(range(nproc), _std_value(text, option))
    mapping: dict[int, int] = {}
    for part in text.split(","):
        rank, sep, value = part.partition(":")
        if not sep or not rank.strip().isdigit():
            raise ConfigurationError(
                f"{option} {text!r}: expected 0-3 (none, stdout, stderr, both) or LOCAL_RANK:VALUE,..."
            )
        mapping[int(rank)] = _std_value(value.strip(), option)
    return mapping


def _std_value(text: str, option: str) -> int:
    if text not in ("0", "1", "2", "3"):
        raise ConfigurationError(
            f"{option}: {text!r} is not one of 0 (none), 1 (stdout), 2 (stderr), 3 (both)"
        )
    return int(text)


def worker_command(command: list[str]) -> list[str]:
    """A ``.py`` target runs with this interpreter, unbuffered, as torchrun does."""
    if not command:
        raise ConfigurationError("no worker command: give one after `--` (or a script.py)")
    if command[0].endswith(".py"):
        return [sys.executable, "-u", *command]
    return list(command)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything about the workers of one node; the rendezvous is configured apart."""

    command: list[str]
    nproc_per_node: int = 1
    max_restarts: int = 0
    """Job-wide: restarts of the whole job, counted in the store by every node together."""
    monitor_interval: float = 0.5
    """Seconds between checks of the workers; round changes wake the agent at once."""
    term_timeout: float = 10.0
    """Seconds workers get between SIGTERM and SIGKILL."""
    role: str = "default"
    log_dir: Path | None = None
    """One file per rank per round: ``LOG_DIR/RUN_ID/round_R/rank_N.log``."""
    redirects: dict[int, int] = field(default_factory=dict)
    """Local rank -> :class:`Std` streams kept off the console (in the log file only)."""
    tee: dict[int, int] = field(default_factory=dict)
    """Local rank -> :class:`Std` streams on the console as well as in the log file."""
    local_ranks_filter: frozenset[int] | None = None
    """Local ranks whose output reaches the console (``None``: all)."""
    health_check: str | None = None
    """Shell command run before every join; non-zero keeps the node out for a while."""
    health_check_timeout: float = 60.0
    health_backoff: tuple[float, float] = (1.0, 30.0)
    """First and longest wait between failed health checks (doubling)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra variables for every worker (on top of the agent's own environment)."""

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigurationError("no worker command: give one after `--` (or a script.py)")
        if self.nproc_per_node < 1:
            raise ConfigurationError(f"nproc_per_node must be >= 1, got {self.nproc_per_node}")
        if self.max_restarts < 0:
            raise ConfigurationError(f"max_restarts must be >= 0, got {self.max_restarts}")
        for name in ("monitor_interval", "term_timeout", "health_check_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if (self.redirects or self.tee) and self.log_dir is None:
            raise ConfigurationError("--redirects and --tee need --log-dir (where the streams go)")
        if not self.role or "/" in self.role:
            raise ConfigurationError(f"role {self.role!r} must be non-empty and contain no '/'")

    def to_console(self, local_rank: int, stream: int) -> bool:
        """Whether ``stream`` (:class:`Std` OUT or ERR) of ``local_rank`` is shown on the console."""
        if self.local_ranks_filter is not None and local_rank not in self.local_ranks_filter:
            return False
        if self.tee.get(local_rank, Std.NONE) & stream:
            return True
        return not self.redirects.get(local_rank, Std.NONE) & stream
