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

from rdzv.core.plan import counts_as_waiting
from rdzv.core.records import RoundDoc, RoundState, decode_members, decode_round_doc, encode
from rdzv.errors import ConfigurationError, RendezvousStateError, RendezvousTimeoutError, StoreError
from rdzv.registry import open_store
from rdzv.rendezvous.config import RendezvousSettings
from rdzv.rendezvous.heartbeat import Heartbeat
from rdzv.rendezvous.join import Joiner, NodeIdentity, Placement, read_lobby_entry
from rdzv.rendezvous.layout import Layout
from rdzv.retry import RetryPolicy
from rdzv.store.base import Store

__all__ = ["Change", "Rendezvous", "RendezvousInfo"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Change:
    """Why ``Rendezvous.wait_for_change`` returned."""

    MEMBER_LOST = "member-lost"
    NODES_WAITING = "nodes-waiting"
    CLOSED = "closed"
    NEW_ROUND = "new-round"


class RendezvousInfo:
    """This node's place in a completed round."""

    def __init__(self, run_store: Store, placement: Placement, run_id: str) -> None:
        doc = placement.doc
        self.run_id = run_id
        self.round = doc.round
        self.rank = placement.rank
        self.world_size = doc.world_size
        self.coordinator = doc.coordinator
        """``host:port`` for rank 0 to bind and the others to reach."""
        self.store = run_store.scoped(Layout.user(doc.round))
        """A store scoped to this run and round, for the job's own key exchange."""
        self._run_store = run_store
        self._token = doc.token
        self._members: list[str] | None = None

    @property
    def members(self) -> list[str]:
        """Node ids in rank order (fetched from the store on first use: O(world size) bytes)."""
        if self._members is None:
            key = Layout.members(self.round)
            entry = self._run_store.get(key)
            record = decode_members(entry.value, key) if entry else None
            if record is None or record.token != self._token:
                raise RendezvousStateError(
                    f"membership of round {self.round} is missing from the store",
                    run_id=self.run_id,
                    round=self.round,
                )
            self._members = record.members
        return self._members

    @property
    def coordinator_host(self) -> str:
        return self.coordinator.rsplit(":", 1)[0]

    @property
    def coordinator_port(self) -> int:
        return int(self.coordinator.rsplit(":", 1)[1])

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "round": self.round,
            "rank": self.rank,
            "world_size": self.world_size,
            "coordinator": self.coordinator,
            "members": self.members,
        }

    def __repr__(self) -> str:
        return (
            f"RendezvousInfo(run_id={self.run_id!r}, round={self.round}, rank={self.rank}, "
            f"world_size={self.world_size}, coordinator={self.coordinator!r})"
        )


class Rendezvous:
    """One node's membership in an elastic run.

    ``url_or_store`` is a store URL (``tcp://``, ``file://``, ``etcd://``,
    ``memory://``) or an open :class:`~rdzv.store.Store`. The node is evicted
    after ``heartbeat_interval * heartbeat_misses`` seconds without a heartbeat.
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
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = RendezvousSettings(
            run_id, min_nodes, max_nodes, join_timeout, last_call_timeout, close_timeout,
            heartbeat_interval, heartbeat_misses, rank_policy,
        )  # fmt: skip
        host, port = _split_addr(addr)
        self.node_id = node_id or f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        if not self.node_id or "/" in self.node_id:
            raise ConfigurationError(f"node_id {self.node_id!r} must be non-empty and contain no '/'")
        self._owns_store = isinstance(url_or_store, str)
        self._root_store = open_store(url_or_store) if isinstance(url_or_store, str) else url_or_store
        self._store = self._root_store.scoped(Layout(run_id).prefix)
        self._node = NodeIdentity(
            self.node_id, host, (lambda: port) if port else _free_port, dict(labels or {})
        )
        self._clock = clock
        self._heartbeat = Heartbeat(
            self._store, ttl=self.settings.lease_ttl, interval=heartbeat_interval, name=self.node_id
        )
        self._placement: Placement | None = None
        self._left_behind: str | None = None
        self._closed_down = False
        self._retry = RetryPolicy(clock=clock)

    @property
    def run_id(self) -> str:
        return self.settings.run_id

    @property
    def store(self) -> Store:
        """The store this node talks to (not scoped)."""
        return self._root_store

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and block until it completes; return this node's place.

        Raises ``RendezvousClosedError`` if the run is closed and
        ``RendezvousTimeoutError`` after ``join_timeout`` seconds.
        """
        if self._left_behind is not None:  # last round's lobby key (see Joiner._settle)
            # Best effort: nobody reads a completed round's lobby, and the key dies with our lease.
            with contextlib.suppress(StoreError):
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
        deadline = self._clock() + self.settings.join_timeout
        while True:
            now = self._clock()
            outcome = self._retry.run(partial(joiner.step, now), deadline=deadline, what="a rendezvous step")
            if isinstance(outcome, Placement):
                self._placement = outcome
                self._left_behind = joiner.left_behind
                return RendezvousInfo(self._store, outcome, self.run_id)
            if now >= deadline:
                self._retry.run(joiner.leave_lobby, deadline=now + 1, what="leaving the lobby")
                raise RendezvousTimeoutError(
                    f"rendezvous {self.run_id!r} did not complete within {self.settings.join_timeout} s "
                    f"(node {self.node_id} waiting for round {joiner.waiting_round})",
                    run_id=self.run_id,
                    round=joiner.waiting_round,
                )
            until = deadline if outcome.until is None else min(outcome.until, deadline)
            watch = partial(self._store.wait, outcome.key, outcome.since, max(until - now, 0.0))
            self._retry.run(watch, deadline=deadline, what="waiting for the round")

    def num_nodes_waiting(self) -> int:
        """Nodes in the lobby that the current round should make room for.

        A member asking for a new round always counts; other joiners count only
        while the round is below ``max_nodes`` (beyond it they are spares).
        """
        placement = self._placement
        round_ = placement.doc.round if placement else self._latest_round()
        world = placement.doc.world_size if placement else 0
        lobby = self._store.list(Layout.lobby(round_ + 1))
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
        """
        placement = self._placement
        if placement is None:
            raise RendezvousStateError(
                "wait_for_change needs a completed next_rendezvous()", run_id=self.run_id
            )
        round_ = placement.doc.round
        deadline = self._clock() + timeout
        since = placement.revision
        while True:
            remaining = deadline - self._clock()
            revision = self._store.wait(Layout.area(round_), since, max(remaining, 0.0))
            if revision is None:
                return None
            doc = self._doc()
            if doc is not None and doc.closed:
                return Change.CLOSED
            if doc is not None and doc.round != round_:
                return Change.NEW_ROUND
            if self._store.wait(Layout.ranks(round_), since, 0) is not None:
                return Change.MEMBER_LOST
            if self.num_nodes_waiting() > 0:
                return Change.NODES_WAITING
            since = revision

    def is_closed(self) -> bool:
        doc = self._doc()
        return doc is not None and doc.closed

    def set_closed(self) -> None:
        """Close the run: waiting and later joins raise ``RendezvousClosedError``."""
        deadline = self._clock() + self.settings.close_timeout
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
        self._heartbeat.stop(revoke=True)
        if self._owns_store:
            self._root_store.close()
        return True

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


def _split_addr(addr: str | None) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` into host and optional port."""
    if not addr:
        return socket.gethostname(), None
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"addr {addr!r}: expected HOST or HOST:PORT with PORT in 1-65535")
    return host, int(port)


def _free_port() -> int:
    """A port for this node's coordinator, were it to become rank 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port
