"""A node's lease and the thread that keeps it alive.

Liveness is a lease the store expires by its own clock: a node proves it is
alive by refreshing the lease every ``interval`` seconds, O(1) bytes, and is
evicted when ``ttl`` passes without a refresh. No host compares clocks.
A refresh never blocks longer than one interval (the store call is bounded by
it): a store that does not answer costs a missed beat, not a stuck thread.
"""

from __future__ import annotations

import _thread
import logging
import threading
import time
from collections.abc import Callable

from rdzv.errors import StoreError, StoreStateLostError
from rdzv.store.base import Store
from rdzv.store.deadline import bounded

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 0.25
"""Seconds to the next beat after a failed one: a store that failed over is found fast."""


class Heartbeat:
    """Grants the node's lease on demand and refreshes it from a daemon thread."""

    def __init__(
        self,
        store: Store,
        *,
        ttl: float,
        interval: float,
        name: str,
        on_beat: Callable[[bool], None] | None = None,
    ) -> None:
        self._store = store
        self._on_beat = on_beat
        """Called from the thread after each beat with whether the lease was alive."""
        self._ttl = ttl
        self._interval = interval
        self._name = name
        self._lease: int | None = None
        self._generation = store.generation
        """Store generation the lease was granted in (a lease of an older one means nothing)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._exited = threading.Event()
        self._started = False
        self._ident: int | None = None
        self.refreshes = 0

    @property
    def lease(self) -> int | None:
        return self._lease

    def ensure(self) -> int:
        """The current lease, granting a new one if there is none or it was lost."""
        with self._lock:
            if self._lease is not None and self._generation != self._store.generation:
                self._lease = None  # granted by a store that has since lost its state
            if self._lease is None:
                generation = self._store.generation
                self._lease = self._store.grant(self._ttl)
                self._generation = generation
            if not self._started:
                # A bare thread: ``threading.Thread.start`` waits for the new thread to
                # run, two GIL hand-offs that cost milliseconds when thousands of
                # node threads share a process (the benchmark; a launcher with many nodes).
                self._started = True
                _thread.start_new_thread(self._run, ())
            return self._lease

    def beat(self) -> bool:
        """Refresh once; ``False`` means the lease had expired and is dropped."""
        with self._lock:
            lease = self._lease
            stale = self._generation != self._store.generation
        if lease is None:
            return False
        try:
            if not stale and self._store.refresh(lease):
                self.refreshes += 1
                return True
        except StoreStateLostError:
            stale = True
        if stale:
            log.warning("rdzv node %s: the store lost its state; taking a new lease", self._name)
        else:
            log.warning("rdzv node %s: lease %s expired; evicted, it will rejoin", self._name, lease)
        with self._lock:
            if self._lease == lease:
                self._lease = None
        return False

    def _run(self) -> None:
        self._ident = threading.get_ident()
        try:
            delay = self._interval
            while not self._stop.wait(delay):
                delay = self._interval
                try:
                    with bounded(time.monotonic() + self._interval):
                        alive = self.beat()
                        if self._on_beat is not None:
                            self._on_beat(alive)
                except StoreError as exc:
                    log.warning("rdzv node %s: heartbeat failed: %s", self._name, exc)
                    delay = min(self._interval, RETRY_AFTER_FAILURE)
        finally:
            self._exited.set()

    def stop(self, *, revoke: bool) -> None:
        """Stop beating; with ``revoke`` end the lease now so peers see the node leave."""
        self._stop.set()
        if self._started and self._ident != threading.get_ident():
            self._exited.wait(timeout=self._interval + 1)
        with self._lock:
            lease, self._lease = self._lease, None
        if revoke and lease is not None:
            try:
                with bounded(time.monotonic() + self._interval):
                    self._store.revoke(lease)
            except StoreError as exc:
                log.warning("rdzv node %s: could not revoke lease on shutdown: %s", self._name, exc)
