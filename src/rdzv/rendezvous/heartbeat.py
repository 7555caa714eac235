"""A node's lease and the thread that keeps it alive.

Liveness is a lease the store expires by its own clock: a node proves it is
alive by refreshing the lease every ``interval`` seconds, O(1) bytes, and is
evicted when ``ttl`` passes without a refresh. No host compares clocks.
A refresh never blocks longer than one interval (the store call is bounded by
it): a store that does not answer costs a missed beat, not a stuck thread.
Beats run on the process's one scheduler (``beats.py``), not a thread per node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from rdzv.errors import StoreError, StoreStateLostError
from rdzv.rendezvous.beats import BeatHandle, scheduler
from rdzv.store.base import Store
from rdzv.store.deadline import bounded

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 0.25
"""Seconds to the next beat after a failed one: a store that failed over is found fast."""


class Heartbeat:
    """Grants the node's lease on demand and refreshes it on the process's beat scheduler."""

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
        """Called on the beat scheduler after each beat with whether the lease was alive."""
        self._ttl = ttl
        self._interval = interval
        self._name = name
        self._lease: int | None = None
        self._generation = store.generation
        """Store generation the lease was granted in (a lease of an older one means nothing)."""
        self._lock = threading.Lock()
        self._beats: BeatHandle | None = None
        self._stopped = False
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
            if self._beats is None and not self._stopped:
                self._beats = scheduler().schedule(self._tick, self._interval)
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

    def _tick(self) -> float | None:
        """One beat on the scheduler; the seconds to the next, or ``None`` once stopped."""
        if self._stopped:
            return None
        try:
            with bounded(time.monotonic() + self._interval):
                alive = self.beat()
                if self._on_beat is not None:
                    self._on_beat(alive)
        except StoreError as exc:
            log.warning("rdzv node %s: heartbeat failed: %s", self._name, exc)
            return None if self._stopped else min(self._interval, RETRY_AFTER_FAILURE)
        return None if self._stopped else self._interval

    def stop(self, *, revoke: bool) -> None:
        """Stop beating; with ``revoke`` end the lease now so peers see the node leave."""
        with self._lock:
            self._stopped = True
            beats = self._beats
        if beats is not None:
            beats.cancel(wait=self._interval + 1)  # a beat in progress ends first
        with self._lock:
            lease, self._lease = self._lease, None
        if revoke and lease is not None:
            try:
                with bounded(time.monotonic() + self._interval):
                    self._store.revoke(lease)
            except StoreError as exc:
                log.warning("rdzv node %s: could not revoke lease on shutdown: %s", self._name, exc)
