"""One node's way into the next round, as steps that never block.

``Joiner.step(now)`` reads the store, acts, and returns either the node's
:class:`Placement` in a completed round or a :class:`Wait` saying which key to
watch and until when. ``Rendezvous`` turns that into blocking ``store.wait``
calls; tests drive steps directly with a fake clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from rdzv.core import plan
from rdzv.core.ranks import assign_ranks
from rdzv.core.records import (
    JoinRecord,
    MembersRecord,
    RankRecord,
    RoundDoc,
    RoundState,
    decode_join,
    decode_rank,
    decode_round_doc,
    encode,
)
from rdzv.errors import RendezvousClosedError, StoreError
from rdzv.rendezvous.config import RendezvousSettings
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.recovery import REASSERT_MARGIN, adopt_round
from rdzv.store.base import Entry, Store


def read_lobby_entry(entry: Entry) -> JoinRecord:
    """A lobby record, ordered by the store revision at which it was written."""
    return replace(decode_join(entry.value, entry.key), arrival=entry.version)


@dataclass(frozen=True)
class NodeIdentity:
    node_id: str
    host: str
    port_for_round: Callable[[], int]
    labels: dict[str, str]


@dataclass(frozen=True)
class Placement:
    """This node's place in a completed round."""

    doc: RoundDoc
    rank: int
    revision: int
    """Store revision at which the round completed; later changes are news."""
    addr: str = ""
    """This node's ``host:port`` in the round."""


@dataclass(frozen=True)
class Wait:
    key: str
    since: int
    until: float | None


@dataclass
class _Pending:
    round: int
    arrival: int
    joined_at: float
    attempt_at: float | None
    lease: int = 0
    generation: int = 0
    """Store generation of the lobby key (a store that lost its state lost the key too)."""


class Joiner:
    """Steps one node through the lobby of the next round until it is placed."""

    def __init__(
        self,
        store: Store,
        settings: RendezvousSettings,
        node: NodeIdentity,
        lease: Callable[[], int],
        previous: Placement | None = None,
        renew: Callable[[], bool] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._node = node
        self._lease = lease
        self._previous = previous
        self._renew = renew
        """Refreshes the lease; ``False`` when it had lapsed (and is dropped, so ``lease`` grants anew)."""
        self._pending: _Pending | None = None
        self.left_behind: str | None = None
        """A placed node's lobby key, left for the caller to delete off the critical path."""
        self.held_back: str | None = None
        """Why the last attempt to complete the round was held back (for the timeout error)."""

    @property
    def waiting_round(self) -> int | None:
        return self._pending.round if self._pending else None

    def step(self, now: float) -> Placement | Wait:
        entry = self._store.get(Layout.doc)
        doc = decode_round_doc(entry.value, Layout.doc) if entry else None
        prev = self._previous
        if prev is not None and (doc is None or (not doc.closed and doc.round < prev.doc.round)):
            # The store lost its state: it adopts the highest round its members assert.
            adopt_round(self._store, prev.doc)
            entry = self._store.get(Layout.doc)
            doc = decode_round_doc(entry.value, Layout.doc) if entry else None
        if doc is not None and doc.closed:
            self.leave_lobby()
            raise RendezvousClosedError(
                f"rendezvous {self._settings.run_id!r} is closed",
                run_id=self._settings.run_id,
                round=doc.round,
            )
        latest = doc.round if doc else 0
        pending = self._pending
        if pending is not None and doc is not None and latest >= pending.round:
            placed = self._placement(doc, entry) if latest == pending.round else None
            if placed is not None:
                self._settle()
                return placed
            self.leave_lobby()  # not chosen (a spare, or late): queue for the next round
            pending = None
        if (
            pending is not None
            and pending.arrival
            and (self._lease() != pending.lease or self._store.generation != pending.generation)
        ):
            # Our lease expired while we waited (a stall past its ttl), and our lobby key with it,
            # or the store lost its state: re-enter the lobby.
            pending.arrival, pending.joined_at, pending.attempt_at = 0, now, None
        if pending is None:
            # Recorded before any write: if a reply is lost and the step is retried,
            # the node still knows which round it may have been placed in.
            pending = self._pending = _Pending(latest + 1, 0, now, None)
        if pending.arrival == 0:
            self._enter_lobby(pending)
        if pending.attempt_at is not None and now >= pending.attempt_at:
            placed = self._try_complete(pending, entry, now)
            if placed is not None:
                return placed
        # Look again after a lease ttl at the latest, to notice a lease lost while waiting.
        recheck = now + self._settings.lease_ttl
        until = recheck if pending.attempt_at is None else min(pending.attempt_at, recheck)
        return Wait(Layout.doc, entry.version if entry else 0, until)

    def _settle(self) -> None:
        """Placed: the lobby key no longer matters (nobody reads a completed round's lobby),
        so its delete is left to the caller, after ``next_rendezvous`` has returned."""
        if self._pending is not None:
            self.left_behind = Layout.lobby(self._pending.round) + self._node.node_id
            self._pending = None

    def leave_lobby(self) -> None:
        """Withdraw from the lobby (the node was placed, gave up, or moves on)."""
        if self._pending is not None:
            self._store.delete(Layout.lobby(self._pending.round) + self._node.node_id)
            self._pending = None

    # -- steps ----------------------------------------------------------------

    def _enter_lobby(self, pending: _Pending) -> None:
        # The key goes in before the counter moves: whoever counts N arrivals
        # is sure to find N keys (less the dead) when it lists the lobby.
        generation = self._store.generation
        lease = self._lease()
        prev = self._previous
        record = JoinRecord(
            node_id=self._node.node_id,
            host=self._node.host,
            port=self._node.port_for_round(),
            arrival=0,
            lease=lease,
            labels=self._node.labels,
            prev_round=prev.doc.round if prev else 0,
            prev_rank=prev.rank if prev else None,
            prev_world=prev.doc.world_size if prev else 0,
        )
        lobby = Layout.lobby(pending.round)
        try:
            written = self._store.put(lobby + self._node.node_id, encode(record), lease=lease)
        except StoreError:
            # The lease may have lapsed unnoticed (a stall past its ttl): if a refresh
            # says so, take a new lease and try once more; otherwise the error stands.
            if self._renew is None or self._renew():
                raise
            lease = self._lease()
            record = replace(record, lease=lease)
            written = self._store.put(lobby + self._node.node_id, encode(record), lease=lease)
        pending.lease, pending.generation = lease, generation
        # Stores with history (etcd) count the lobby as it was at our write: one read and
        # no contention, where a counter there is a CAS loop costing O(N^2) transactions.
        counted = self._store.count_at(lobby, written)
        pending.arrival = counted or self._store.add(Layout.arrivals(pending.round), 1)
        s = self._settings
        delay = plan.attempt_delay(pending.arrival, s.min_nodes, s.max_nodes, s.last_call_timeout)
        pending.attempt_at = None if delay is None else pending.joined_at + delay

    def _placement(self, doc: RoundDoc, entry: Entry | None) -> Placement | None:
        key = Layout.ranks(doc.round) + self._node.node_id
        found = self._store.get(key)
        if found is None or entry is None:
            return None
        record = decode_rank(found.value, key)
        if record.token != doc.token:
            return None
        return Placement(doc, record.rank, entry.version, record.addr)

    def _try_complete(self, pending: _Pending, doc_entry: Entry | None, now: float) -> Placement | None:
        s = self._settings
        lobby_key = Layout.lobby(pending.round)
        lobby = [read_lobby_entry(e) for e in self._store.list(lobby_key)]
        last_call_due = now >= pending.joined_at + s.last_call_timeout
        members = plan.plan_round(lobby, s.min_nodes, s.max_nodes, last_call_due=last_call_due)
        if members is None:
            pending.attempt_at = None if last_call_due else pending.joined_at + s.last_call_timeout
            return None
        previous = decode_round_doc(doc_entry.value, Layout.doc) if doc_entry else None
        wait = self._held_back(members, previous)
        if wait is not None:
            pending.attempt_at = now + wait
            return None
        self.held_back = None
        lease = self._lease()
        claim = self._store.compare_and_set(
            Layout.claim(pending.round), uuid.uuid4().hex.encode(), 0, lease=lease
        )
        current = claim.current
        if current is None or current.lease != lease:
            # Another node is completing; its claim vanishes with its lease if it dies.
            pending.attempt_at = now + s.lease_ttl
            return None
        # Ours, won now or by an attempt whose reply was lost: that attempt's token stands.
        token = current.value.decode()
        ordered = assign_ranks(members, s.rank_policy, pending.round - 1)
        try:
            doc = self._publish(pending.round, ordered, token)
        except StoreError:
            # A member's lease ended while we wrote (it died): plan again without it.
            self._store.delete(Layout.claim(pending.round))
            pending.attempt_at = now
            return None
        result = self._store.compare_and_set(Layout.doc, encode(doc), doc_entry.version if doc_entry else 0)
        if not result.succeeded or result.current is None:
            return None  # closed meanwhile: the next step sees it
        mine = [rank for rank, record in enumerate(ordered) if record.node_id == self._node.node_id]
        if not mine:
            return None  # we completed the round for others and stay a spare
        self._settle()
        return Placement(doc, mine[0], result.current.version, ordered[mine[0]].addr)

    def _held_back(self, members: list[JoinRecord], previous: RoundDoc | None) -> float | None:
        """Seconds to wait before planning again, when a guard holds the round back; else ``None``.

        * A store whose state is younger than one heartbeat interval (+ a margin) and holds
          no round may have lost a running one whose members have not re-asserted it yet:
          a first round formed now could run beside it.
        * The split-brain guard: after a store lost its state, or where it may fail over to
          another host, the round needs a strict majority of the previous round's members.
        """
        s = self._settings
        if previous is None:
            age = self._store.state_age()
            grace = s.heartbeat_interval + REASSERT_MARGIN
            if age is not None and age < grace:
                self.held_back = f"the store is {age:.1f} s old; members of a lost round may re-assert it"
                return grace - age
            return None
        guarded = previous.rebuilt or self._store.capabilities.failover
        if not s.split_brain_guard or not guarded or previous.round == 0:
            return None
        if plan.has_majority(members, previous.round, previous.world_size):
            return None
        present = sum(1 for record in members if record.prev_round == previous.round)
        self.held_back = (
            f"split-brain guard: only {present} of round {previous.round}'s {previous.world_size} members "
            "reached this store, a strict majority is needed (split_brain_guard=False turns this off)"
        )
        return s.heartbeat_interval

    def _publish(self, round_: int, ordered: list[JoinRecord], token: str) -> RoundDoc:
        ranks = Layout.ranks(round_)
        chosen = {record.node_id for record in ordered}
        for stale in self._store.list(ranks):  # left by a claimant that died mid-way
            if stale.key[len(ranks) :] not in chosen:
                self._store.delete(stale.key)
        # One batch (one round trip on tcp): every rank key, bound to its member's lease, then
        # the membership. A member that died meanwhile fails the write (its lease is gone).
        members = MembersRecord(token, [r.node_id for r in ordered], [r.addr for r in ordered])
        batch: list[tuple[str, bytes, int | None]] = [
            (ranks + record.node_id, encode(RankRecord(token, rank, record.addr)), record.lease)
            for rank, record in enumerate(ordered)
        ]
        batch.append((Layout.members(round_), encode(members), None))
        self._store.put_many(batch)
        s = self._settings
        return RoundDoc(
            round_, RoundState.COMPLETE, len(ordered), ordered[0].addr, token, s.min_nodes, s.max_nodes
        )
