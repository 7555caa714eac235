"""What a waiting command tells its user on stderr: store trouble, and a live progress line.

Used by ``rdzv join`` and ``rdzv run``: ``JoinFeedback.store_trouble`` is a
``Rendezvous(on_retry=...)`` observer, and ``JoinFeedback.joining`` redraws one
line on a terminal while a round forms.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from rdzv.errors import StoreError
from rdzv.rendezvous.node import Rendezvous
from rdzv.rendezvous.progress import JoinProgress, ProgressWatch

__all__ = ["JoinFeedback", "render_progress"]

TROUBLE_EVERY = 5.0
"""Seconds between repeated reports of the same store trouble."""
REDRAW_EVERY = 0.5


def render_progress(p: JoinProgress) -> str:
    waiting = min(p.joined, p.max_nodes)
    needed = p.min_nodes if waiting < p.min_nodes else p.max_nodes
    text = f"rdzv: round {p.round}: {waiting}/{needed} joined (min {p.min_nodes}, max {p.max_nodes})"
    if p.last_call_in is not None:
        text += f", last call in {p.last_call_in:.0f} s"
    return text + f", {p.spares} spare{'' if p.spares == 1 else 's'}"


class JoinFeedback:
    """Messages for one waiting command; thread-safe (the progress line has its own thread)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._line_shown = False
        self._last_trouble = -float("inf")

    def store_trouble(self, what: str, error: Exception, seconds_left: float) -> None:
        """Say at once, then every few seconds, why the store does not answer and how long is left."""
        now = time.monotonic()
        if now - self._last_trouble < TROUBLE_EVERY:
            return
        self._last_trouble = now
        left = f"{seconds_left:.0f} s left of --join-timeout"
        self.say(f"rdzv: waiting for the store ({what}): {error}; retrying, {left}")

    def say(self, message: str) -> None:
        with self._lock:
            self._clear()
            print(message, file=self._stream, flush=True)

    def joining(self, node: Rendezvous, *, quiet: bool) -> contextlib.AbstractContextManager[None]:
        """Show the progress of ``node``'s next round while the block runs: on a TTY, unless ``quiet``."""
        enabled = not quiet and self._stream.isatty()
        return self.progress(ProgressWatch(node.store, node.settings), enabled=enabled)

    @contextlib.contextmanager
    def progress(self, watch: ProgressWatch, *, enabled: bool) -> Iterator[None]:
        """Redraw the progress line from a thread while the block runs (if ``enabled``)."""
        if not enabled:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._redraw, args=(watch, stop), name="rdzv-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(REDRAW_EVERY + 5)
            with self._lock:
                self._clear()

    def _redraw(self, watch: ProgressWatch, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                text = render_progress(watch.look(time.monotonic()))
            except StoreError:
                text = "rdzv: waiting for the store..."
            with self._lock:
                if stop.is_set():
                    return
                self._stream.write("\r\x1b[K" + text)
                self._stream.flush()
                self._line_shown = True
            with contextlib.suppress(StoreError):
                watch.wait(REDRAW_EVERY)  # a change redraws at once; the countdown at least twice a second
            stop.wait(0.1)  # at most ten redraws a second, whatever the store does

    def _clear(self) -> None:
        if self._line_shown:
            self._stream.write("\r\x1b[K")
            self._line_shown = False
