"""Retrying transient store failures until a deadline.

Only ``StoreUnavailableError`` and ``StoreTimeoutError`` are retried: the
store may come back (a reconnect, an etcd leader election). Anything else is
raised at once, because waiting cannot clear it: ``StoreStateLostError`` (the
store restarted empty), ``AuthenticationError``, ``ConfigurationError``.
Every step a rendezvous retries is safe to repeat; see ``join.py``.

Each attempt runs under the deadline (:func:`rdzv.store.deadline.bounded`), so
no store call inside it outlives the caller: with the store gone, ``run``
returns or raises by ``deadline``, not one operation timeout per attempt later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rdzv.errors import StoreTimeoutError, StoreUnavailableError
from rdzv.store.deadline import bounded

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT = (StoreUnavailableError, StoreTimeoutError)

RetryObserver = Callable[[str, Exception, float], None]
"""Told ``(what, error, seconds left)`` before each retry; ``rdzv join`` shows it to the user."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from ``first_delay`` to ``max_delay`` until ``deadline``.

    ``deadline`` is read on ``clock``; store calls are bounded on ``time.monotonic``
    by the same time left, so a fake clock in tests still bounds real calls sensibly.
    """

    first_delay: float = 0.05
    max_delay: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    on_retry: RetryObserver | None = None
    """Reports each transient failure instead of the log warning."""

    def run(self, action: Callable[[], T], *, deadline: float, what: str) -> T:
        """Call ``action`` until it succeeds; re-raise the last transient error at ``deadline``."""
        delay = self.first_delay
        while True:
            try:
                with bounded(time.monotonic() + max(deadline - self.clock(), 0.0)):
                    return action()
            except TRANSIENT as exc:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise
                if self.on_retry is not None:
                    self.on_retry(what, exc, remaining)
                else:
                    log.warning("rdzv: %s failed (%s); retrying in %.2f s", what, exc, min(delay, remaining))
                self.sleep(min(delay, remaining))
                if self.clock() >= deadline:
                    raise  # no time for another attempt: the error stands, not a "no time left"
                delay = min(delay * 2, self.max_delay)
