"""Rebuilding a store that lost its state, from what the nodes know.

The store's state is soft; the nodes hold the truth. When a store comes back
empty (a restarted server, a failover host: ``Store.generation`` moved) or is
found emptied (our lease unknown and the round document gone or older than our
round), each member of the current round takes a new lease and re-asserts:

1. the round document, created if absent or raised if the store holds an older
   round (round numbers never go backwards), marked ``rebuilt``;
2. its own rank key, bound to its new lease.

Nodes waiting in a lobby re-enter it (``Joiner``). Members then give each other
one lease ttl to come back (the *recovery window*); a rank key still missing
after it is an ordinary member lost. If every member came back, the job goes on
in the same round: no new round, no worker restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from rdzv.core.records import (
    MembersRecord,
    RankRecord,
    RoundDoc,
    decode_rank,
    decode_round_doc,
    encode,
)
from rdzv.rendezvous.layout import Layout
from rdzv.store.base import Store

__all__ = ["Recovery", "adopt_round", "members_missing", "rebuild_members", "store_lost_round"]

log = logging.getLogger(__name__)

REASSERT_MARGIN = 1.0
"""Seconds beyond one heartbeat interval that a live member may need to re-assert its round."""


def adopt_round(store: Store, doc: RoundDoc) -> RoundDoc | None:
    """Make the store's round document at least ``doc``; return the document it then holds.

    Created if absent, replaced if older (by CAS, marked ``rebuilt``); a newer
    or closed document stays: the run moved on without us.
    """
    rebuilt = replace(doc, rebuilt=True)
    while True:
        entry = store.get(Layout.doc)
        current = decode_round_doc(entry.value, Layout.doc) if entry else None
        if current is not None and (current.closed or current.round >= doc.round):
            return current
        if store.compare_and_set(Layout.doc, encode(rebuilt), entry.version if entry else 0).succeeded:
            log.warning("rdzv: re-created round %d of a store that lost its state", doc.round)
            return rebuilt


def store_lost_round(store: Store, doc: RoundDoc) -> bool:
    """Whether a member of round ``doc`` whose lease the store no longer knows should re-assert:
    the store holds no round, an older one, or round ``doc`` as rebuilt by another member
    (it lost its state). Otherwise the member was evicted: an ordinary member lost."""
    entry = store.get(Layout.doc)
    current = decode_round_doc(entry.value, Layout.doc) if entry else None
    if current is None:
        return True
    if current.closed:
        return False
    return current.round < doc.round or (
        current.round == doc.round and current.token == doc.token and current.rebuilt
    )


def members_missing(store: Store, doc: RoundDoc) -> tuple[bool, int]:
    """After a recovery window: whether a member of round ``doc`` failed to re-assert its
    rank key, and the store revision of that look."""
    listing = store.list(Layout.ranks(doc.round))
    present = sum(1 for e in listing if decode_rank(e.value, e.key).token == doc.token)
    if present < doc.world_size:
        log.warning("rdzv: %d of %d members re-asserted round %d", present, doc.world_size, doc.round)
    return present < doc.world_size, listing.revision


def rebuild_members(store: Store, doc: RoundDoc) -> MembersRecord | None:
    """The membership of round ``doc`` from its rank keys, once every member re-asserted its own."""
    ranks = Layout.ranks(doc.round)
    placed: dict[int, tuple[str, str]] = {}
    for entry in store.list(ranks):
        record = decode_rank(entry.value, entry.key)
        if record.token == doc.token:
            placed[record.rank] = (entry.key[len(ranks) :], record.addr)
    if sorted(placed) != list(range(doc.world_size)):
        return None
    order = [placed[rank] for rank in range(doc.world_size)]
    members = MembersRecord(doc.token, [node for node, _ in order], [addr for _, addr in order])
    store.compare_and_set(Layout.members(doc.round), encode(members), 0)  # create-if-absent
    return members


class Recovery:
    """One member's re-assertion of its round, run by whichever thread notices first."""

    def __init__(self, store: Store, node_id: str, lease: Callable[[], int], window: float) -> None:
        self._store = store
        self._node_id = node_id
        self._lease = lease
        self._window = window
        self._lock = threading.Lock()
        self.generation = store.generation
        """The store generation this node's round was last asserted in."""
        self.epoch = 0
        """How many times this node re-asserted its round (watchers reset on a change)."""
        self.revision = 0
        """Store revision right after the last re-assertion."""
        self.window_until = 0.0
        """Until when (caller's clock) peers may still be re-asserting."""
        self.asserted_at: float | None = None
        """When (caller's clock) this node last re-asserted its round."""

    def needed(self) -> bool:
        return self._store.generation != self.generation

    def reassert(self, doc: RoundDoc, rank: int, addr: str, now: float, *, force: bool = False) -> bool:
        """Re-assert this member's place if the store lost its state; whether it did.

        Raises ``StoreError`` (the caller retries); idempotent.
        """
        with self._lock:
            generation = self._store.generation
            if generation == self.generation and not force:
                return False
            held = adopt_round(self._store, doc)
            self.revision = 0  # the store moved on: watchers look at once
            if held is not None and held.round == doc.round and held.token == doc.token:
                record = RankRecord(doc.token, rank, addr)
                key = Layout.ranks(doc.round) + self._node_id
                self.revision = self._store.put(key, encode(record), lease=self._lease())
            self.generation = generation
            self.epoch += 1
            self.window_until = now + self._window
            self.asserted_at = now
            log.warning("rdzv node %s: re-asserted its place in round %d", self._node_id, doc.round)
            return True
