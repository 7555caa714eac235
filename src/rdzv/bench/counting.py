"""A store wrapper that counts operations and payload bytes, in the client.

Payload bytes are what an operation carries, both ways: keys, values, and 8
bytes for each integer (lease, version, revision, delta). Framing and protocol
overhead are not counted, so the figure is the same for every backend.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rdzv.errors import StoreUnavailableError
from rdzv.store.base import CasResult, Entry, LeaseInfo, Listing, Store

__all__ = ["CountingStore", "Tally"]

INT = 8
"""Payload bytes counted for one integer argument or result."""


def _entry_size(entry: Entry | None) -> int:
    return INT if entry is None else len(entry.value) + 2 * INT


@dataclass
class Tally:
    """Operations and payload bytes so far; subtract two tallies for a window."""

    ops: Counter[str] = field(default_factory=Counter)
    bytes: int = 0

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    def __sub__(self, other: Tally) -> Tally:
        ops = Counter(self.ops)
        ops.subtract(other.ops)
        return Tally(+ops, self.bytes - other.bytes)

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.ops + other.ops, self.bytes + other.bytes)


class CountingStore(Store):
    """Forwards to ``inner`` and tallies what each call sent and received.

    One wrapper per simulated node over a shared store gives per-node figures.
    Thread-safe (a node's heartbeat thread counts into the same tally).
    """

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self.url = inner.url
        self._lock = threading.Lock()
        self._tally = Tally()
        self._cut = False
        self.stamps: dict[str, float] = {}
        """When each kind of operation last completed (``time.monotonic()``)."""

    def cut(self) -> None:
        """From now on every call fails, as if this node's connection dropped for good."""
        self._cut = True

    def tally(self) -> Tally:
        """A copy of the counts so far."""
        with self._lock:
            return Tally(Counter(self._tally.ops), self._tally.bytes)

    @property
    def _target(self) -> Store:
        if self._cut:
            raise StoreUnavailableError("cut off by the benchmark", url=self.url)
        return self._inner

    def _count(self, op: str, size: int) -> None:
        self.stamps[op] = time.monotonic()
        with self._lock:
            self._tally.ops[op] += 1
            self._tally.bytes += size

    def get(self, key: str) -> Entry | None:
        entry = self._target.get(key)
        self._count("get", len(key) + _entry_size(entry))
        return entry

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        version = self._target.put(key, value, lease=lease)
        self._count("put", len(key) + len(value) + 2 * INT)
        return version

    def put_many(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        versions = self._target.put_many(items)
        self._count("put_many", sum(len(key) + len(value) + 2 * INT for key, value, _ in items))
        return versions

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        result = self._target.compare_and_set(key, value, expected_version, lease=lease)
        returned = INT if result.succeeded else _entry_size(result.current)
        self._count("cas", len(key) + len(value) + 2 * INT + returned)
        return result

    def add(self, key: str, delta: int) -> int:
        total = self._target.add(key, delta)
        self._count("add", len(key) + 2 * INT)
        return total

    def delete(self, key: str) -> bool:
        existed = self._target.delete(key)
        self._count("delete", len(key) + 1)
        return existed

    def list(self, prefix: str) -> Listing:
        listing = self._target.list(prefix)
        size = sum(len(e.key) + _entry_size(e) for e in listing.entries)
        self._count("list", len(prefix) + INT + size)
        return listing

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        revision = self._target.wait(prefix, since, timeout)
        self._count("wait", len(prefix) + 3 * INT)
        return revision

    def grant(self, ttl: float) -> int:
        lease = self._target.grant(ttl)
        self._count("grant", 2 * INT)
        return lease

    def refresh(self, lease: int) -> bool:
        alive = self._target.refresh(lease)
        self._count("refresh", INT + 1)
        return alive

    def revoke(self, lease: int) -> None:
        self._target.revoke(lease)
        self._count("revoke", INT)

    def count_at(self, prefix: str, revision: int) -> int | None:
        counted = self._target.count_at(prefix, revision)
        if counted is not None:  # a backend without history answers without a request
            self._count("count_at", len(prefix.encode()) + 2 * INT)
        return counted

    def lease_info(self, lease: int) -> LeaseInfo | None:
        info = self._target.lease_info(lease)
        self._count("lease_info", 3 * INT)
        return info

    @property
    def generation(self) -> int:
        return self._inner.generation

    def state_age(self) -> float | None:
        return self._target.state_age()

    def close(self) -> None:
        """Closing a node's view leaves the shared store open."""
