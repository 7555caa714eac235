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
from rdzv.store.base import Capabilities, CasResult, Entry, LeaseInfo, Listing, Store
from rdzv.store.keyspace import KeySpace, LeaseNotFoundError

__all__ = ["MemoryStore"]

Clock = Callable[[], float]


class _Shared:
    """Keys shared by every handle of one named store, and who waits on which prefix."""

    def __init__(self, clock: Clock) -> None:
        self.keys = KeySpace()
        self.clock = clock
        self.lock = threading.Lock()
        self.waiters: dict[str, set[threading.Event]] = {}

    def wake(self, changed: list[str]) -> None:
        """Wake the waiters whose prefix covers a changed key (lock held)."""
        for prefix, events in self.waiters.items():
            if any(key.startswith(prefix) for key in changed):
                for event in events:
                    event.set()

    def expire(self, now: float) -> None:
        self.wake(self.keys.expire(now))


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
        with shared.lock:
            shared.expire(self._now())
            before = shared.keys.revision
            try:
                result = action(shared.keys)
            except LeaseNotFoundError as exc:
                raise StoreError(str(exc), url=self.url, key=key) from exc
            if shared.keys.revision != before:
                shared.wake(self._changed_keys(key, result))
            return result

    @staticmethod
    def _changed_keys(key: str, result: object) -> list[str]:
        # revoke and expire report the keys they deleted; other writes touch ``key``.
        return result if isinstance(result, list) else [key]

    def get(self, key: str) -> Entry | None:
        with self._shared.lock:
            self._shared.expire(self._now())
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
        with self._shared.lock:
            self._shared.expire(self._now())
            return self._shared.keys.list(prefix)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        shared = self._shared
        deadline = self._now() + timeout
        event = threading.Event()
        while True:
            with shared.lock:
                now = self._now()
                shared.expire(now)
                revision = shared.keys.changed_since(prefix, since)
                if revision is not None or now >= deadline:
                    return revision
                wake = min(deadline, shared.keys.next_expiry() or deadline)
                event.clear()
                shared.waiters.setdefault(prefix, set()).add(event)
            try:
                # A real-clock store wakes itself for lease expiry; a fake clock is
                # advanced by the test, which then calls ``advance()``.
                event.wait(max(wake - now, 0.001))
            finally:
                with shared.lock:
                    events = shared.waiters.get(prefix)
                    if events is not None:
                        events.discard(event)
                        if not events:
                            del shared.waiters[prefix]

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ConfigurationError(f"lease ttl must be positive, got {ttl}")
        with self._shared.lock:
            return self._shared.keys.grant(ttl, self._now())

    def refresh(self, lease: int) -> bool:
        with self._shared.lock:
            self._shared.expire(self._now())
            return self._shared.keys.refresh(lease, self._now())

    def lease_info(self, lease: int) -> LeaseInfo | None:
        with self._shared.lock:
            self._shared.expire(self._now())
            return self._shared.keys.lease_info(lease, self._now())

    def revoke(self, lease: int) -> None:
        self._write("", lambda ks: ks.revoke(lease))

    def advance(self) -> None:
        """Expire leases by the clock now and wake their waiters (tests with a fake clock)."""
        with self._shared.lock:
            self._shared.expire(self._now())
