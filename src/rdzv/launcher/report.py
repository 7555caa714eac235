"""Worker failures, and the one message that tells a user why the job stopped.

A failure is stored as JSON (it travels between nodes through the store), so
any node can print the job's report. torchrun's ``TORCHELASTIC_ERROR_FILE``
convention is honoured both ways: each worker gets a file to write its error
into (``torch.distributed.elastic.multiprocessing.errors.record`` does), and
when the agent's own environment names one, the agent writes the job's failure
there.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["WorkerFailure", "format_report", "read_error_file", "write_error_file"]

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"


@dataclass(frozen=True)
class WorkerFailure:
    """One worker that exited non-zero (or by a signal)."""

    rank: int
    local_rank: int
    node_id: str
    round: int
    returncode: int
    """As ``subprocess``: negative for a signal."""
    at: float
    """Wall-clock time of the exit (seconds since the epoch), for people to read."""
    stderr_tail: tuple[str, ...] = ()
    error_message: str | None = None
    """What the worker wrote to its ``TORCHELASTIC_ERROR_FILE``, if anything."""

    @property
    def how(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"was killed by {name}"
        return f"exited with code {self.returncode}"

    def summary(self) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        return (
            f"rank {self.rank} (local rank {self.local_rank} on node {self.node_id}, round {self.round}) "
            f"{self.how} at {stamp}"
        )

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> WorkerFailure | None:
        """The failure in ``data``, or ``None`` if it is not one (a report must never crash)."""
        try:
            fields: dict[str, Any] = json.loads(data)
            fields["stderr_tail"] = tuple(fields.get("stderr_tail", ()))
            return cls(**fields)
        except (ValueError, TypeError):
            return None


def format_report(run_id: str, failures: list[WorkerFailure], max_restarts: int) -> str:
    """The job's failure, in one message: every failure that spent the budget, the last in detail."""
    lines = [
        f"job {run_id} failed: {len(failures)} worker failure(s) spent the restart budget "
        f"(--max-restarts {max_restarts}, shared by all nodes)"
    ]
    for failure in failures:
        lines.append(f"  failure: {failure.summary()}")
    if failures:
        first = failures[-1]
        lines.append(f"the last round's first failure: {first.summary()}")
        if first.error_message:
            lines.append(f"  error: {first.error_message}")
        if first.stderr_tail:
            lines.append(f"  last lines of rank {first.rank}'s stderr:")
            lines.extend(f"    {line}" for line in first.stderr_tail)
    return "\n".join(lines)


def read_error_file(path: Path) -> str | None:
    """The message a worker left in its error file (torch's JSON layout, or plain text)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip() or None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    return str(message) if message else text.strip() or None


def write_error_file(path: Path, report: str) -> None:
    """Write the job's failure where torchrun's convention says the launcher's error goes."""
    payload = {"message": {"message": report, "extraInfo": {"timestamp": str(int(time.time()))}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
