"""The rendezvous survives the store failures real stores have (``rdzv.testing.faults``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from rdzv import (
    AuthenticationError,
    ConfigurationError,
    RdzvError,
    Rendezvous,
    RendezvousInfo,
    StoreStateLostError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from rdzv.store.memory import MemoryStore
from rdzv.testing.faults import FaultyStore

_names = itertools.count()
PATIENCE = 20.0


@pytest.fixture
def store() -> Iterator[FaultyStore]:
    faulty = FaultyStore(MemoryStore(f"faults-{next(_names)}"))
    yield faulty
    faulty.close()


def rendezvous_pair(store: FaultyStore) -> list[RendezvousInfo]:
    """Two nodes rendezvous; a hang fails within PATIENCE instead of blocking the suite."""
    nodes = [
        Rendezvous(store, "job", 2, 2, node_id=f"n{i}", addr="127.0.0.1", join_timeout=PATIENCE)
        for i in range(2)
    ]
    try:
        with ThreadPoolExecutor(2) as pool:
            return [f.result(PATIENCE) for f in [pool.submit(n.next_rendezvous) for n in nodes]]
    finally:
        for n in nodes:
            n.shutdown()


def assert_one_round(infos: list[RendezvousInfo]) -> None:
    assert sorted(i.rank for i in infos) == [0, 1]
    assert {i.round for i in infos} == {1}


def test_round_completes_when_the_claim_was_applied_but_its_reply_lost(store: FaultyStore) -> None:
    store.lose_reply("compare_and_set", key_suffix="/claim/1")
    assert_one_round(rendezvous_pair(store))
    assert store.injected == ["compare_and_set"]


def test_round_completes_when_the_round_document_reply_was_lost(store: FaultyStore) -> None:
    store.lose_reply("compare_and_set", key_suffix="/doc")
    assert_one_round(rendezvous_pair(store))
    assert store.injected == ["compare_and_set"]


def test_lost_reply_on_the_lobby_write_and_counter_is_harmless(store: FaultyStore) -> None:
    store.lose_reply("put", key_suffix="/n0")
    store.lose_reply("add")
    assert_one_round(rendezvous_pair(store))
    assert sorted(store.injected) == ["add", "put"]


@pytest.mark.parametrize("error", [StoreUnavailableError("down"), StoreTimeoutError("slow")])
def test_transient_errors_are_retried(store: FaultyStore, error: Exception) -> None:
    store.fail("get", error, times=3)  # type: ignore[arg-type]
    store.fail("wait", error, times=2)  # type: ignore[arg-type]
    assert_one_round(rendezvous_pair(store))
    assert store.injected.count("get") == 3


def test_a_store_down_past_the_join_timeout_raises_its_error(store: FaultyStore) -> None:
    store.fail("get", times=10_000)
    node = Rendezvous(store, "job", 2, 2, addr="127.0.0.1", join_timeout=0.3)
    with pytest.raises(StoreUnavailableError, match="injected"):
        node.next_rendezvous()
    node.shutdown()


@pytest.mark.parametrize(
    "error",
    [
        StoreStateLostError("restarted, state lost"),
        AuthenticationError("bad token"),
        ConfigurationError("bad"),
    ],
)
def test_errors_that_waiting_cannot_clear_are_raised_at_once(store: FaultyStore, error: RdzvError) -> None:
    store.fail("get", error, times=10_000)  # type: ignore[arg-type]
    node = Rendezvous(store, "job", 2, 2, addr="127.0.0.1", join_timeout=30)
    start = time.monotonic()
    with pytest.raises(type(error)):
        node.next_rendezvous()
    assert time.monotonic() - start < 5.0  # not the 30 s join timeout
    assert store.injected.count("get") == 1
    node.shutdown()


def test_faults_only_match_their_operation_and_key(store: FaultyStore) -> None:
    store.fail("put", key_suffix="/x")
    store.put("a/y", b"1")
    with pytest.raises(StoreUnavailableError):
        store.put("a/x", b"1")
    store.put("a/x", b"2")
    assert store.get("a/x").value == b"2"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not a store operation"):
        store.fail("explode")
