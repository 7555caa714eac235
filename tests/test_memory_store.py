"""The store contract on the in-process memory store, plus its fake-clock leases."""

from __future__ import annotations

import itertools

import pytest

from rdzv.store.memory import MemoryStore
from rdzv.testing import FakeClock
from rdzv.testing.contract import StoreContract

_names = itertools.count()


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self) -> str:
        return f"memory://contract-{next(_names)}"


def test_lease_expires_only_when_the_store_clock_passes_its_ttl() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.grant(10)
    store.put("k", b"v", lease=lease)
    clock.advance(9.9)
    assert store.get("k") is not None
    clock.advance(0.2)
    assert store.get("k") is None


def test_refresh_pushes_expiry_a_full_ttl_from_now() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    lease = store.grant(10)
    store.put("k", b"v", lease=lease)
    clock.advance(8)
    assert store.refresh(lease)
    clock.advance(8)
    assert store.get("k") is not None
    clock.advance(3)
    assert store.get("k") is None


def test_unnamed_memory_stores_are_private() -> None:
    MemoryStore().put("k", b"v")
    assert MemoryStore().get("k") is None
