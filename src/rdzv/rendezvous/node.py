"""``Rendezvous``: drives the join steps over a store, keeps the node alive, watches the round.

The flow of one rendezvous (see ``docs/architecture.md``):

1. the node takes a lease (its heartbeat) and a place in the lobby of the next
   round: an arrival number from a counter and a join key bound to its lease;
2. it waits for the round document to change; the ``max_nodes``-th arrival (or
   a node past ``min_nodes`` after the last call) claims the round, assigns
   ranks, writes each member's rank key and flips the document by CAS;
3. each member reads the document and its own rank key: O(1) bytes per node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import NoReturn, TypeVar

from rdzv.core.plan import counts_as_waiting
from rdzv.core.records import RoundDoc, RoundState, decode_round_doc, encode
from rdzv.errors import (
    ConfigurationError,
    RendezvousStateError,
    RendezvousTimeoutError,
    StoreError,
    StoreStateLostError,
)
from rdzv.registry import open_store
from rdzv.rendezvous.address import PortReservation, route_host, split_addr
from rdzv.rendezvous.config import RendezvousSettings
from rdzv.rendezvous.heartbeat import Heartbeat
from rdzv.rendezvous.info import Change, RendezvousInfo
from rdzv.rendezvous.join import Joiner, NodeIdentity, Placement, read_lobby_entry
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.recovery import Recovery, members_missing, store_lost_round
from rdzv.rendezvous.runmetrics import track_runs
from rdzv.retry import TRANSIENT, RetryObserver, RetryPolicy
from rdzv.store.base import Store
from rdzv.store.deadline import bounded

__all__ = ["Change", "Rendezvous", "RendezvousInfo"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

RETRY_PAUSE = 0.1
"""Seconds between attempts to watch a store that is failing over."""

LAST_LOOK = 0.5
"""Seconds past the join deadline for one last look at the round, and again to leave the lobby."""


class Rendezvous:
    """One node's membership in an elastic run: join rounds, stay alive, notice changes.

    ``url_or_store`` is a store URL (``tcp://HOST:PORT``, ``file:///shared/dir``,
    ``etcd://HOST:2379``, ``memory://NAME``) or an open :class:`~rdzv.store.Store`
    (then the caller closes it). Every node of a run passes the same ``run_id``.

    A round completes at once when ``max_nodes`` nodes have joined. With at least
    ``min_nodes`` but fewer than ``max_nodes``, it waits ``last_call_timeout``
    seconds more for latecomers, then completes with those present: so with
    ``min_nodes < max_nodes`` a round of fewer than ``max_nodes`` takes
    ``last_call_timeout`` seconds. Nodes beyond ``max_nodes`` wait as spares for
    the next round. ``next_rendezvous`` gives up after ``join_timeout`` seconds.

    ``addr`` is ``HOST`` or ``HOST:PORT`` where other nodes reach this one; rank 0's
    becomes the round's coordinator (``MASTER_ADDR``/``MASTER_PORT``). The default
    host is this machine's address on the route to the store's host, and the
    default port a free one, held (bound with ``SO_REUSEADDR``, not listening)
    until :meth:`release_port`. ``labels`` are free-form strings kept in this
    node's join record. ``node_id`` must be unique in the run (default
    ``HOST-PID-RANDOM``). The node is evicted after ``heartbeat_interval *
    heartbeat_misses`` seconds without a heartbeat. ``rank_policy``: ``stable``
    (members keep their ranks across rounds), ``sorted`` (by address) or
    ``arrival``. ``on_retry(what, error, seconds_left)`` hears of each transient
    store failure while a step is retried.

    Example::

        with Rendezvous("tcp://10.0.0.1:29400", "job1", min_nodes=2, max_nodes=4) as node:
            info = node.next_rendezvous()   # blocks until a round with this node completes
            train(info.rank, info.world_size, info.coordinator)
            if node.wait_for_change(timeout=60) == Change.MEMBER_LOST:
                info = node.next_rendezvous()
    """

    def __init__(
        self,
        url_or_store: str | Store,
        run_id: str,
        min_nodes: int,
        max_nodes: int,
        *,
        node_id: str | None = None,
        addr: str | None = None,
        labels: dict[str, str] | None = None,
        join_timeout: float = 600,
        last_call_timeout: float = 30,
        close_timeout: float = 30,
        heartbeat_interval: float = 5,
        heartbeat_misses: int = 3,
        rank_policy: str = "stable",
        split_brain_guard: bool = True,
        clock: Clock = time.monotonic,
        on_retry: RetryObserver | None = None,
    ) -> None:
        self.settings = RendezvousSettings(
            run_id, min_nodes, max_nodes, join_timeout, last_call_timeout, close_timeout,
            heartbeat_interval, heartbeat_misses, rank_policy, split_brain_guard,
        )  # fmt: skip
        host, port = split_addr(addr) if addr else ("", None)
        self.node_id = node_id or f"{host or socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        if not self.node_id or "/" in self.node_id:
            raise ConfigurationError(f"node_id {self.node_id!r} must be non-empty and contain no '/'")
        self._owns_store = isinstance(url_or_store, str)
        self._root_store = open_store(url_or_store) if isinstance(url_or_store, str) else url_or_store
        track_runs(self._root_store)  # a hosting node with ?metrics_port= reports runs too
        self._store = self._root_store.scoped(Layout(run_id).prefix)
        self._port = PortReservation()
        self._node = NodeIdentity(
            self.node_id,
            host or route_host(self._root_store.url),
            (lambda: port) if port else self._port.take,
            dict(labels or {}),
        )
        self._clock = clock
        self._heartbeat = Heartbeat(
            self._store,
            ttl=self.settings.lease_ttl,
            interval=heartbeat_interval,
            name=self.node_id,
            on_beat=self._after_beat,
        )
        self._recovery = Recovery(self._store, self.node_id, self._heartbeat.ensure, self.settings.lease_ttl)
        self._placement_epoch = 0
        self._outage_since: float | None = None
        """When ``wait_for_change`` first found the store failing (``None``: it answers)."""
        self._placement: Placement | None = None
        self._left_behind: str | None = None
        self._closed_down = False
        self._retry = RetryPolicy(clock=clock, on_retry=on_retry)

    @property
    def run_id(self) -> str:
        return self.settings.run_id

    @property
    def recoveries(self) -> int:
        """How many times this node re-asserted its round on a store that lost its state."""
        return self._recovery.epoch

    @property
    def last_recovery(self) -> float | None:
        """Clock reading (``time.monotonic()`` by default) of this node's last re-assertion."""
        return self._recovery.asserted_at

    @property
    def store(self) -> Store:
        """The store this node talks to (not scoped)."""
        return self._root_store

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and block until it completes; return this node's place.

        Raises ``RendezvousClosedError`` if the run is closed and
        ``RendezvousTimeoutError`` after ``join_timeout`` seconds.
        """
        deadline = self._clock() + self.settings.join_timeout
        if self._left_behind is not None:  # last round's lobby key (see Joiner._settle)
            # Best effort: nobody reads a completed round's lobby, and the key dies with our lease.
            with contextlib.suppress(StoreError), self._bounded(min(deadline, self._clock() + LAST_LOOK)):
                self._store.delete(self._left_behind)
            self._left_behind = None
        joiner = Joiner(
            self._store,
            self.settings,
            self._node,
            self._heartbeat.ensure,
            self._placement,
            renew=self._heartbeat.beat,
        )
        store_trouble: Exception | None = None
        reached = False  # the store answered a step during this call
        while True:
            now = self._clock()
            # Past the deadline, one last look (the round may just have completed), then give up.
            step_until = max(deadline, now + LAST_LOOK) if now >= deadline else deadline
            generation = self._store.generation
            try:
                step = partial(joiner.step, now)
                outcome = self._retry.run(step, deadline=step_until, what="a rendezvous step")
            except StoreStateLostError:
                if now >= deadline or self._store.generation == generation:
                    raise  # no new store to re-assert on: waiting cannot clear it
                continue  # the store came back empty: the next step re-asserts and re-enters the lobby
            except TRANSIENT as exc:
                if not reached:
                    raise  # the store never answered: its error says what is wrong
                self._give_up(joiner, exc)  # past the deadline (the retry gave up): the round did not form
            reached = True
            if isinstance(outcome, Placement):
                self._placed(outcome, joiner)
                return RendezvousInfo(self._store, outcome, self.run_id)
            if now >= deadline:
                self._give_up(joiner, store_trouble)
            if self._store.generation != generation:
                continue  # what the step read is from a store that has since lost its state
            until = deadline if outcome.until is None else min(outcome.until, deadline)
            watch = partial(self._store.wait, outcome.key, outcome.since, max(until - now, 0.0))
            try:
                self._retry.run(watch, deadline=deadline, what="waiting for the round")
            except StoreStateLostError:
                pass  # re-asserted by the next step
            except TRANSIENT as exc:
                store_trouble = exc  # escapes the retry only at the deadline: the next step looks last

    def _give_up(self, joiner: Joiner, store_trouble: Exception | None) -> NoReturn:
        waiting_for = joiner.waiting_round  # read first: leaving the lobby forgets it
        with contextlib.suppress(*TRANSIENT):  # best effort: the lobby key ends with the lease anyway
            self._retry.run(joiner.leave_lobby, deadline=self._clock() + LAST_LOOK, what="leaving the lobby")
        why = f"; {joiner.held_back}" if joiner.held_back else ""
        trouble = f"; the store: {store_trouble}" if store_trouble is not None else ""
        raise RendezvousTimeoutError(
            f"rendezvous {self.run_id!r} did not complete within {self.settings.join_timeout} s "
            f"(node {self.node_id} waiting for round {waiting_for}{why}){trouble}",
            run_id=self.run_id,
            round=waiting_for,
        ) from store_trouble

    def _placed(self, placement: Placement, joiner: Joiner) -> None:
        self._placement = placement
        if placement.rank != 0:
            self._port.release()  # only rank 0's port is the coordinator's
        self._left_behind = joiner.left_behind
        self._recovery.generation = self._store.generation
        self._recovery.window_until = 0.0
        self._placement_epoch = self._recovery.epoch

    def _after_beat(self, alive: bool) -> None:
        """Heartbeat thread: re-assert this member's round if the store lost its state."""
        placement = self._placement
        if placement is None or self._closed_down:
            return
        if self._recovery.needed() or (not alive and store_lost_round(self._store, placement.doc)):
            self._reassert(placement, force=True)

    def _reassert(self, placement: Placement, *, force: bool = False) -> None:
        self._recovery.reassert(placement.doc, placement.rank, placement.addr, self._clock(), force=force)

    def num_nodes_waiting(self) -> int:
        """Nodes in the lobby that the current round should make room for.

        A member asking for a new round always counts; other joiners count only
        while the round is below ``max_nodes`` (beyond it they are spares).
        """
        placement = self._placement
        if placement is not None and self._recovery.needed():  # torchrun asks often: a fast path
            self._patiently(partial(self._reassert, placement))
        round_ = placement.doc.round if placement else self._latest_round()
        world = placement.doc.world_size if placement else 0
        lobby = self._patiently(partial(self._store.list, Layout.lobby(round_ + 1)))
        records = [read_lobby_entry(e) for e in lobby]
        max_nodes = self.settings.max_nodes
        return sum(
            1 for r in records if r.node_id != self.node_id and counts_as_waiting(r, round_, world, max_nodes)
        )

    def wait_for_peers_to_leave(self, timeout: float) -> list[str]:
        """Block until no other node is in this node's round; return those still there at ``timeout``.

        For a node that hosts something its round reads (a store): it stays up
        while the others need it, never for a node that is gone. A member's rank
        key, and a spare's place in the next round's lobby, live with its lease,
        so a node leaves when it shuts down (the lease is revoked) or dies (the
        lease expires). Works after :meth:`shutdown` as long as the store is open.
        """
        placement = self._placement
        if placement is None:
            return []
        area = Layout.area(placement.doc.round)
        held = (Layout.ranks(placement.doc.round), Layout.lobby(placement.doc.round + 1))
        deadline = self._clock() + timeout
        while True:
            listing = self._store.list(area)
            peers = {e.key.rsplit("/", 1)[1] for e in listing if e.key.startswith(held)} - {self.node_id}
            remaining = deadline - self._clock()
            if not peers or remaining <= 0:
                return sorted(peers)
            self._store.wait(area, listing.revision, remaining)

    def wait_for_change(self, timeout: float) -> str | None:
        """Block until this node's round changes; return a :class:`Change` value or ``None``.

        A change is a member lost (evicted or left), nodes waiting to join, a
        newer round, or the run closing. Costs nothing while nothing happens.
        Returns (or raises the store's error) within ``timeout`` plus a moment.
        """
        placement = self._placement
        if placement is None:
            raise RendezvousStateError(
                "wait_for_change needs a completed next_rendezvous()", run_id=self.run_id
            )
        deadline = self._clock() + timeout
        with self._bounded(deadline + LAST_LOOK):  # what changed is read after the wait
            return self._watch_round(placement, deadline)

    def _watch_round(self, placement: Placement, deadline: float) -> str | None:
        since, epoch, verify = placement.revision, self._placement_epoch, False
        self._outage_since = None
        while True:
            if self._recovery.needed():
                self._patiently(partial(self._reassert, placement), deadline)
            if self._recovery.epoch != epoch:  # re-asserted: watch the new store from there
                since, epoch, verify = self._recovery.revision, self._recovery.epoch, True
            now = self._clock()
            window_end = self._recovery.window_until
            if verify and now >= window_end:
                check = partial(members_missing, self._store, placement.doc)
                lost, since = self._patiently(check, deadline)
                if lost:
                    return Change.MEMBER_LOST
                verify = False
            until = min(deadline, window_end) if verify else deadline
            revision = self._watch(Layout.area(placement.doc.round), since, until)
            if revision is None:
                if self._clock() < deadline:
                    continue  # the recovery window ended: verify, then watch on
                return None
            if revision < 0:
                continue
            change = self._news(placement, since, revision, in_recovery=verify)
            if change is not None:
                return change
            since = revision

    def release_port(self) -> None:
        """Let go of the coordinator port this node holds, so a command can bind it without
        ``SO_REUSEADDR``. Call it just before starting that command. Idempotent."""
        self._port.release()

    def confirm_placement(self) -> None:
        """Tell a node that hosts the store that this node has read its placement."""
        placement, lease = self._placement, self._heartbeat.lease
        if placement is None:
            raise RendezvousStateError(
                "confirm_placement needs a completed next_rendezvous()", run_id=self.run_id
            )
        if lease is None:
            return  # evicted meanwhile: the host no longer waits for this node anyway
        key = Layout.placement_read(placement.doc.round) + self.node_id
        self._retry.run(
            partial(self._store.put, key, b"", lease=lease),
            deadline=self._clock() + self.settings.lease_ttl,
            what="confirming the placement",
        )

    def wait_placements_read(self, timeout: float) -> list[str]:
        """Block until every other member of this node's round has confirmed its placement or
        is gone (its rank key ended with its lease); return those still unconfirmed at ``timeout``.

        A node hosting the store calls this before it leaves, so no member loses
        the store before it has read where it belongs.
        """
        placement = self._placement
        if placement is None:
            return []
        round_ = placement.doc.round
        deadline = self._clock() + timeout
        while True:
            confirmed = self._store.list(Layout.placement_read(round_))
            ranks = self._store.list(Layout.ranks(round_))
            done = {e.key.rsplit("/", 1)[1] for e in confirmed} | {self.node_id}
            pending = [e.key.rsplit("/", 1)[1] for e in ranks if e.key.rsplit("/", 1)[1] not in done]
            remaining = deadline - self._clock()
            if not pending or remaining <= 0:
                return pending
            # Both live under the round's area: one watch sees a confirmation and a death.
            self._store.wait(Layout.area(round_), min(confirmed.revision, ranks.revision), remaining)

    def _news(self, placement: Placement, since: int, revision: int, *, in_recovery: bool) -> str | None:
        """What changed in the round between ``since`` and ``revision``, if it matters."""
        round_ = placement.doc.round
        doc = self._doc()
        if doc is not None and doc.closed:
            return Change.CLOSED
        if doc is None or doc.round < round_:  # the store was emptied: re-assert, then watch again
            self._reassert(placement, force=True)
            return None
        if doc.round != round_ or doc.token != placement.doc.token:
            return Change.NEW_ROUND
        # While members re-assert their rank keys after a store lost its state, rank keys
        # appear; a member lost is judged once, when the recovery window ends.
        if not in_recovery and self._store.wait(Layout.ranks(round_), since, 0) is not None:
            return Change.MEMBER_LOST
        if self.num_nodes_waiting() > 0:
            return Change.NODES_WAITING
        return None

    def _watch(self, prefix: str, since: int, until: float) -> int | None:
        """``store.wait`` until ``until``; ``-1`` when the store lost its state or failed (look again).

        A store that fails is given one lease ttl to come back (a restart, a failover: the
        members then re-assert the round); past that, or past ``until``, its error is raised.
        """
        try:
            revision = self._store.wait(prefix, since, max(until - self._clock(), 0.0))
        except StoreStateLostError:
            return -1
        except TRANSIENT:
            now = self._clock()
            if self._outage_since is None:
                self._outage_since = now
            if now >= until or now - self._outage_since >= self.settings.lease_ttl:
                raise
            time.sleep(RETRY_PAUSE)  # the store is failing over or restarting: not synchronisation
            return -1
        self._outage_since = None
        return revision

    def _patiently(self, action: Callable[[], T], deadline: float | None = None) -> T:
        """Run a store action, retrying transient errors and a lost state until ``deadline``
        (default: one lease ttl from now); the heartbeat thread re-asserts meanwhile anyway."""
        if deadline is None:
            deadline = self._clock() + self.settings.lease_ttl
        while True:
            try:
                return self._retry.run(action, deadline=deadline, what="a store call")
            except StoreStateLostError:
                if self._clock() >= deadline:
                    raise

    def is_closed(self) -> bool:
        """Whether the run was closed (``set_closed``): joining it would raise ``RendezvousClosedError``."""
        doc = self._doc()
        return doc is not None and doc.closed

    def set_closed(self) -> None:
        """Close the run: waiting and later joins raise ``RendezvousClosedError``.

        Every store call ends within ``close_timeout``.
        """
        deadline = self._clock() + self.settings.close_timeout
        with self._bounded(deadline):
            self._close_by(deadline)

    def _close_by(self, deadline: float) -> None:
        while True:
            entry = self._store.get(Layout.doc)
            doc = decode_round_doc(entry.value, Layout.doc) if entry else RoundDoc(0, RoundState.COMPLETE)
            if doc.closed:
                return
            closed = replace(doc, state=RoundState.CLOSED)
            if self._store.compare_and_set(
                Layout.doc, encode(closed), entry.version if entry else 0
            ).succeeded:
                self._store.put(Layout.closed_marker(doc.round), b"closed")
                return
            if self._clock() >= deadline:
                raise RendezvousTimeoutError(
                    f"could not close rendezvous {self.run_id!r} within {self.settings.close_timeout} s",
                    run_id=self.run_id,
                )

    def shutdown(self) -> bool:
        """Leave: stop the heartbeat and end the lease so peers see it at once. Idempotent."""
        if self._closed_down:
            return False
        self._closed_down = True
        self._port.release()
        if self._placement is not None:  # so `rdzv status` shows "left", not "evicted"
            with contextlib.suppress(StoreError):
                self._store.put(Layout.left(self._placement.doc.round) + self.node_id, b"")
        self._heartbeat.stop(revoke=True)
        if self._owns_store:
            self._root_store.close()
        return True

    def _bounded(self, deadline: float) -> contextlib.AbstractContextManager[float]:
        """Bound store calls by ``deadline``, read on this node's clock (tests may fake it)."""
        return bounded(time.monotonic() + max(deadline - self._clock(), 0.0))

    def _doc(self) -> RoundDoc | None:
        entry = self._store.get(Layout.doc)
        return decode_round_doc(entry.value, Layout.doc) if entry else None

    def _latest_round(self) -> int:
        doc = self._doc()
        return doc.round if doc else 0

    def __enter__(self) -> Rendezvous:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
