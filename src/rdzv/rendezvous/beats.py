"""One heartbeat scheduler per process for every lease of that process.

A process holding many nodes (a launcher, an agent per GPU, the benchmark)
used to run a heartbeat thread per node; here one timer thread keeps a heap of
due times and hands each due beat to a pool of worker threads. A beat is mostly
a wait for the store's reply, so the pool grows (up to :data:`MAX_WORKERS`)
while beats are due and every worker is busy: a thousand leases due at once are
refreshed by many requests in flight, not one after another. A task returns
the seconds until it should run again, or ``None`` to end.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["BeatHandle", "BeatScheduler", "scheduler"]

MIN_WORKERS = 2
MAX_WORKERS = 64
"""Most threads running due beats at once (requests in flight for a process's leases)."""

Task = Callable[[], "float | None"]


class BeatHandle:
    """One scheduled task; :meth:`cancel` ends it."""

    __slots__ = ("_idle", "_running_in", "cancelled", "task")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.cancelled = False
        self._running_in: int | None = None
        self._idle = threading.Event()
        self._idle.set()

    def cancel(self, *, wait: float = 0.0) -> bool:
        """Run no more; wait up to ``wait`` seconds for a run in progress (not when called from it).

        Whether no run is in progress now.
        """
        self.cancelled = True
        if self._running_in == threading.get_ident():
            return False
        return self._idle.wait(wait) if wait > 0 else self._idle.is_set()


class BeatScheduler:
    """A timer thread and a few workers running every scheduled task of the process."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._heap: list[tuple[float, int, BeatHandle]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._timer_wake = threading.Condition(self._lock)
        """Notified when a task becomes the earliest due."""
        self._work_ready = threading.Condition(self._lock)
        """Notified once per task made ready (a worker each, no herd)."""
        self._ready: deque[BeatHandle] = deque()
        self._max_workers = max(max_workers, 1)
        self._workers = 0
        self._idle_workers = 0
        self._started = False

    def schedule(self, task: Task, delay: float) -> BeatHandle:
        """Run ``task`` ``delay`` seconds from now, then as often as it asks."""
        handle = BeatHandle(task)
        self._push(handle, time.monotonic() + delay)
        return handle

    def scheduled(self) -> int:
        """Tasks waiting for their time (cancelled ones drop out when due)."""
        with self._lock:
            return sum(1 for _, _, handle in self._heap if not handle.cancelled)

    def _push(self, handle: BeatHandle, due: float) -> None:
        with self._lock:
            heapq.heappush(self._heap, (due, next(self._order), handle))
            if not self._started:
                self._started = True
                threading.Thread(target=self._timer, name="rdzv-beats-timer", daemon=True).start()
                for _ in range(min(MIN_WORKERS, self._max_workers)):
                    self._add_worker()
            if self._heap[0][2] is handle:
                self._timer_wake.notify()

    def _add_worker(self) -> None:
        """Start one more worker (called holding ``_lock``)."""
        self._workers += 1
        threading.Thread(target=self._work, name=f"rdzv-beats-{self._workers}", daemon=True).start()

    def _timer(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                made_ready = 0
                while self._heap and self._heap[0][0] <= now:
                    handle = heapq.heappop(self._heap)[2]
                    if not handle.cancelled:
                        handle._idle.clear()
                        self._ready.append(handle)
                        made_ready += 1
                if made_ready:
                    if len(self._ready) > self._idle_workers and self._workers < self._max_workers:
                        self._add_worker()
                    self._work_ready.notify(made_ready)
                self._timer_wake.wait(self._heap[0][0] - now if self._heap else None)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle_workers += 1
                while not self._ready:
                    self._work_ready.wait()
                self._idle_workers -= 1
                handle = self._ready.popleft()
                if self._ready and not self._idle_workers and self._workers < self._max_workers:
                    self._add_worker()  # more beats due than hands free
            self._run(handle)

    def _run(self, handle: BeatHandle) -> None:
        handle._running_in = threading.get_ident()
        delay: float | None = None
        try:
            if not handle.cancelled:
                delay = handle.task()
        except Exception:  # a task's own errors are its business; the scheduler goes on
            delay = None
        finally:
            handle._running_in = None
            if delay is not None and not handle.cancelled:
                self._push(handle, time.monotonic() + delay)
            handle._idle.set()


_SCHEDULER: BeatScheduler | None = None
_SCHEDULER_LOCK = threading.Lock()


def scheduler() -> BeatScheduler:
    """The process's scheduler (created on first use; a forked child makes its own)."""
    global _SCHEDULER
    with _SCHEDULER_LOCK:
        if _SCHEDULER is None:
            _SCHEDULER = BeatScheduler()
        return _SCHEDULER


def _forget_after_fork() -> None:
    global _SCHEDULER, _SCHEDULER_LOCK
    _SCHEDULER, _SCHEDULER_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
