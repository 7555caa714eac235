"""The store contract on ``file://``, plus its layout, options, errors and observer-clock leases."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from rdzv.errors import (
    ConfigurationError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from rdzv.registry import open_store
from rdzv.store.base import LeaseInfo
from rdzv.store.file.disk import key_to_name, name_to_key
from rdzv.store.file.store import FileStore
from rdzv.store.leasewatch import LeaseWatch
from rdzv.testing import FakeClock
from rdzv.testing.contract import StoreContract


class TestFileStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"file://{tmp_path / 'store'}?create=1"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


def _set_mtimes(root: Path, when: float) -> None:
    for path in root.rglob("*"):
        os.utime(path, (when, when))


# -- URL and options -----------------------------------------------------------


def test_open_store_creates_the_missing_directory_when_asked_and_applies_options(root: Path) -> None:
    with open_store(
        f"file://{root / 'a' / 'b'}?poll=0.05&poll_min=0.001&timeout=2&fsync=1&create=1"
    ) as store:
        assert isinstance(store, FileStore)
        store.put("k", b"v")
        assert store.get("k") is not None
    assert (root / "a" / "b" / "meta").is_file()


def test_unknown_option_is_rejected_naming_the_valid_ones(root: Path) -> None:
    with pytest.raises(ConfigurationError, match="bogus") as info:
        open_store(f"file://{root}?bogus=1")
    for option in ("poll", "poll_min", "timeout", "fsync"):
        assert option in str(info.value)


@pytest.mark.parametrize("url", ["file://", "file://relative/dir", "file://host/abs/dir"])
def test_relative_empty_or_remote_paths_are_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="absolute"):
        open_store(url)


@pytest.mark.parametrize("query", ["poll=0", "poll=fast", "timeout=-1", "fsync=maybe"])
def test_bad_option_values_are_rejected(root: Path, query: str) -> None:
    with pytest.raises(ConfigurationError, match=query.split("=")[0]):
        open_store(f"file://{root}?{query}")


def test_relative_path_is_rejected_by_the_constructor() -> None:
    with pytest.raises(ConfigurationError, match="absolute"):
        FileStore("relative/dir")


def test_capabilities_are_polled_multi_host_without_high_availability() -> None:
    caps = FileStore.capabilities
    assert (caps.push_wait, caps.leases, caps.multi_process, caps.multi_host) == (False, True, True, True)
    assert caps.high_availability is False


# -- layout --------------------------------------------------------------------

_AWKWARD_KEYS = ["", ".", "..", "../escape", "/abs", "a/../../b", "nul\0byte", ".tmp-x", "ключ/🙂", "A%2F"]


def test_awkward_keys_stay_inside_the_keys_directory_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FileStore(root, create=True) as store:
        for key in _AWKWARD_KEYS:
            store.put(key, key.encode())
        assert sorted(tmp_path.iterdir()) == [root]
        assert {p.parent for p in (root / "keys").rglob("*")} == {root / "keys"}
        assert [(e.key, e.value) for e in store.list("")] == [(k, k.encode()) for k in sorted(_AWKWARD_KEYS)]


def test_long_keys_are_hashed_to_short_names_and_still_listed(root: Path) -> None:
    keys = ["p/" + "x" * 1000, "p/" + "ü" * 300, "q/" + "y" * 500]
    with FileStore(root) as store:
        for key in keys:
            store.put(key, b"v")
        assert all(len(name) < 200 for name in os.listdir(root / "keys"))
        assert store.get(keys[1]) is not None
        assert [e.key for e in store.list("p/")] == sorted(keys[:2])


@pytest.mark.parametrize("key", ["plain", "a/b", "ü 🙂", "%", ""])
def test_key_names_decode_back_to_the_key(key: str) -> None:
    name = key_to_name(key)
    assert "/" not in name
    assert name_to_key(name) == key


def test_tombstones_are_pruned_and_old_waiters_are_woken_not_stranded(root: Path) -> None:
    with FileStore(root, prune_after=4) as store:
        store.put("gone", b"x")
        deleted_at = store.put("w/k", b"x")
        store.delete("gone")
        for i in range(10):
            store.put(f"filler{i}", b"y")
        assert key_to_name("gone") not in os.listdir(root / "keys")
        assert store.wait("w/", deleted_at - 1, 5) is not None


def test_add_on_a_value_that_is_not_a_counter_raises_store_error(root: Path) -> None:
    with FileStore(root) as store:
        store.put("n", b"seven")
        with pytest.raises(StoreError, match="counter"):
            store.add("n", 1)


def test_add_keeps_the_keys_lease(root: Path) -> None:
    with FileStore(root) as store:
        lease = store.grant(30)
        store.put("n", b"1", lease=lease)
        assert store.add("n", 1) == 2
        store.revoke(lease)
        assert store.get("n") is None


# -- errors ---------------------------------------------------------------------


def test_corrupt_entry_raises_store_corrupted_naming_the_file(root: Path) -> None:
    with FileStore(root) as store:
        (root / "keys" / key_to_name("bad")).write_bytes(b"\xc1 not msgpack")
        with pytest.raises(StoreCorruptedError, match=key_to_name("bad")):
            store.get("bad")


@pytest.mark.parametrize("content", [b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa6format\x63"])
def test_corrupt_meta_raises_store_corrupted_naming_the_file(root: Path, content: bytes) -> None:
    with FileStore(root) as store:
        (root / "meta").write_bytes(content)
        with pytest.raises(StoreCorruptedError, match="meta"):
            store.put("k", b"v")


def test_corrupt_lease_raises_store_corrupted_naming_the_file(root: Path) -> None:
    with FileStore(root) as store:
        lease = store.grant(30)
        (root / "leases" / str(lease)).write_bytes(b"\x92\x01\x02")
        with pytest.raises(StoreCorruptedError, match=f"leases/{lease}"):
            store.refresh(lease)


def test_io_error_raises_store_unavailable(root: Path) -> None:
    with FileStore(root) as store:
        (root / "keys").rmdir()
        (root / "keys").write_bytes(b"")
        with pytest.raises(StoreUnavailableError, match="keys"):
            store.put("k", b"v")


def test_a_directory_that_is_a_file_is_refused_as_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigurationError, match="is not a directory"):
        FileStore(tmp_path / "file", create=True)


def test_a_missing_directory_is_refused_unless_create_is_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"does not exist.*\?create=1"):
        open_store(f"file://{tmp_path / 'typo'}")
    assert not (tmp_path / "typo").exists()


def test_the_filesystem_root_is_refused_even_with_create() -> None:
    with pytest.raises(ConfigurationError, match="filesystem root"):
        open_store("file:///?create=1")


def test_a_non_empty_directory_that_is_not_a_store_is_refused(root: Path) -> None:
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigurationError, match=r"not empty and not an rdzv store.*thesis\.tex"):
        open_store(f"file://{root}?create=1")
    assert sorted(p.name for p in root.iterdir()) == ["thesis.tex"]


def test_an_existing_store_directory_is_reopened(root: Path) -> None:
    with FileStore(root) as store:
        store.put("k", b"v")
    with open_store(f"file://{root}") as again:
        entry = again.get("k")
        assert entry is not None
        assert entry.value == b"v"


def test_lock_held_too_long_raises_store_timeout(root: Path) -> None:
    with FileStore(root, timeout=0.05) as store:
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with pytest.raises(StoreTimeoutError, match="lock"):
                store.put("k", b"v")
        finally:
            os.close(fd)
        store.put("k", b"v")


# -- leases judged by the observer's clock ---------------------------------------


def test_expiry_is_judged_by_the_observers_clock_not_file_mtimes(root: Path) -> None:
    clock = FakeClock()
    with FileStore(root) as holder, FileStore(root, clock=clock) as observer:
        lease = holder.grant(10)
        holder.put("k", b"v", lease=lease)
        assert observer.get("k") is not None  # first sight: a full ttl from now
        _set_mtimes(root, time.time() - 10**6)  # ancient mtimes do not expire it
        clock.advance(9.9)
        assert observer.get("k") is not None
        _set_mtimes(root, time.time() + 10**6)  # mtimes in the future do not keep it
        clock.advance(0.2)
        assert observer.get("k") is None
        assert holder.refresh(lease) is False


def test_each_refresh_gives_the_lease_a_new_ttl_in_the_observers_eyes(root: Path) -> None:
    clock = FakeClock()
    with FileStore(root) as holder, FileStore(root, clock=clock) as observer:
        lease = holder.grant(10)
        holder.put("k", b"v", lease=lease)
        assert observer.get("k") is not None
        clock.advance(8)
        assert holder.refresh(lease)
        assert observer.get("k") is not None  # the counter moved: seen at t=8
        clock.advance(9.9)
        assert observer.get("k") is not None
        clock.advance(0.2)
        assert observer.get("k") is None


def test_a_lease_first_seen_late_gets_a_full_ttl_whatever_the_holders_clock(root: Path) -> None:
    holder_clock, observer_clock = FakeClock(start=1e9), FakeClock(start=5.0)
    with FileStore(root, clock=holder_clock) as holder:
        lease = holder.grant(10)
        holder.put("k", b"v", lease=lease)
    holder_clock.advance(1e6)
    with FileStore(root, clock=observer_clock) as late:
        assert late.get("k") is not None
        observer_clock.advance(9.9)
        assert late.get("k") is not None
        observer_clock.advance(0.2)
        assert late.get("k") is None


def test_lease_info_reports_time_left_by_the_observers_clock(root: Path) -> None:
    clock = FakeClock()
    with FileStore(root) as holder, FileStore(root, clock=clock) as observer:
        lease = holder.grant(10)
        assert observer.lease_info(lease) == LeaseInfo(10, 10)
        clock.advance(4)
        assert observer.lease_info(lease) == LeaseInfo(10, 6)
        holder.revoke(lease)
        assert observer.lease_info(lease) is None


def test_holder_that_missed_its_ttl_by_its_own_clock_cannot_refresh(root: Path) -> None:
    clock = FakeClock()
    with FileStore(root, clock=clock) as holder:
        lease = holder.grant(10)
        holder.put("k", b"v", lease=lease)
        clock.advance(10.5)
        assert holder.refresh(lease) is False
        assert holder.get("k") is None


def test_lease_watch_judges_only_a_counter_unchanged_for_the_whole_ttl() -> None:
    watch = LeaseWatch()
    assert not watch.observe(1, 0, 10, now=0)
    assert not watch.observe(1, 0, 10, now=9.9)
    assert not watch.observe(1, 1, 10, now=15)
    assert watch.next_deadline() == 25
    assert not watch.observe(1, 1, 10, now=24.9)
    assert watch.observe(1, 1, 10, now=25)
    watch.retain(set())
    assert len(watch) == 0
