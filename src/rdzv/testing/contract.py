"""The store contract: one suite that every backend must pass, on a real server.

Subclass :class:`StoreContract` in a test module and provide a ``store_url``
fixture returning the URL of a fresh, empty store. Lease tests use ttls of a
fraction of a second and wait for the expiry with ``Store.wait``, not sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from rdzv.errors import StoreError
from rdzv.registry import open_store
from rdzv.store.base import Store

__all__ = ["StoreContract"]

SHORT_TTL = 0.5
PATIENCE = 10.0


class StoreContract:
    """Behaviour every ``rdzv.store.Store`` backend must show."""

    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError("a StoreContract subclass must provide a store_url fixture")

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        with open_store(store_url) as handle:
            yield handle

    @pytest.fixture
    def other(self, store_url: str) -> Iterator[Store]:
        """A second handle on the same store, as another node would have."""
        with open_store(store_url) as handle:
            yield handle

    # -- get / put --------------------------------------------------------

    def test_get_of_absent_key_returns_none(self, store: Store) -> None:
        assert store.get("absent") is None

    def test_put_then_get_returns_value_and_positive_version(self, store: Store) -> None:
        version = store.put("k", b"v1")
        entry = store.get("k")
        assert entry is not None
        assert (entry.key, entry.value, entry.version) == ("k", b"v1", version)
        assert version > 0

    def test_versions_strictly_increase_across_keys(self, store: Store) -> None:
        versions = [store.put(f"k{i}", b"x") for i in range(5)]
        versions.append(store.put("k0", b"y"))
        assert versions == sorted(set(versions))

    def test_binary_values_and_unicode_keys_round_trip(self, store: Store, other: Store) -> None:
        value = bytes(range(256)) * 16
        store.put("ключ/ü/🙂 space", value)
        entry = other.get("ключ/ü/🙂 space")
        assert entry is not None
        assert entry.value == value

    def test_empty_value_is_distinct_from_absent(self, store: Store) -> None:
        store.put("empty", b"")
        entry = store.get("empty")
        assert entry is not None
        assert entry.value == b""

    def test_writes_are_visible_to_another_handle(self, store: Store, other: Store) -> None:
        store.put("shared", b"1")
        entry = other.get("shared")
        assert entry is not None
        assert entry.value == b"1"

    # -- compare_and_set --------------------------------------------------

    def test_cas_with_version_zero_creates_absent_key(self, store: Store) -> None:
        result = store.compare_and_set("doc", b"a", 0)
        assert result.succeeded
        assert result.current is not None
        assert result.current.value == b"a"

    def test_cas_create_on_existing_key_returns_current_value(self, store: Store) -> None:
        store.put("doc", b"first")
        result = store.compare_and_set("doc", b"second", 0)
        assert not result.succeeded
        assert result.current is not None
        assert result.current.value == b"first"

    def test_stale_version_cas_returns_current_value(self, store: Store) -> None:
        v1 = store.put("doc", b"one")
        store.put("doc", b"two")
        result = store.compare_and_set("doc", b"three", v1)
        assert not result.succeeded
        assert result.current is not None
        assert result.current.value == b"two"
        assert store.get("doc").value == b"two"  # type: ignore[union-attr]

    def test_cas_with_current_version_succeeds_and_bumps_version(self, store: Store) -> None:
        v1 = store.put("doc", b"one")
        result = store.compare_and_set("doc", b"two", v1)
        assert result.succeeded
        assert result.current is not None
        assert result.current.version > v1

    def test_cas_on_absent_key_with_nonzero_version_fails(self, store: Store) -> None:
        result = store.compare_and_set("nothing", b"x", 7)
        assert not result.succeeded
        assert result.current is None

    def test_concurrent_cas_has_exactly_one_winner(self, store_url: str) -> None:
        wins: list[bool] = []

        def contend() -> None:
            with open_store(store_url) as handle:
                wins.append(handle.compare_and_set("race", b"me", 0).succeeded)

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PATIENCE)
        assert sorted(wins) == [False] * 7 + [True]

    # -- add ----------------------------------------------------------------

    def test_add_starts_from_zero_and_accepts_negative_deltas(self, store: Store) -> None:
        assert store.add("n", 5) == 5
        assert store.add("n", -2) == 3
        assert store.get("n").value == b"3"  # type: ignore[union-attr]

    def test_concurrent_adds_lose_no_increment(self, store_url: str) -> None:
        def bump() -> None:
            with open_store(store_url) as handle:
                for _ in range(20):
                    handle.add("counter", 1)

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PATIENCE)
        with open_store(store_url) as handle:
            assert handle.add("counter", 0) == 80

    # -- delete / list ------------------------------------------------------

    def test_delete_reports_whether_key_existed(self, store: Store) -> None:
        store.put("gone", b"x")
        assert store.delete("gone") is True
        assert store.delete("gone") is False
        assert store.get("gone") is None

    def test_list_returns_only_the_prefix_sorted_by_key(self, store: Store) -> None:
        for key in ["a/2", "a/1", "ab", "b/1", "a/3"]:
            store.put(key, key.encode())
        listing = store.list("a/")
        assert [e.key for e in listing] == ["a/1", "a/2", "a/3"]
        assert [e.value for e in listing] == [b"a/1", b"a/2", b"a/3"]
        assert listing.revision >= max(e.version for e in listing)

    def test_list_of_empty_prefix_is_empty(self, store: Store) -> None:
        assert len(store.list("nothing/")) == 0

    # -- wait ---------------------------------------------------------------

    def test_wait_returns_at_once_for_a_change_after_since(self, store: Store) -> None:
        version = store.put("w/k", b"x")
        assert store.wait("w/", version - 1, PATIENCE) is not None

    def test_wait_times_out_with_none_when_nothing_changes(self, store: Store) -> None:
        version = store.put("w/k", b"x")
        assert store.wait("w/", version, 0.2) is None

    def test_zero_timeout_wait_reports_a_put_after_since(self, store: Store, other: Store) -> None:
        since = store.put("z/a", b"1")
        other.put("z/b", b"2")
        assert store.wait("z/", since, 0) is not None

    def test_zero_timeout_wait_reports_a_delete_after_since(self, store: Store, other: Store) -> None:
        store.put("z/a", b"1")
        since = store.put("z/b", b"2")
        other.delete("z/a")
        assert store.wait("z/", since, 0) is not None

    def test_zero_timeout_wait_is_none_when_nothing_changed(self, store: Store, other: Store) -> None:
        since = store.put("z/a", b"1")
        other.put("elsewhere", b"2")
        assert store.wait("z/", since, 0) is None

    def test_count_at_is_the_number_of_keys_then_or_unknown(self, store: Store) -> None:
        store.put("c/1", b"")
        then = store.put("c/2", b"")
        store.put("c/3", b"")
        store.delete("c/1")
        assert store.count_at("c/", then) in (None, 2)

    def test_wait_ignores_changes_outside_the_prefix(self, store: Store, other: Store) -> None:
        version = store.put("w/k", b"x")
        other.put("elsewhere", b"y")
        assert store.wait("w/", version, 0.2) is None

    def test_wait_is_woken_by_a_put_from_another_handle(self, store: Store, other: Store) -> None:
        since = store.put("w/k", b"x")
        woken: list[int | None] = []
        waiter = threading.Thread(target=lambda: woken.append(store.wait("w/", since, PATIENCE)))
        waiter.start()
        other.put("w/new", b"y")
        waiter.join(PATIENCE)
        assert woken
        assert woken[0] is not None
        assert woken[0] > since

    def test_wait_is_woken_by_a_delete(self, store: Store, other: Store) -> None:
        since = store.put("w/k", b"x")
        woken: list[int | None] = []
        waiter = threading.Thread(target=lambda: woken.append(store.wait("w/", since, PATIENCE)))
        waiter.start()
        other.delete("w/k")
        waiter.join(PATIENCE)
        assert woken
        assert woken[0] is not None
        assert woken[0] > since

    def test_put_many_writes_every_item_with_increasing_versions(self, store: Store, other: Store) -> None:
        lease = store.grant(30)
        versions = store.put_many([("m/a", b"1", lease), ("m/b", b"2", None)])
        assert len(versions) == 2
        assert 0 < versions[0] < versions[1]
        assert [(e.key, e.value, e.version) for e in other.list("m/")] == [
            ("m/a", b"1", versions[0]),
            ("m/b", b"2", versions[1]),
        ]
        store.revoke(lease)
        assert [e.key for e in other.list("m/")] == ["m/b"]

    def test_put_many_with_a_missing_lease_raises_store_error(self, store: Store) -> None:
        lease = store.grant(30)
        store.revoke(lease)
        with pytest.raises(StoreError):
            store.put_many([("n/a", b"1", lease)])
        assert store.get("n/a") is None

    # -- leases -------------------------------------------------------------

    def test_revoking_a_lease_deletes_its_keys(self, store: Store, other: Store) -> None:
        lease = store.grant(30)
        store.put("l/a", b"1", lease=lease)
        store.put("l/b", b"2", lease=lease)
        store.put("l/keep", b"3")
        store.revoke(lease)
        assert [e.key for e in other.list("l/")] == ["l/keep"]

    def test_expired_lease_deletes_its_keys_and_wakes_waiters(self, store: Store, other: Store) -> None:
        lease = store.grant(SHORT_TTL)
        since = store.put("l/a", b"1", lease=lease)
        assert other.wait("l/", since, PATIENCE) is not None
        assert other.get("l/a") is None
        assert store.refresh(lease) is False

    def test_refreshed_lease_keeps_its_keys(self, store: Store) -> None:
        lease = store.grant(30)
        store.put("l/a", b"1", lease=lease)
        assert store.refresh(lease) is True
        assert store.get("l/a") is not None

    def test_entry_reports_its_lease(self, store: Store) -> None:
        lease = store.grant(30)
        store.put("l/a", b"1", lease=lease)
        assert store.get("l/a").lease == lease  # type: ignore[union-attr]

    def test_put_with_unknown_lease_raises_store_error(self, store: Store) -> None:
        lease = store.grant(30)
        store.revoke(lease)
        with pytest.raises(StoreError):
            store.put("l/a", b"1", lease=lease)

    # -- views and lifecycle ----------------------------------------------

    def test_scoped_view_isolates_keys(self, store: Store) -> None:
        scoped = store.scoped("job1/")
        scoped.put("x", b"1")
        assert store.get("job1/x") is not None
        assert [e.key for e in scoped.list("")] == ["x"]
        assert store.scoped("job2/").get("x") is None

    def test_close_is_idempotent(self, store_url: str) -> None:
        handle = open_store(store_url)
        handle.close()
        handle.close()
