"""A request sent on a tcp connection, waiting for its reply (see ``connection.py``)."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Pending"]


class Pending:
    """A sent request: its reply (or error) once ``delivered``.

    Its caller sleeps on ``_signal``, a lock held while armed: released once
    when the reply is delivered, or when the caller is asked to take over
    reading the socket (see ``Connection._hand_off``). A lock, not a
    ``threading.Event``: with thousands of threads in one process every
    wake-up is cheaper. ``delivered`` and ``_armed`` change under the
    connection's lock.
    """

    __slots__ = ("_armed", "_signal", "delivered", "error", "result")

    def __init__(self) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self._armed = True
        self.delivered = False
        self.result: Any = None
        self.error: Exception | None = None

    def is_set(self) -> bool:
        return self.delivered

    def _wake(self) -> None:
        """Release the sleeping caller (under the connection's lock)."""
        if self._armed:
            self._armed = False
            self._signal.release()

    def _rearm(self, woken: bool) -> None:
        """After a sleep (under the connection's lock): hold the signal again for the next one."""
        if woken or not self._armed:
            if not woken:
                self._signal.acquire()  # released after our sleep timed out: take it back
            self._armed = True
