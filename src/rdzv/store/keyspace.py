"""An in-memory keyspace with revisions, leases and change tracking.

Single-threaded and clock-free: callers hold their own lock and pass ``now``
(a monotonic reading) to the lease operations. The memory store and the
embedded TCP server are both built on it.
"""

from __future__ import annotations

import bisect
import builtins
import heapq
import itertools
import secrets
from collections import deque
from dataclasses import dataclass, field

from rdzv.store.base import CasResult, Entry, LeaseInfo, Listing

__all__ = ["KeySpace", "LeaseNotFoundError"]

_PREFIX_END = "\U0010ffff"
LOG_LENGTH = 65_536
"""Recent changes kept to answer ``changed_since`` without scanning a prefix."""


class LeaseNotFoundError(KeyError):
    """A write named a lease that does not exist (never granted, expired or revoked)."""

    def __init__(self, lease: int) -> None:
        self.lease = lease
        super().__init__(f"lease {lease} does not exist (expired or revoked)")


@dataclass
class _Slot:
    value: bytes | None  # None: a tombstone, kept so that waiters see deletions
    version: int
    lease: int | None = None


@dataclass
class _Lease:
    ttl: float
    deadline: float
    keys: set[str] = field(default_factory=set)


class KeySpace:
    """Keys, their versions, tombstones of deleted keys, and leases."""

    def __init__(self, *, max_tombstones: int = 50_000) -> None:
        self.revision = 0
        self._slots: dict[str, _Slot] = {}
        self._sorted: list[str] = []
        self._live = 0
        self._tombstones = 0
        self._max_tombstones = max_tombstones
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._expiry_heap: list[tuple[float, int]] = []
        # Lease ids start at a random point: a client holding a lease of an earlier
        # incarnation of the store (restarted, emptied) must not find it alive here.
        self._next_lease = secrets.randbelow(1 << 40)
        self._log: deque[str] = deque(maxlen=LOG_LENGTH)
        """The key changed at each of the last revisions, newest last (one entry per revision)."""

    # -- reads --------------------------------------------------------------

    def __len__(self) -> int:
        return self._live

    @property
    def lease_count(self) -> int:
        return len(self._leases)

    def get(self, key: str) -> Entry | None:
        slot = self._slots.get(key)
        if slot is None or slot.value is None:
            return None
        return Entry(key, slot.value, slot.version, slot.lease)

    def list(self, prefix: str) -> Listing:
        entries = []
        for key in self._range(prefix):
            slot = self._slots[key]
            if slot.value is not None:
                entries.append(Entry(key, slot.value, slot.version, slot.lease))
        return Listing(tuple(entries), self.revision)

    def changed_since(self, prefix: str, since: int) -> int | None:
        """The newest revision after ``since`` that changed a key under ``prefix``.

        Costs the smaller of the keys under ``prefix`` and the changes since
        ``since``: 4,096 members each watching a round of 4,096 rank keys, with
        nothing changed, cost 4,096 look-ups, not 16 million.
        """
        if since < self._compacted:
            return self.revision  # history is gone: report a change, callers re-read
        behind = self.revision - since
        if behind <= 0:
            return None
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = bisect.bisect_left(self._sorted, prefix + _PREFIX_END, lo)
        if behind <= len(self._log) and behind < hi - lo:
            for back, key in enumerate(itertools.islice(reversed(self._log), behind)):
                if key.startswith(prefix):
                    return self.revision - back
            return None
        newest = max((self._slots[k].version for k in self._sorted[lo:hi]), default=0)
        return newest if newest > since else None

    # -- writes -------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        if lease is not None and lease not in self._leases:
            raise LeaseNotFoundError(lease)
        slot = self._slots.get(key)
        if slot is None:
            bisect.insort(self._sorted, key)
            slot = self._slots[key] = _Slot(None, 0)
        if slot.value is None:
            self._live += 1
            if slot.version:
                self._tombstones -= 1
        self._unbind(key, slot)
        self.revision += 1
        self._log.append(key)
        slot.value, slot.version, slot.lease = value, self.revision, lease
        if lease is not None:
            self._leases[lease].keys.add(key)
        return self.revision

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, lease: int | None = None
    ) -> CasResult:
        current = self.get(key)
        if (current.version if current else 0) != expected_version:
            return CasResult(False, current)
        self.put(key, value, lease)
        return CasResult(True, self.get(key))

    def add(self, key: str, delta: int) -> int:
        current = self.get(key)
        total = (int(current.value) if current else 0) + delta
        self.put(key, str(total).encode(), current.lease if current else None)
        return total

    def delete(self, key: str) -> bool:
        slot = self._slots.get(key)
        if slot is None or slot.value is None:
            return False
        self._unbind(key, slot)
        self.revision += 1
        self._log.append(key)
        slot.value, slot.version, slot.lease = None, self.revision, None
        self._live -= 1
        self._tombstones += 1
        if self._tombstones > self._max_tombstones:
            self._compact()
        return True

    # -- leases -------------------------------------------------------------

    def grant(self, ttl: float, now: float) -> int:
        self._next_lease += 1
        self._leases[self._next_lease] = _Lease(ttl, now + ttl)
        heapq.heappush(self._expiry_heap, (now + ttl, self._next_lease))
        return self._next_lease

    def refresh(self, lease: int, now: float) -> bool:
        record = self._leases.get(lease)
        if record is None:
            return False
        record.deadline = now + record.ttl
        heapq.heappush(self._expiry_heap, (record.deadline, lease))
        return True

    def lease_info(self, lease: int, now: float) -> LeaseInfo | None:
        record = self._leases.get(lease)
        if record is None:
            return None
        return LeaseInfo(record.ttl, max(record.deadline - now, 0.0))

    def revoke(self, lease: int) -> builtins.list[str]:
        record = self._leases.pop(lease, None)
        if record is None:
            return []
        doomed = sorted(record.keys)
        for key in doomed:
            self.delete(key)
        return doomed

    def extend_leases(self, seconds: float) -> None:
        """Give every lease ``seconds`` more: time in which its holder could not be heard (a stall)."""
        for record in self._leases.values():
            record.deadline += seconds
        self._expiry_heap = [(record.deadline, lease) for lease, record in self._leases.items()]
        heapq.heapify(self._expiry_heap)

    def expire(self, now: float) -> builtins.list[str]:
        """Revoke every lease whose deadline has passed; return the keys deleted."""
        deleted: builtins.list[str] = []
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            deadline, lease = heapq.heappop(self._expiry_heap)
            record = self._leases.get(lease)
            if record is not None and record.deadline == deadline:
                deleted.extend(self.revoke(lease))
        return deleted

    def next_expiry(self) -> float | None:
        """The earliest deadline at which ``expire`` may have work."""
        while self._expiry_heap:
            deadline, lease = self._expiry_heap[0]
            record = self._leases.get(lease)
            if record is not None and record.deadline == deadline:
                return deadline
            heapq.heappop(self._expiry_heap)
        return None

    # -- internals ----------------------------------------------------------

    def _range(self, prefix: str) -> builtins.list[str]:
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = bisect.bisect_left(self._sorted, prefix + _PREFIX_END, lo)
        return self._sorted[lo:hi]

    def _unbind(self, key: str, slot: _Slot) -> None:
        if slot.lease is not None and slot.lease in self._leases:
            self._leases[slot.lease].keys.discard(key)

    def _compact(self) -> None:
        dead = [k for k, s in self._slots.items() if s.value is None]
        self._compacted = max(self._slots[k].version for k in dead)
        for key in dead:
            del self._slots[key]
        self._sorted = sorted(self._slots)
        self._tombstones = 0
