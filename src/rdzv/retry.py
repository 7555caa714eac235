"""Retrying transient store failures until a deadline.

Only ``StoreUnavailableError`` and ``StoreTimeoutError`` are retried: the
store may come back (a reconnect, an etcd leader election). Every step a
rendezvous retries is safe to repeat; see ``join.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rdzv.errors import StoreTimeoutError, StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT = (StoreUnavailableError, StoreTimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from ``first_delay`` to ``max_delay`` until ``deadline``."""

    first_delay: float = 0.05
    max_delay: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def run(self, action: Callable[[], T], *, deadline: float, what: str) -> T:
        """Call ``action`` until it succeeds; re-raise the last transient error at ``deadline``."""
        delay = self.first_delay
        while True:
            try:
                return action()
            except TRANSIENT as exc:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise
                log.warning("rdzv: %s failed (%s); retrying in %.2f s", what, exc, min(delay, remaining))
                self.sleep(min(delay, remaining))
                delay = min(delay * 2, self.max_delay)
