"""The store protocol every backend provides.

Keys are ``str``, values ``bytes``. Every change to a store (put, delete, lease
expiry) is stamped with a store-wide *revision* that strictly increases; an
entry's ``version`` is the revision of its last change, so ``0`` always means
"absent". ``wait`` blocks until something under a prefix changed after a given
revision. A lost compare-and-set is a return value, never an exception.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Capabilities", "CasResult", "Entry", "LeaseInfo", "Listing", "Store"]


@dataclass(frozen=True)
class Entry:
    """One key as read from a store."""

    key: str
    value: bytes
    version: int
    lease: int | None = None


@dataclass(frozen=True)
class CasResult:
    """Outcome of ``compare_and_set``: on a lost race, ``current`` is what won."""

    succeeded: bool
    current: Entry | None


@dataclass(frozen=True)
class Listing:
    """Entries under a prefix, and the store revision they were read at."""

    entries: tuple[Entry, ...]
    revision: int

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as its store sees it, by the store's own clock."""

    ttl: float
    remaining: float

    @property
    def since_refresh(self) -> float:
        """Seconds since the holder last refreshed it (its last heartbeat)."""
        return max(self.ttl - self.remaining, 0.0)


@dataclass(frozen=True)
class Capabilities:
    """What a backend offers; a caller can require some (``Store.require``)."""

    push_wait: bool = False
    """``wait`` is pushed by the server rather than polled."""
    leases: bool = True
    """Keys bound to a lease vanish when it expires."""
    high_availability: bool = False
    """The store survives the loss of one server."""
    multi_host: bool = False
    """Processes on different machines can share the store."""
    multi_process: bool = True
    """Processes on one machine can share the store."""
    failover: bool = False
    """The client may move to another host whose state starts empty (tcp with several
    candidate hosts): two hosts may serve at once, so the split-brain guard applies."""


class Store(abc.ABC):
    """Abstract store. Backends subclass it; ``rdzv.testing`` checks them."""

    capabilities: Capabilities = Capabilities()
    url: str = ""

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """Return the entry at ``key``, or ``None`` if absent."""

    @abc.abstractmethod
    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write ``value`` unconditionally; return the new version."""

    def put_many(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        """Write several ``(key, value, lease)`` items; return their new versions.

        A backend may send them in one round trip and apply all or none (tcp
        does: a missing lease refuses the whole batch with ``StoreError``). This
        default writes them one by one, stopping at the first failure.
        """
        return [self.put(key, value, lease=lease) for key, value, lease in items]

    @abc.abstractmethod
    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        """Write only if the key's version is ``expected_version`` (0: absent)."""

    @abc.abstractmethod
    def add(self, key: str, delta: int) -> int:
        """Atomically add ``delta`` to the integer at ``key`` (absent: 0); return the sum.

        Counters are stored as ASCII decimal bytes.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key``; return whether it existed."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Listing:
        """Return every entry whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        """Block until a key under ``prefix`` changed at a revision after ``since``.

        Returns a revision after ``since`` (callers re-read what they need), or
        ``None`` when ``timeout`` seconds passed first. May return early.
        """

    @abc.abstractmethod
    def grant(self, ttl: float) -> int:
        """Create a lease of ``ttl`` seconds; return its id."""

    @abc.abstractmethod
    def refresh(self, lease: int) -> bool:
        """Extend a lease by its ttl; ``False`` if it already expired or is unknown."""

    @abc.abstractmethod
    def revoke(self, lease: int) -> None:
        """End a lease now, deleting its keys."""

    def count_at(self, prefix: str, revision: int) -> int | None:
        """How many keys were under ``prefix`` at ``revision``, where the backend keeps
        history (etcd); ``None`` when it cannot tell. One read, no contention."""
        return None

    def lease_info(self, lease: int) -> LeaseInfo | None:
        """The lease's ttl and time left, where the backend can tell; ``None`` if unknown."""
        return None

    @property
    def generation(self) -> int:
        """How many times this client found the store's state lost (a restarted server,
        a move to another host). Revisions and leases from an older generation mean
        nothing to the store; a call spanning a change raises ``StoreStateLostError``."""
        return 0

    def state_age(self) -> float | None:
        """Seconds since the store's state began (its server started), by the store's
        clock; ``None`` when the state is durable or its age unknown."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections and files. Idempotent."""

    def scoped(self, prefix: str) -> Store:
        """A view of this store in which every key is under ``prefix``."""
        from rdzv.store.prefixed import PrefixedStore

        return PrefixedStore(self, prefix)

    def require(self, **capabilities: bool) -> None:
        """Raise ``ConfigurationError`` unless this store has the named capabilities."""
        from rdzv.errors import ConfigurationError

        missing = [
            name for name, wanted in capabilities.items() if wanted and not getattr(self.capabilities, name)
        ]
        if missing:
            raise ConfigurationError(f"store {self.url!r} lacks capabilities: {', '.join(missing)}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
