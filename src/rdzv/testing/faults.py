"""A store wrapper that injects the failures real stores have.

::

    faulty = FaultyStore(MemoryStore())
    faulty.fail("get", StoreUnavailableError("down"), times=2)   # raise before acting
    faulty.lose_reply("compare_and_set")                         # act, then raise

A lost reply is the hard case: the write happened, the caller cannot know.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rdzv.errors import StoreError, StoreUnavailableError
from rdzv.store.base import CasResult, Entry, LeaseInfo, Listing, Store

T = TypeVar("T")


@dataclass
class _Fault:
    error: StoreError
    times: int
    after: bool  # apply the operation first (a lost reply)
    key_suffix: str  # only calls on keys ending so ("" for all)


class FaultyStore(Store):
    """Delegates to ``inner`` except where a fault is armed for an operation."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities
        self.url = inner.url
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.Lock()
        self.injected: list[str] = []

    def fail(self, op: str, error: StoreError | None = None, *, times: int = 1, key_suffix: str = "") -> None:
        """The next ``times`` calls of ``op`` (on keys ending ``key_suffix``) raise without acting."""
        error = error or StoreUnavailableError(f"injected: {op} failed")
        self._arm(op, _Fault(error, times, after=False, key_suffix=key_suffix))

    def lose_reply(self, op: str, *, times: int = 1, key_suffix: str = "") -> None:
        """The next ``times`` calls of ``op`` act, then raise as if the reply was lost."""
        error = StoreUnavailableError(f"injected: {op} reply lost; the request may have been applied")
        self._arm(op, _Fault(error, times, after=True, key_suffix=key_suffix))

    def _arm(self, op: str, fault: _Fault) -> None:
        if not callable(getattr(self._inner, op, None)):
            raise ValueError(f"{op!r} is not a store operation")
        with self._lock:
            self._faults.setdefault(op, []).append(fault)

    def _call(self, op: str, action: Callable[[], T], key: str = "") -> T:
        with self._lock:
            queue = self._faults.get(op)
            fault = queue[0] if queue else None
            if fault is not None and not key.endswith(fault.key_suffix):
                fault = None
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)  # type: ignore[union-attr]
                self.injected.append(op)
        if fault is None:
            return action()
        if fault.after:
            action()
        raise fault.error

    def get(self, key: str) -> Entry | None:
        return self._call("get", lambda: self._inner.get(key), key)

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return self._call("put", lambda: self._inner.put(key, value, lease=lease), key)

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        return self._call(
            "compare_and_set",
            lambda: self._inner.compare_and_set(key, value, expected_version, lease=lease),
            key,
        )

    def add(self, key: str, delta: int) -> int:
        return self._call("add", lambda: self._inner.add(key, delta), key)

    def delete(self, key: str) -> bool:
        return self._call("delete", lambda: self._inner.delete(key), key)

    def list(self, prefix: str) -> Listing:
        return self._call("list", lambda: self._inner.list(prefix), prefix)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        return self._call("wait", lambda: self._inner.wait(prefix, since, timeout), prefix)

    def grant(self, ttl: float) -> int:
        return self._call("grant", lambda: self._inner.grant(ttl))

    def refresh(self, lease: int) -> bool:
        return self._call("refresh", lambda: self._inner.refresh(lease))

    def revoke(self, lease: int) -> None:
        self._call("revoke", lambda: self._inner.revoke(lease))

    def count_at(self, prefix: str, revision: int) -> int | None:
        return self._call("count_at", lambda: self._inner.count_at(prefix, revision), prefix)

    def lease_info(self, lease: int) -> LeaseInfo | None:
        return self._inner.lease_info(lease)

    @property
    def generation(self) -> int:
        return self._inner.generation

    def state_age(self) -> float | None:
        return self._inner.state_age()

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
