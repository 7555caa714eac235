"""The on-disk layout of the ``file://`` store: names, records, atomic writes, the lock.

::

    DIR/
      .lock            flock target; held exclusively by every mutation
      meta             msgpack {format, revision, compacted, lease_seq}
      keys/K...        one msgpack entry record per key (value nil: a tombstone)
      leases/N         one msgpack lease record per live lease {ttl, counter, keys}

Every file is replaced whole (temporary file in the same directory, optional
fsync, ``os.replace``), so a reader sees the old or the new record, never half.
All I/O errors are translated here: ``OSError`` becomes
:class:`~rdzv.errors.StoreUnavailableError`, undecodable data
:class:`~rdzv.errors.StoreCorruptedError`; both name the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import msgpack

from rdzv.errors import (
    ConfigurationError,
    StoreCorruptedError,
    StoreError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from rdzv.store.deadline import time_left

__all__ = ["FORMAT", "Disk", "EntryRecord", "LeaseRecord", "Meta", "key_to_name", "name_to_key"]

FORMAT = 1
_TEMP_PREFIX = ".tmp-"
_OWN_NAMES = {".lock", "meta", "keys", "leases"}
_MAX_QUOTED = 180  # longer escaped names are hashed: NAME_MAX is 255 bytes on most filesystems
_LOCK_POLL_MIN = 0.0005
_LOCK_POLL_MAX = 0.01
STALL = 0.25
"""A wait this long for the lock (taken, or given up) means its holder stalled: nobody could
refresh a lease meanwhile. Taking it normally costs milliseconds."""


def key_to_name(key: str) -> str:
    """A file name for ``key``: ``k`` + percent-escaped UTF-8, or ``h`` + sha256 if long.

    Only ``[A-Za-z0-9_.~-]`` survive unescaped, so ``/``, ``..`` and NUL cannot
    reach the filesystem, and the leading letter keeps names off ``.``, ``..``,
    the empty name and the ``.tmp-`` prefix of temporary files.
    """
    quoted = quote(key, safe="")
    if len(quoted) <= _MAX_QUOTED:
        return "k" + quoted
    return "h" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def name_to_key(name: str) -> str | None:
    """The key a ``k`` name stands for; ``None`` for hashed names (read the record)."""
    return unquote(name[1:], errors="strict") if name.startswith("k") else None


@dataclass(frozen=True)
class EntryRecord:
    key: str
    value: bytes | None  # None: a tombstone
    version: int
    lease: int | None = None


@dataclass(frozen=True)
class LeaseRecord:
    ttl: float
    counter: int = 0
    """Bumped by every refresh; observers time how long it stays unchanged."""
    keys: tuple[str, ...] = ()


@dataclass
class Meta:
    revision: int = 0
    compacted: int = 0
    """Tombstones up to this revision may have been pruned."""
    lease_seq: int = 0


@dataclass
class _Lock:
    path: Path
    timeout: float
    fd: int | None = None
    mutex: threading.Lock = field(default_factory=threading.Lock)


class Disk:
    """File-level access to one store directory; the single place I/O errors are translated."""

    def __init__(
        self,
        root: Path,
        *,
        url: str,
        fsync: bool,
        lock_timeout: float,
        on_stall: Callable[[float, float], None] | None = None,
        create: bool = False,
    ) -> None:
        """``on_stall(start, end)`` hears, once the lock is taken, that it was unavailable from
        ``start`` (a wait of ``STALL`` seconds or more began, even one that gave up) to ``end``."""
        self.root = root
        self._on_stall = on_stall
        self._stalled_since: float | None = None
        """Start of a wait for the lock that gave up; the stall is reported when the lock is next taken."""
        self.url = url
        self.fsync = fsync
        self.keys_dir = root / "keys"
        self.leases_dir = root / "leases"
        self.meta_path = root / "meta"
        self._lock = _Lock(root / ".lock", lock_timeout)
        with self._io(root):
            self._check_root(create)
            for directory in (self.keys_dir, self.leases_dir):
                directory.mkdir(exist_ok=True)

    def _check_root(self, create: bool) -> None:
        """Use only a directory that is empty or an rdzv store: a typo or an unmounted share must
        not quietly give each node a private store, nor a store scatter its files into ``/``."""
        root = self.root
        if root == Path(root.anchor):
            raise ConfigurationError(
                f"{self.url}: refusing to use the filesystem root as a store; "
                "give the store a directory of its own, such as file:///shared/rdzv"
            )
        if not root.exists():
            if not create:
                raise ConfigurationError(
                    f"{self.url}: directory {root} does not exist; check the path and that the shared "
                    f"filesystem is mounted, then create it (mkdir -p {root}) or add ?create=1 to the URL"
                )
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise ConfigurationError(f"{self.url}: {root} is not a directory; a file store needs a directory")
        foreign = sorted(
            n for n in os.listdir(root) if n not in _OWN_NAMES and not n.startswith(_TEMP_PREFIX)
        )
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ConfigurationError(
                f"{self.url}: {root} is not empty and not an rdzv store (it holds {shown}); "
                "use an empty directory or one an rdzv file store created"
            )

    def close(self) -> None:
        with self._lock.mutex:
            if self._lock.fd is not None:
                os.close(self._lock.fd)
                self._lock.fd = None

    # -- locking ----------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the directory's flock (shared for consistent multi-file reads)."""
        lock = self._lock
        with lock.mutex:  # flock is per open file: threads of one handle must queue here
            with self._io(lock.path):
                if lock.fd is None:
                    lock.fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o666)
                self._flock(lock.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                with self._io(lock.path):
                    fcntl.flock(lock.fd, fcntl.LOCK_UN)

    def _flock(self, fd: int, mode: int) -> None:
        """Take the flock by the deadline; report a stall (see ``on_stall``) once it is taken."""
        start = time.monotonic()
        deadline = start + time_left(self._lock.timeout)
        delay = _LOCK_POLL_MIN
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    if deadline - start >= STALL:  # the stall goes on; reported when it ends
                        self._stalled_since = min(self._stalled_since or start, start)
                    raise StoreTimeoutError(
                        f"could not lock {self._lock.path} within {deadline - start:.3g} s", url=self.url
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, _LOCK_POLL_MAX)
                continue
            end = time.monotonic()
            since = start if end - start >= STALL else None
            if self._stalled_since is not None:
                since = min(since or end, self._stalled_since)
                self._stalled_since = None
            if since is not None and self._on_stall is not None:
                self._on_stall(since, end)
            return

    # -- meta -------------------------------------------------------------------

    def read_meta(self) -> Meta:
        raw = self._read(self.meta_path)
        if raw is None:
            return Meta()
        data = self._decode(self.meta_path, raw, dict)
        if data.get("format") != FORMAT:
            raise StoreCorruptedError(
                f"{self.meta_path}: unknown store format {data.get('format')!r} (expected {FORMAT})",
                url=self.url,
            )
        fields = (data.get("revision"), data.get("compacted"), data.get("lease_seq"))
        if not all(isinstance(value, int) for value in fields):
            raise StoreCorruptedError(f"{self.meta_path}: malformed meta record {data!r}", url=self.url)
        return Meta(*fields)

    def write_meta(self, meta: Meta) -> None:
        record = {
            "format": FORMAT,
            "revision": meta.revision,
            "compacted": meta.compacted,
            "lease_seq": meta.lease_seq,
        }
        self._write(self.meta_path, msgpack.packb(record))

    # -- entries ----------------------------------------------------------------

    def entry_names(self) -> list[str]:
        with self._io(self.keys_dir):
            return [name for name in os.listdir(self.keys_dir) if not name.startswith(".")]

    def read_entry(self, key: str) -> EntryRecord | None:
        record = self.read_entry_file(key_to_name(key))
        return record if record is None or record.key == key else None

    def read_entry_file(self, name: str) -> EntryRecord | None:
        path = self.keys_dir / name
        raw = self._read(path)
        if raw is None:
            return None
        data = self._decode(path, raw, list)
        if len(data) != 4 or not isinstance(data[0], str) or not isinstance(data[2], int):
            raise StoreCorruptedError(f"{path}: malformed entry record", url=self.url)
        key, value, version, lease = data
        if not isinstance(value, (bytes, type(None))) or not isinstance(lease, (int, type(None))):
            raise StoreCorruptedError(
                f"{path}: malformed entry record for key {key!r}", url=self.url, key=key
            )
        return EntryRecord(key, value, version, lease)

    def write_entry(self, key: str, record: EntryRecord | None) -> None:
        path = self.keys_dir / key_to_name(key)
        if record is None:
            self._unlink(path)
        else:
            self._write(path, msgpack.packb([record.key, record.value, record.version, record.lease]))

    # -- leases -----------------------------------------------------------------

    def lease_ids(self) -> list[int]:
        with self._io(self.leases_dir):
            return [int(name) for name in os.listdir(self.leases_dir) if name.isdigit()]

    def read_lease(self, lease: int) -> LeaseRecord | None:
        path = self.leases_dir / str(lease)
        raw = self._read(path)
        if raw is None:
            return None
        data = self._decode(path, raw, list)
        if (
            len(data) != 3
            or not isinstance(data[0], (int, float))
            or not isinstance(data[1], int)
            or not isinstance(data[2], list)
            or not all(isinstance(key, str) for key in data[2])
        ):
            raise StoreCorruptedError(f"{path}: malformed lease record", url=self.url)
        return LeaseRecord(float(data[0]), data[1], tuple(data[2]))

    def write_lease(self, lease: int, record: LeaseRecord | None) -> None:
        path = self.leases_dir / str(lease)
        if record is None:
            self._unlink(path)
        else:
            self._write(path, msgpack.packb([record.ttl, record.counter, list(record.keys)]))

    def remove_temporaries(self) -> None:
        """Delete temporary files left by writers that died; call with the lock held."""
        for directory in (self.root, self.keys_dir, self.leases_dir):
            with self._io(directory):
                names = [n for n in os.listdir(directory) if n.startswith(_TEMP_PREFIX)]
            for name in names:
                self._unlink(directory / name)

    # -- primitives -------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self, path: Path) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise  # StoreTimeoutError is a TimeoutError, hence an OSError: leave it be
        except OSError as exc:
            raise StoreUnavailableError(f"{path}: {exc.strerror or exc}", url=self.url) from exc

    def _read(self, path: Path) -> bytes | None:
        for attempt in range(3):
            try:
                with open(path, "rb") as handle:
                    return handle.read()
            except FileNotFoundError:
                return None
            except OSError as exc:
                # NFS: a file replaced between lookup and open reads as a stale handle.
                if exc.errno != errno.ESTALE or attempt == 2:
                    raise StoreUnavailableError(f"{path}: {exc.strerror or exc}", url=self.url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _decode(self, path: Path, raw: bytes, kind: type[Any]) -> Any:
        try:
            data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:
            raise StoreCorruptedError(f"{path}: cannot decode record ({exc})", url=self.url) from exc
        if not isinstance(data, kind):
            raise StoreCorruptedError(f"{path}: expected a {kind.__name__} record", url=self.url)
        return data

    def _write(self, path: Path, data: bytes) -> None:
        with self._io(path):
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if self.fsync:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            if self.fsync:
                self._fsync_dir(path.parent)

    def _fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _unlink(self, path: Path) -> None:
        with self._io(path), contextlib.suppress(FileNotFoundError):
            os.unlink(path)
