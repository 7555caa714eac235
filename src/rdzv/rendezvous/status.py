"""What a run looks like right now, read from its store (for ``rdzv status``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rdzv.core.plan import counts_as_waiting
from rdzv.core.records import decode_members, decode_rank, decode_round_doc
from rdzv.rendezvous.join import read_lobby_entry
from rdzv.rendezvous.layout import ROOT, Layout
from rdzv.store.base import Store


@dataclass(frozen=True)
class MemberStatus:
    rank: int
    node_id: str
    addr: str
    alive: bool
    """Its rank key still exists, so its lease has not expired."""
    since_heartbeat: float | None
    """Seconds since its last heartbeat, by the store's clock; ``None`` if unknown."""
    left: bool = False
    """Not alive because it left cleanly (``shutdown``), rather than evicted."""


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    round: int
    state: str
    """``unknown`` (the store has no key of the run), ``joining`` (no round yet), ``complete``
    or ``closed``."""
    world_size: int = 0
    coordinator: str = ""
    min_nodes: int = 0
    max_nodes: int = 0
    members: list[MemberStatus] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    """Nodes the running round should make room for (re-joining members, or below max)."""
    spares: list[str] = field(default_factory=list)
    """Nodes queued while the round is full."""
    revision: int = 0


def known_runs(store: Store) -> list[str]:
    """The run ids that have keys in this store."""
    return sorted({e.key[len(ROOT) :].split("/", 1)[0] for e in store.list(ROOT)})


def read_status(store: Store, run_id: str) -> RunStatus:
    """Read the run's round document, members, liveness and lobby (O(members) bytes)."""
    run = store.scoped(Layout(run_id).prefix)
    entry = run.get(Layout.doc)
    doc = decode_round_doc(entry.value, Layout.doc) if entry else None
    round_ = doc.round if doc else 0
    lobby = run.list(Layout.lobby(round_ + 1))
    records = [read_lobby_entry(e) for e in lobby]
    world, max_nodes = (doc.world_size, doc.max_nodes) if doc else (0, 0)
    waiting = [r.node_id for r in records if counts_as_waiting(r, round_, world, max_nodes)]
    spares = [r.node_id for r in records if not counts_as_waiting(r, round_, world, max_nodes)]
    if doc is None:
        state = "joining" if records or run.list("") else "unknown"
        return RunStatus(run_id, 0, state, waiting=waiting, revision=lobby.revision)
    return RunStatus(
        run_id=run_id,
        round=round_,
        state=doc.state.value,
        world_size=doc.world_size,
        coordinator=doc.coordinator,
        min_nodes=doc.min_nodes,
        max_nodes=doc.max_nodes,
        members=_members(run, round_, doc.token),
        waiting=waiting,
        spares=spares,
        revision=lobby.revision,
    )


def _members(run: Store, round_: int, token: str) -> list[MemberStatus]:
    entry = run.get(Layout.members(round_))
    if entry is None:
        return []
    record = decode_members(entry.value, Layout.members(round_))
    ranks_prefix = Layout.ranks(round_)
    left_prefix = Layout.left(round_)
    left = {e.key[len(left_prefix) :] for e in run.list(left_prefix)}
    live = {}
    for rank_entry in run.list(ranks_prefix):
        if decode_rank(rank_entry.value, rank_entry.key).token == token:
            live[rank_entry.key[len(ranks_prefix) :]] = rank_entry.lease
    result = []
    for position, (node, addr) in enumerate(zip(record.members, record.addrs, strict=True)):
        lease = live.get(node)
        info = run.lease_info(lease) if lease is not None else None
        since = info.since_refresh if info else None
        result.append(
            MemberStatus(position, node, addr, node in live, since, node not in live and node in left)
        )
    return result
