"""One mutation of the ``file://`` store, applied under the exclusive directory lock.

A transaction reads records through a cache, stamps each change with the next
store revision, and on ``commit`` writes ``meta`` first and then the changed
entry and lease records. A writer that dies half-way therefore leaves a skipped
revision, never a repeated one. Every ``prune_after`` revisions the commit also
prunes tombstones older than that many revisions and records the cut in
``meta.compacted`` (waiters from before the cut are woken rather than missed).
"""

from __future__ import annotations

import builtins
from dataclasses import replace

from rdzv.errors import StoreError
from rdzv.store.file.disk import Disk, EntryRecord, LeaseRecord, Meta

__all__ = ["Txn"]


class Txn:
    """Cached reads and staged writes of one locked mutation."""

    def __init__(self, disk: Disk, *, prune_after: int) -> None:
        self.disk = disk
        self.meta: Meta = disk.read_meta()
        self._start = self.meta.revision
        self._start_seq = self.meta.lease_seq
        self._prune_after = prune_after
        self._entries: dict[str, EntryRecord | None] = {}
        self._leases: dict[int, LeaseRecord | None] = {}
        self._dirty_entries: set[str] = set()
        self._dirty_leases: set[int] = set()
        self._grown_leases: set[int] = set()

    # -- reads ------------------------------------------------------------------

    def entry(self, key: str) -> EntryRecord | None:
        """The key's record, tombstones included."""
        if key not in self._entries:
            self._entries[key] = self.disk.read_entry(key)
        return self._entries[key]

    def live(self, key: str) -> EntryRecord | None:
        record = self.entry(key)
        return record if record is not None and record.value is not None else None

    def lease(self, lease: int) -> LeaseRecord | None:
        if lease not in self._leases:
            self._leases[lease] = self.disk.read_lease(lease)
        return self._leases[lease]

    # -- writes -----------------------------------------------------------------

    def put(self, key: str, value: bytes, lease: int | None) -> int:
        if lease is not None and self.lease(lease) is None:
            raise StoreError(f"lease {lease} does not exist (expired or revoked)", url=self.disk.url, key=key)
        old = self.live(key)
        old_lease = old.lease if old is not None else None
        if old_lease is not None and old_lease != lease:
            self._unbind(old_lease, key)
        if lease is not None and old_lease != lease:
            self._bind(lease, key)
        revision = self._stamp()
        self._stage_entry(EntryRecord(key, value, revision, lease))
        return revision

    def delete(self, key: str) -> bool:
        old = self.live(key)
        if old is None:
            return False
        if old.lease is not None:
            self._unbind(old.lease, key)
        self._stage_entry(EntryRecord(key, None, self._stamp(), None))
        return True

    def grant(self, ttl: float) -> int:
        self.meta.lease_seq += 1
        lease = self.meta.lease_seq
        self._stage_lease(lease, LeaseRecord(ttl))
        self._grown_leases.add(lease)
        return lease

    def refresh(self, lease: int) -> LeaseRecord | None:
        record = self.lease(lease)
        if record is None:
            return None
        record = replace(record, counter=record.counter + 1)
        self._stage_lease(lease, record)
        return record

    def revoke(self, lease: int) -> builtins.list[str]:
        """End ``lease`` and delete (tombstone) the keys still bound to it."""
        record = self.lease(lease)
        if record is None:
            return []
        deleted = []
        for key in record.keys:
            entry = self.live(key)
            if entry is not None and entry.lease == lease:
                self._stage_entry(EntryRecord(key, None, self._stamp(), None))
                deleted.append(key)
        self._stage_lease(lease, None)
        return deleted

    def commit(self) -> None:
        """Write meta, then grown leases, entries, other leases, pruned tombstones.

        The order keeps every crash point safe: a lease lists a key before the
        key names the lease, and a lease file goes only after its keys did.
        """
        doomed = self._prunable()
        if self.meta.revision != self._start or self.meta.lease_seq != self._start_seq or doomed:
            self.disk.write_meta(self.meta)
        early = sorted(lease for lease in self._grown_leases if self._leases.get(lease) is not None)
        for lease in early:
            self.disk.write_lease(lease, self._leases[lease])
        for key in sorted(self._dirty_entries):
            self.disk.write_entry(key, self._entries[key])
        for lease in sorted(self._dirty_leases.difference(early)):
            self.disk.write_lease(lease, self._leases[lease])
        for key in doomed:
            self.disk.write_entry(key, None)
        if doomed:
            self.disk.remove_temporaries()

    # -- internals --------------------------------------------------------------

    def _stamp(self) -> int:
        self.meta.revision += 1
        return self.meta.revision

    def _stage_entry(self, record: EntryRecord) -> None:
        self._entries[record.key] = record
        self._dirty_entries.add(record.key)

    def _stage_lease(self, lease: int, record: LeaseRecord | None) -> None:
        self._leases[lease] = record
        self._dirty_leases.add(lease)

    def _bind(self, lease: int, key: str) -> None:
        record = self.lease(lease)
        if record is not None and key not in record.keys:
            self._stage_lease(lease, replace(record, keys=(*record.keys, key)))
            self._grown_leases.add(lease)

    def _unbind(self, lease: int, key: str) -> None:
        record = self.lease(lease)
        if record is not None and key in record.keys:
            self._stage_lease(lease, replace(record, keys=tuple(k for k in record.keys if k != key)))

    def _prunable(self) -> builtins.list[str]:
        """Tombstones to delete if this commit crosses a pruning boundary."""
        every = self._prune_after
        if self.meta.revision // every == self._start // every:
            return []
        cutoff = self.meta.revision - every
        doomed = []
        for name in self.disk.entry_names():
            record = self.disk.read_entry_file(name)
            if (
                record is not None
                and record.value is None
                and record.version <= cutoff
                and record.key not in self._dirty_entries
            ):
                doomed.append(record.key)
        self.meta.compacted = max(self.meta.compacted, cutoff)
        return doomed
