"""What a rendezvous hands its caller: ``RendezvousInfo`` (this node's place) and ``Change`` kinds."""

from __future__ import annotations

from rdzv.core.records import decode_members
from rdzv.errors import RendezvousStateError
from rdzv.rendezvous.join import Placement
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.recovery import rebuild_members
from rdzv.store.base import Store

__all__ = ["Change", "RendezvousInfo"]


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
        self._doc = doc
        self._members: list[str] | None = None

    @property
    def members(self) -> list[str]:
        """Node ids in rank order (fetched from the store on first use: O(world size) bytes)."""
        if self._members is None:
            key = Layout.members(self.round)
            entry = self._run_store.get(key)
            record = decode_members(entry.value, key) if entry else None
            if record is None and self._doc is not None:  # a store that lost its state
                record = rebuild_members(self._run_store, self._doc)
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
