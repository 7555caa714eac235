"""One I/O thread per process that reads every tcp connection no caller is reading.

A caller waiting for its reply reads its connection itself (no thread hand-off
when one caller waits for one reply, see ``connection.py``). While no caller
reads a connection, it is *watched* here: one daemon thread with one selector
serves every connection of the process, however many nodes the process holds,
instead of a reader thread per connection.

The selector is level-triggered; a connection a caller is reading is not
watched, so the two never read the same socket (each read also holds the
connection's read lock). Registering and unregistering from other threads while
the I/O thread is in ``select`` is safe for epoll and poll: the kernel set is
changed atomically (epoll, kqueue), and an event for a socket unregistered
meanwhile is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable

__all__ = ["Reactor", "reactor"]

log = logging.getLogger("rdzv.store.tcp.client")

OnReadable = Callable[[], None]


class Reactor:
    """A selector thread calling ``on_readable`` for each watched socket with data to read."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, on_readable: OnReadable) -> None:
        """Call ``on_readable`` from the I/O thread whenever ``sock`` has data, until :meth:`unwatch`.

        No lock: the selector's map is changed by single dictionary operations,
        and one connection is (un)watched by one thread at a time (its own protocol).
        """
        try:
            self._selector.register(sock, selectors.EVENT_READ, on_readable)
        except (KeyError, ValueError, OSError):  # already watched, or closed meanwhile (failed already)
            return
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="rdzv-tcp-io", daemon=True)
                    self._thread.start()

    def unwatch(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)

    def _run(self) -> None:
        while True:
            events = self._selector.select()
            for key, _ in events:
                try:
                    key.data()
                except Exception:  # one connection's failure must not end the process's I/O
                    log.exception("rdzv tcp I/O thread: a connection's reader failed")


_REACTOR: Reactor | None = None
_REACTOR_LOCK = threading.Lock()


def reactor() -> Reactor:
    """The process's reactor (created on first use; a forked child makes its own)."""
    global _REACTOR
    with _REACTOR_LOCK:
        if _REACTOR is None:
            _REACTOR = Reactor()
        return _REACTOR


def _forget_after_fork() -> None:
    """A forked child has no I/O thread: it makes its own reactor on first use."""
    global _REACTOR, _REACTOR_LOCK
    _REACTOR, _REACTOR_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
