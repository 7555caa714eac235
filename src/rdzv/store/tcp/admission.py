"""Who may hold the server's attention: connections in their handshake, failed logins, log lines.

* Connections that have not authenticated yet share a small budget of their
  own, with a cap per peer address. A new connection is always accepted; when
  a budget is full, the oldest pending connection of the address holding the
  most is closed instead. An honest handshake takes one round trip, so a flood
  must open connections faster than that to crowd one out, and authenticated
  connections never count against these budgets.
* After a failed authentication, an address's next handshakes are served one
  at a time, each after a delay that doubles with every failure (up to
  :data:`MAX_DELAY`) and is forgiven after :data:`FORGIVE_AFTER` quiet seconds.
* Warnings about one address are logged once per interval; the rest are
  counted and summed up in one line at the end of the interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Admission", "LogLimiter"]

T = TypeVar("T")

FIRST_DELAY = 0.05
MAX_DELAY = 2.0
FORGIVE_AFTER = 60.0
MAX_TRACKED = 4096
"""Most addresses remembered (penalties, log windows); quiet ones are dropped first."""


@dataclass
class _Penalty:
    failures: int
    last_failure: float
    next_slot: float

    @property
    def delay(self) -> float:
        return min(FIRST_DELAY * 2.0 ** (self.failures - 1), MAX_DELAY)


class Admission(Generic[T]):
    """Pending (unauthenticated) connections by address, and failed-authentication penalties."""

    def __init__(self, budget: int, per_peer: int) -> None:
        self.budget = budget
        self.per_peer = per_peer
        self._pending: dict[str, dict[T, None]] = {}
        self._count = 0
        self._penalties: dict[str, _Penalty] = {}

    def __len__(self) -> int:
        return self._count

    def enter(self, host: str, conn: T) -> list[T]:
        """Count ``conn`` as pending; return the connections to close to make room for it."""
        evicted: list[T] = []
        mine = self._pending.get(host, {})
        if len(mine) >= self.per_peer:
            evicted.append(self._oldest(host))
        elif self._count >= self.budget:
            evicted.append(self._oldest(max(self._pending, key=lambda h: len(self._pending[h]))))
        self._pending.setdefault(host, {})[conn] = None
        self._count += 1
        return evicted

    def leave(self, host: str, conn: T) -> None:
        """``conn`` authenticated or closed: it no longer counts. Idempotent."""
        mine = self._pending.get(host)
        if mine is not None and conn in mine:
            del mine[conn]
            self._count -= 1
            if not mine:
                del self._pending[host]

    def _oldest(self, host: str) -> T:
        oldest = next(iter(self._pending[host]))
        self.leave(host, oldest)
        return oldest

    def hello_delay(self, host: str, now: float) -> float:
        """Seconds to wait before starting a handshake from ``host`` (0 unless it failed lately)."""
        penalty = self._penalties.get(host)
        if penalty is None:
            return 0.0
        if now - penalty.last_failure > FORGIVE_AFTER:
            del self._penalties[host]
            return 0.0
        return max(penalty.next_slot - now, 0.0)

    def hello_sent(self, host: str, now: float) -> None:
        """A handshake from ``host`` starts now: a penalised address's next one waits its turn."""
        penalty = self._penalties.get(host)
        if penalty is not None:
            penalty.next_slot = now + penalty.delay

    def failed(self, host: str, now: float) -> None:
        """Record a failed authentication from ``host``."""
        penalty = self._penalties.get(host)
        if penalty is None:
            if len(self._penalties) >= MAX_TRACKED:
                self._forget_quiet(now)
            penalty = self._penalties[host] = _Penalty(0, now, now)
        penalty.failures += 1
        penalty.last_failure = now
        penalty.next_slot = max(penalty.next_slot, now + penalty.delay)

    def _forget_quiet(self, now: float) -> None:
        for host in [h for h, p in self._penalties.items() if now - p.last_failure > FORGIVE_AFTER]:
            del self._penalties[host]
        while len(self._penalties) >= MAX_TRACKED:
            del self._penalties[next(iter(self._penalties))]


@dataclass
class _Window:
    suppressed: int = 0
    last: str = ""


class LogLimiter:
    """Logs the first warning per key per interval; counts the rest and sums them up after."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        schedule: Callable[[float, Callable[[], None]], Any],
    ) -> None:
        self._log = logger
        self.interval = interval
        self._schedule = schedule
        self._windows: dict[str, _Window] = {}

    def warning(self, key: str, message: str) -> None:
        window = self._windows.get(key)
        if window is not None:
            window.suppressed += 1
            window.last = message
            return
        if len(self._windows) >= MAX_TRACKED:
            return  # every slot is in a window already: count nothing more until they close
        self._log.warning("%s", message)
        self._open(key)

    def _open(self, key: str) -> None:
        self._windows[key] = _Window()
        self._schedule(self.interval, lambda: self._close(key))

    def _close(self, key: str) -> None:
        """Sum up a window; while the warnings go on, the next window starts at once."""
        window = self._windows.pop(key, None)
        if window is not None and window.suppressed:
            self._log.warning(
                "%s: %d more in the last %.0f s (last: %s)",
                *(key, window.suppressed, self.interval, window.last),
            )
            self._open(key)
