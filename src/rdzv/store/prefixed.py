"""A store view that confines every key to a prefix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rdzv.store.base import CasResult, Entry, LeaseInfo, Listing, Store


class PrefixedStore(Store):
    """Every key is stored as ``prefix + key``; the prefix is hidden from callers."""

    def __init__(self, inner: Store, prefix: str) -> None:
        self._inner = inner
        self._prefix = prefix
        self.capabilities = inner.capabilities
        self.url = inner.url

    @property
    def prefix(self) -> str:
        return self._prefix

    def _strip(self, entry: Entry | None) -> Entry | None:
        if entry is None:
            return None
        return replace(entry, key=entry.key[len(self._prefix) :])

    def get(self, key: str) -> Entry | None:
        return self._strip(self._inner.get(self._prefix + key))

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return self._inner.put(self._prefix + key, value, lease=lease)

    def put_many(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        return self._inner.put_many([(self._prefix + key, value, lease) for key, value, lease in items])

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        result = self._inner.compare_and_set(self._prefix + key, value, expected_version, lease=lease)
        return CasResult(result.succeeded, self._strip(result.current))

    def add(self, key: str, delta: int) -> int:
        return self._inner.add(self._prefix + key, delta)

    def delete(self, key: str) -> bool:
        return self._inner.delete(self._prefix + key)

    def list(self, prefix: str) -> Listing:
        listing = self._inner.list(self._prefix + prefix)
        entries = tuple(e for e in (self._strip(e) for e in listing.entries) if e is not None)
        return Listing(entries, listing.revision)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        return self._inner.wait(self._prefix + prefix, since, timeout)

    def grant(self, ttl: float) -> int:
        return self._inner.grant(ttl)

    def refresh(self, lease: int) -> bool:
        return self._inner.refresh(lease)

    def count_at(self, prefix: str, revision: int) -> int | None:
        return self._inner.count_at(self._prefix + prefix, revision)

    def lease_info(self, lease: int) -> LeaseInfo | None:
        return self._inner.lease_info(lease)

    def revoke(self, lease: int) -> None:
        self._inner.revoke(lease)

    @property
    def generation(self) -> int:
        return self._inner.generation

    def state_age(self) -> float | None:
        return self._inner.state_age()

    def scoped(self, prefix: str) -> Store:
        return PrefixedStore(self._inner, self._prefix + prefix)
