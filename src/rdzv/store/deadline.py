"""Deadlines that bound every store call made inside a block, whatever the backend.

A store call takes as long as its own timeout allows (``tcp://...?timeout=30``),
but never longer than its caller has left. The caller says so once, around a
block, rather than threading a deadline through every call::

    with bounded(time.monotonic() + 5):
        store.get("a")          # ends within 5 s, success or StoreTimeoutError
        store.wait("b", 0, 60)  # returns (or raises) within 5 s

Backends ask :func:`time_left` for the time an operation may take. Blocks nest;
the earliest deadline wins. The deadline lives in a context variable, so each
thread (the heartbeat, the joining thread) has its own. A deadline is an
absolute ``time.monotonic()`` value, a timeout a number of seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

__all__ = ["bounded", "current_deadline", "time_left"]

_deadline: ContextVar[float | None] = ContextVar("rdzv_store_deadline", default=None)


@contextlib.contextmanager
def bounded(deadline: float) -> Iterator[float]:
    """Bound every store call in the block by ``deadline``; yield the deadline in force."""
    outer = _deadline.get()
    effective = deadline if outer is None else min(outer, deadline)
    token = _deadline.set(effective)
    try:
        yield effective
    finally:
        _deadline.reset(token)


def current_deadline() -> float | None:
    """The deadline in force for store calls in this context, if any."""
    return _deadline.get()


def time_left(timeout: float) -> float:
    """The smaller of ``timeout`` and the seconds left before the deadline in force (never negative)."""
    deadline = _deadline.get()
    if deadline is None:
        return max(timeout, 0.0)
    return max(min(timeout, deadline - time.monotonic()), 0.0)
