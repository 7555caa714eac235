"""``memory://NAME``: an in-process store, for tests and single-process jobs.

Stores opened with the same name in one process share their keys; ``memory://``
with no name is private to the handle. Lease expiry follows the store's clock
(``time.monotonic`` unless a test passes another).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from rdzv.errors import ConfigurationError, StoreError
from rdzv.store.base import Capabilities, CasResult, Entry, Listing, Store
from rdzv.store.keyspace import KeySpace, LeaseNotFoundError

__all__ = ["MemoryStore"]

Clock = Callable[[], float]


class _Shared:
    def __init__(self, clock: Clock) -> None:
        self.keys = KeySpace()
        self.clock = clock
        self.changed = threading.Condition()


_named: dict[str, _Shared] = {}
_named_lock = threading.Lock()


class MemoryStore(Store):
    """A thread-safe in-process store."""

    capabilities = Capabilities(push_wait=True, leases=True, multi_process=False)

    def __init__(self, name: str = "", *, clock: Clock = time.monotonic) -> None:
        self.url = f"memory://{name}"
        if not name:
            self._shared = _Shared(clock)
        else:
            with _named_lock:
                self._shared = _named.setdefault(name, _Shared(clock))

    @classmethod
    def from_url(cls, url: str, **options: str) -> MemoryStore:
        """Registry factory for ``memory://NAME``; accepts no options."""
        if options:
            raise ConfigurationError(f"memory:// accepts no options, got: {', '.join(sorted(options))}")
        parts = urlsplit(url)
        return cls(parts.netloc + parts.path)

    def _now(self) -> float:
        return self._shared.clock()

    def _write(self, key: str, action: Callable[[KeySpace], object]) -> object:
        shared = self._shared
        with shared.changed:
            shared.keys.expire(self._now())
            try:
                result = action(shared.keys)
            except LeaseNotFoundError as exc:
                raise StoreError(str(exc), url=self.url, key=key) from exc
            shared.changed.notify_all()
            return result

    def get(self, key: str) -> Entry | None:
        with self._shared.changed:
            self._shared.keys.expire(self._now())
            return self._shared.keys.get(key)

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        result = self._write(key, lambda ks: ks.put(key, value, lease))
        assert isinstance(result, int)
        return result

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        result = self._write(key, lambda ks: ks.compare_and_set(key, value, expected_version, lease))
        assert isinstance(result, CasResult)
        return result

    def add(self, key: str, delta: int) -> int:
        result = self._write(key, lambda ks: ks.add(key, delta))
        assert isinstance(result, int)
        return result

    def delete(self, key: str) -> bool:
        return bool(self._write(key, lambda ks: ks.delete(key)))

    def list(self, prefix: str) -> Listing:
        with self._shared.changed:
            self._shared.keys.expire(self._now())
            return self._shared.keys.list(prefix)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        shared = self._shared
        deadline = self._now() + timeout
        with shared.changed:
            while True:
                now = self._now()
                if shared.keys.expire(now):
                    shared.changed.notify_all()
                revision = shared.keys.changed_since(prefix, since)
                if revision is not None:
                    return revision
                if now >= deadline:
                    return None
                wake = deadline
                expiry = shared.keys.next_expiry()
                if expiry is not None:
                    wake = min(wake, expiry)
                shared.changed.wait(max(wake - now, 0.001))

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ConfigurationError(f"lease ttl must be positive, got {ttl}")
        with self._shared.changed:
            return self._shared.keys.grant(ttl, self._now())

    def refresh(self, lease: int) -> bool:
        with self._shared.changed:
            self._shared.keys.expire(self._now())
            return self._shared.keys.refresh(lease, self._now())

    def revoke(self, lease: int) -> None:
        self._write("", lambda ks: ks.revoke(lease))

    def advance(self) -> None:
        """Wake waiters so they re-check leases (for tests driving a fake clock)."""
        self._write("", lambda ks: ks.expire(self._now()))
