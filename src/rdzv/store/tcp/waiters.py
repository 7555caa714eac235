"""Blocked ``wait`` requests, indexed by prefix.

A change to key ``k`` must find the waiters whose prefix starts ``k``. The index
maps each prefix to its waiters and counts the distinct prefix lengths in use, so
a change costs one dict lookup per distinct length (``k[:n]``), independent of
the number of waiters and of keys: 4,096 waiters on one prefix are one bucket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

__all__ = ["Waiter", "WaiterIndex"]


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Waiter:
    """One blocked ``wait``: woken at most once, by a change or by its timeout."""

    __slots__ = ("_on_done", "done", "prefix", "since", "timer")

    def __init__(self, prefix: str, since: int, on_done: Callable[[int | None], None]) -> None:
        self.prefix = prefix
        self.since = since
        self.done = False
        self.timer: Cancellable | None = None
        """Its timeout, cancelled when its connection closes."""
        self._on_done = on_done

    def finish(self, revision: int | None) -> None:
        if not self.done:
            self.done = True
            self._on_done(revision)


class WaiterIndex:
    """Waiters by prefix; ``wake`` finishes those a set of changed keys concerns."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, set[Waiter]] = {}
        self._lengths: Counter[int] = Counter()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, waiter: Waiter) -> None:
        bucket = self._by_prefix.get(waiter.prefix)
        if bucket is None:
            bucket = self._by_prefix[waiter.prefix] = set()
            self._lengths[len(waiter.prefix)] += 1
        bucket.add(waiter)
        self._count += 1

    def remove(self, waiter: Waiter) -> None:
        bucket = self._by_prefix.get(waiter.prefix)
        if bucket is None or waiter not in bucket:
            return
        bucket.discard(waiter)
        self._count -= 1
        if not bucket:
            del self._by_prefix[waiter.prefix]
            self._lengths[len(waiter.prefix)] -= 1
            if not self._lengths[len(waiter.prefix)]:
                del self._lengths[len(waiter.prefix)]

    def wake(self, keys: Iterable[str], revision: int) -> int:
        """Finish every waiter whose prefix starts one of ``keys``; return how many."""
        prefixes: set[str] = set()
        lengths = list(self._lengths)
        for key in keys:
            for n in lengths:
                if n <= len(key) and key[:n] in self._by_prefix:
                    prefixes.add(key[:n])
        woken = 0
        for prefix in prefixes:
            bucket = self._by_prefix[prefix]
            ready = [w for w in bucket if revision > w.since]
            for waiter in ready:
                self.remove(waiter)
                waiter.finish(revision)
            woken += len(ready)
        return woken
