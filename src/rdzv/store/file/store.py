"""``file:///abs/dir``: a store in a directory that every node mounts (NFS, Lustre).

No server: every handle reads the directory and mutates it under an exclusive
``flock``. ``wait`` polls ``meta`` (one small file) with backoff and scans keys
only when the store revision moved. Leases are judged by each observer's own
monotonic clock from a refresh counter (see :mod:`rdzv.store.leasewatch`), so
clock differences between hosts cannot matter. See ``docs/file-store.md``.

URL options: ``poll`` (longest wait between polls, s; default 0.25), ``poll_min``
(first poll interval, s; default 0.01), ``timeout`` (longest wait for the lock,
s; default 30), ``fsync`` (``1`` to fsync every write; default off), ``create``
(``1`` to create the directory if it is missing; default off). The directory
must be empty or an rdzv store; the filesystem root is refused.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from rdzv.errors import ConfigurationError, StoreCorruptedError, StoreError
from rdzv.store.base import Capabilities, CasResult, Entry, LeaseInfo, Listing, Store
from rdzv.store.deadline import time_left
from rdzv.store.file.disk import Disk, EntryRecord, name_to_key
from rdzv.store.file.txn import Txn
from rdzv.store.leasewatch import LeaseWatch

log = logging.getLogger(__name__)

__all__ = ["FileStore"]

Clock = Callable[[], float]
T = TypeVar("T")

OPTIONS = {
    "poll": "longest wait between polls in seconds (default 0.25)",
    "poll_min": "first poll interval in seconds (default 0.01)",
    "timeout": "longest wait for the directory lock in seconds (default 30)",
    "fsync": "1 to fsync every write, 0 not to (default 0)",
    "create": "1 to create the directory if it is missing (default 0)",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class FileStore(Store):
    """A store kept in a directory shared by processes and, through NFS, hosts."""

    capabilities = Capabilities(
        push_wait=False, leases=True, high_availability=False, multi_host=True, multi_process=True
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        poll: float = 0.25,
        poll_min: float = 0.01,
        timeout: float = 30.0,
        fsync: bool = False,
        create: bool = False,
        prune_after: int = 1024,
        clock: Clock = time.monotonic,
    ) -> None:
        """Open the store in the absolute directory ``path`` (created if missing with ``create``).

        ``clock`` judges lease expiry (tests pass a fake one); ``prune_after`` is
        how many revisions a tombstone is kept at least.
        """
        root = Path(path)
        if not str(path) or not root.is_absolute():
            raise ConfigurationError(f"file store path must be absolute, got {str(path)!r}")
        for name, value in (("poll", poll), ("poll_min", poll_min), ("timeout", timeout)):
            if not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(f"file store option {name} must be a positive number, got {value!r}")
        if prune_after < 1:
            raise ConfigurationError(f"prune_after must be at least 1, got {prune_after}")
        self.url = "file://" + quote(str(root))
        self._poll = poll
        self._poll_min = min(poll_min, poll)
        self._prune_after = prune_after
        self._clock = clock
        self._disk = Disk(
            root, url=self.url, fsync=fsync, lock_timeout=timeout, on_stall=self._stalled, create=create
        )
        self._watch = LeaseWatch()
        self._watch_lock = threading.Lock()
        self._next_check = -math.inf
        self._compensated_until = -math.inf

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FileStore:
        """Registry factory for ``file:///abs/dir?poll=..&timeout=..&fsync=..``."""
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ConfigurationError(f"not a file:// URL: {url!r}")
        if parts.netloc not in ("", "localhost"):
            raise ConfigurationError(
                f"file:// URL {url!r} names host {parts.netloc!r}; a file store URL is "
                "file:///absolute/dir (three slashes; relative paths are not accepted)"
            )
        path = unquote(parts.path)
        if not path or not path.startswith("/"):
            raise ConfigurationError(f"file:// URL {url!r} needs an absolute directory: file:///absolute/dir")
        merged: dict[str, Any] = {**dict(parse_qsl(parts.query, keep_blank_values=True)), **options}
        unknown = sorted(set(merged) - set(OPTIONS))
        if unknown:
            valid = "; ".join(f"{name}: {help_}" for name, help_ in OPTIONS.items())
            raise ConfigurationError(
                f"unknown file:// option(s) {', '.join(unknown)}; valid options are {valid}"
            )
        kwargs: dict[str, Any] = {
            name: _number(name, merged[name]) for name in ("poll", "poll_min", "timeout") if name in merged
        }
        for flag in ("fsync", "create"):
            if flag in merged:
                kwargs[flag] = _flag(flag, merged[flag])
        return cls(path, **kwargs)

    # -- reads ------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        self._check_leases()
        return _live(self._disk.read_entry(key))

    def list(self, prefix: str) -> Listing:
        self._check_leases()
        with self._disk.locked(exclusive=False):
            revision = self._disk.read_meta().revision
            entries = [entry for entry in map(_live, self._records_under(prefix)) if entry is not None]
        return Listing(tuple(sorted(entries, key=lambda entry: entry.key)), revision)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        deadline = time.monotonic() + time_left(timeout)
        delay = self._poll_min
        scanned_at: int | None = None  # the revision of the last scan: skip rescanning it
        while True:
            self._check_leases()
            revision = self._disk.read_meta().revision
            if revision > since and revision != scanned_at:
                changed, scanned_at = self._changed_since(prefix, since)
                if changed is not None:
                    return changed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, self._poll)

    # -- writes -----------------------------------------------------------------

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return self._mutate(lambda txn: txn.put(key, value, lease))

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        def apply(txn: Txn) -> CasResult:
            current = txn.live(key)
            if (current.version if current else 0) != expected_version:
                return CasResult(False, _live(current))
            txn.put(key, value, lease)
            return CasResult(True, _live(txn.live(key)))

        return self._mutate(apply)

    def add(self, key: str, delta: int) -> int:
        def apply(txn: Txn) -> int:
            current = txn.live(key)
            try:
                total = (int(current.value or b"") if current else 0) + delta
            except ValueError as exc:
                raise StoreError(
                    f"value at {key!r} is not an integer counter", url=self.url, key=key
                ) from exc
            lease = current.lease if current else None
            txn.put(key, str(total).encode(), lease if lease is not None and txn.lease(lease) else None)
            return total

        return self._mutate(apply)

    def delete(self, key: str) -> bool:
        return self._mutate(lambda txn: txn.delete(key))

    # -- leases -----------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ConfigurationError(f"lease ttl must be a positive number, got {ttl!r}")
        lease = self._mutate(lambda txn: txn.grant(ttl))
        with self._watch_lock:
            self._watch.observe(lease, 0, ttl, self._clock())
        return lease

    def refresh(self, lease: int) -> bool:
        def apply(txn: Txn) -> bool:
            record = txn.lease(lease)
            if record is None:
                return False
            now = self._clock()
            with self._watch_lock:
                if self._watch.observe(lease, record.counter, record.ttl, now):
                    txn.revoke(lease)  # by our own clock it lapsed: others may already judge so
                    self._watch.forget(lease)
                    return False
                bumped = txn.refresh(lease)
                assert bumped is not None
                self._watch.observe(lease, bumped.counter, bumped.ttl, now)
            return True

        return self._mutate(apply)

    def revoke(self, lease: int) -> None:
        self._mutate(lambda txn: txn.revoke(lease))
        with self._watch_lock:
            self._watch.forget(lease)

    def lease_info(self, lease: int) -> LeaseInfo | None:
        """The lease's ttl and the time left by this observer's clock (a full ttl if first seen)."""
        self._check_leases()
        record = self._disk.read_lease(lease)
        if record is None:
            return None
        now = self._clock()
        with self._watch_lock:
            self._watch.observe(lease, record.counter, record.ttl, now)
            remaining = self._watch.remaining(lease, now)
        return LeaseInfo(record.ttl, record.ttl if remaining is None else remaining)

    def close(self) -> None:
        self._disk.close()

    # -- internals --------------------------------------------------------------

    def _mutate(self, apply: Callable[[Txn], T]) -> T:
        self._check_leases()
        with self._disk.locked(exclusive=True):
            txn = Txn(self._disk, prune_after=self._prune_after)
            result = apply(txn)
            txn.commit()
        return result

    def _check_leases(self) -> None:
        """Observe every lease's counter and expire the lapsed ones.

        Reads lease files at most once a poll, or sooner when a lease may lapse.
        """
        now = self._clock()
        lapsed: dict[int, int] = {}
        with self._watch_lock:
            if now < self._next_check:
                return
            leases = self._disk.lease_ids()
            for lease in leases:
                record = self._disk.read_lease(lease)
                if record is not None and self._watch.observe(lease, record.counter, record.ttl, now):
                    lapsed[lease] = record.counter
            self._watch.retain(set(leases))
            self._next_check = min(now + self._poll, self._watch.next_deadline())
        if lapsed:
            self._expire(lapsed)

    def _expire(self, lapsed: dict[int, int]) -> None:
        with self._disk.locked(exclusive=True):
            # Judged again under the lock: a wait for it (a stalled holder) gave the leases time back.
            now = self._clock()
            with self._watch_lock:
                due = {lease: c for lease, c in lapsed.items() if self._watch.remaining(lease, now) == 0.0}
            txn = Txn(self._disk, prune_after=self._prune_after)
            for lease, counter in sorted(due.items()):
                record = txn.lease(lease)
                if record is not None and record.counter == counter:  # not refreshed meanwhile
                    txn.revoke(lease)
            txn.commit()
        with self._watch_lock:
            for lease in due:
                self._watch.forget(lease)

    def _stalled(self, start: float, end: float) -> None:
        """The lock was held elsewhere from ``start`` to ``end`` (monotonic): no refresh could land.

        Every lease gets that time back (counted once when waits overlap), so a
        stalled lock holder does not make this observer evict the living.
        """
        with self._watch_lock:
            seconds = end - max(start, self._compensated_until)
            self._compensated_until = max(self._compensated_until, end)
            if seconds > 0:
                held = end - start
                log.warning("rdzv: the lock of %s was held for %.2f s: leases get it back", self.url, held)
                self._watch.extend(seconds, self._clock())

    def _changed_since(self, prefix: str, since: int) -> tuple[int | None, int]:
        """The newest change after ``since`` under ``prefix`` (or None), and the revision read."""
        with self._disk.locked(exclusive=False):
            meta = self._disk.read_meta()
            if since < meta.compacted:
                return meta.revision, meta.revision  # tombstones were pruned: wake, callers re-read
            newest = max((record.version for record in self._records_under(prefix)), default=0)
        return (newest if newest > since else None), meta.revision

    def _records_under(self, prefix: str) -> Iterator[EntryRecord]:
        """Records (tombstones included) whose key starts with ``prefix``; hold the lock."""
        for name in self._disk.entry_names():
            if name.startswith("k"):
                try:
                    key = name_to_key(name)
                except UnicodeDecodeError as exc:
                    path = self._disk.keys_dir / name
                    raise StoreCorruptedError(
                        f"{path}: file name is not an escaped key", url=self.url
                    ) from exc
                if key is None or not key.startswith(prefix):
                    continue
            elif not name.startswith("h"):
                continue  # not ours
            record = self._disk.read_entry_file(name)
            if record is not None and record.key.startswith(prefix):
                yield record


def _live(record: EntryRecord | None) -> Entry | None:
    if record is None or record.value is None:
        return None
    return Entry(record.key, record.value, record.version, record.lease)


def _number(name: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"file:// option {name} must be a number of seconds, got {value!r}") from exc


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"file:// option {name} must be 1 or 0, got {value!r}")
