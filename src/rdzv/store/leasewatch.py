"""Lease liveness judged by the observer's own monotonic clock.

Hosts sharing a filesystem share no clock. A lease holder therefore never
writes a time: each refresh bumps a counter in the lease record. Every observer
remembers, by its own ``time.monotonic()``, when it last saw each lease's
counter change, and judges the lease expired once the counter has stayed the
same for the whole ttl. A lease seen for the first time gets a full ttl
from that sighting. Reading rarely can only delay a verdict, never hasten it:
a change is always dated no earlier than it happened.

Pure logic: the caller passes ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LeaseWatch"]


@dataclass
class _Sighting:
    counter: int
    since: float
    ttl: float


class LeaseWatch:
    """What one observer has seen of each lease's refresh counter, and when."""

    def __init__(self) -> None:
        self._seen: dict[int, _Sighting] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, lease: int, counter: int, ttl: float, now: float) -> bool:
        """Record a reading of ``lease``; return whether it is now judged expired."""
        sighting = self._seen.get(lease)
        if sighting is None or sighting.counter != counter:
            self._seen[lease] = _Sighting(counter, now, ttl)
            return False
        return now - sighting.since >= ttl

    def remaining(self, lease: int, now: float) -> float | None:
        """Seconds until ``lease`` is judged expired unless its counter moves; ``None`` if unseen."""
        sighting = self._seen.get(lease)
        return None if sighting is None else max(sighting.since + sighting.ttl - now, 0.0)

    def next_deadline(self) -> float:
        """The earliest time at which some lease, unchanged till then, is judged expired."""
        return min((s.since + s.ttl for s in self._seen.values()), default=math.inf)

    def extend(self, seconds: float, now: float) -> None:
        """Date every sighting ``seconds`` later (never past ``now``): time no refresh could be made."""
        for sighting in self._seen.values():
            sighting.since = min(sighting.since + seconds, max(now, sighting.since))

    def forget(self, lease: int) -> None:
        self._seen.pop(lease, None)

    def retain(self, leases: set[int]) -> None:
        """Drop what is remembered of leases that no longer exist."""
        for lease in [known for known in self._seen if known not in leases]:
            del self._seen[lease]
