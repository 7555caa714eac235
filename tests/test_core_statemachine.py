"""Hypothesis state machine: many nodes join, crash, beat, wait and close over a fake clock.

Nodes are driven step by step (``Joiner.step``) over a memory store whose
leases follow a fake clock, so no thread and no sleep is involved.
"""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rdzv.core.records import decode_members, decode_round_doc
from rdzv.errors import RendezvousClosedError, StoreError
from rdzv.rendezvous.config import RendezvousSettings
from rdzv.rendezvous.join import Joiner, NodeIdentity, Placement
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import Rendezvous
from rdzv.store.memory import MemoryStore
from rdzv.testing import FakeClock

NODES = [f"node{i}" for i in range(7)]
SETTINGS = RendezvousSettings("sm", 2, 4, last_call_timeout=5, heartbeat_interval=1, heartbeat_misses=3)


class RendezvousMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.root = MemoryStore(clock=self.clock)
        self.store = self.root.scoped(Layout("sm").prefix)
        self.leases: dict[str, int] = {}
        self.joiners: dict[str, Joiner] = {}
        self.placed: dict[str, Placement] = {}
        self.rounds: dict[int, dict[str, int]] = {}
        self.closed_seen = False

    def lease_of(self, node: str) -> int:
        lease = self.leases.get(node)
        if lease is None or not self.store.refresh(lease):
            lease = self.leases[node] = self.store.grant(SETTINGS.lease_ttl)
        return lease

    @initialize(nodes=st.sets(st.sampled_from(NODES), min_size=1))
    def first_joiners(self, nodes: set[str]) -> None:
        for node in sorted(nodes):
            self.join(node)

    @rule(node=st.sampled_from(NODES))
    def join(self, node: str) -> None:
        if node not in self.joiners:
            identity = NodeIdentity(node, "127.0.0.1", lambda: 7000, {})
            self.joiners[node] = Joiner(
                self.store, SETTINGS, identity, lambda: self.lease_of(node), self.placed.get(node)
            )

    @precondition(lambda self: bool(self.joiners))
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        self.step_node(data.draw(st.sampled_from(sorted(self.joiners))))

    @rule()
    def step_everyone(self) -> None:
        for node in sorted(self.joiners):
            self.step_node(node)

    def step_node(self, node: str) -> None:
        if node not in self.joiners:
            return
        try:
            outcome = self.joiners[node].step(self.clock())
        except RendezvousClosedError:
            assert self.closed_seen or self.doc_closed()
            del self.joiners[node]
            return
        except StoreError:
            return  # its lease expired mid-step: a crash-like event, retried next step
        if isinstance(outcome, Placement):
            del self.joiners[node]
            self.placed[node] = outcome
            members = self.rounds.setdefault(outcome.doc.round, {})
            assert node not in members
            members[node] = outcome.rank
            event(f"round {outcome.doc.round} placed a node")

    @rule()
    def let_time_pass_with_everyone_alive(self) -> None:
        for _ in range(4):
            self.heartbeat()
            self.advance_clock(2.0)
            self.step_everyone()

    @rule(node=st.sampled_from(NODES))
    def crash(self, node: str) -> None:
        self.joiners.pop(node, None)
        self.placed.pop(node, None)
        self.leases.pop(node, None)  # nobody refreshes it any more

    @rule()
    def heartbeat(self) -> None:
        for node in list(self.joiners) + list(self.placed):
            if node in self.leases:
                self.store.refresh(self.leases[node])

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.0, 6.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.root.advance()

    @rule()
    def close(self) -> None:
        Rendezvous(self.root, "sm", 2, 4, clock=self.clock).set_closed()
        self.closed_seen = True

    def doc_closed(self) -> bool:
        entry = self.store.get(Layout.doc)
        return entry is not None and decode_round_doc(entry.value, "doc").closed

    @invariant()
    def closed_is_sticky(self) -> None:
        if self.closed_seen:
            assert self.doc_closed()

    @invariant()
    def every_round_has_unique_ranks_within_bounds(self) -> None:
        for round_, members in self.rounds.items():
            ranks = sorted(members.values())
            assert len(set(ranks)) == len(ranks)
            world = self.world_of(round_)
            assert SETTINGS.min_nodes <= world <= SETTINGS.max_nodes
            assert all(0 <= r < world for r in ranks)

    @invariant()
    def every_round_has_one_membership(self) -> None:
        for round_, members in self.rounds.items():
            entry = self.store.get(Layout.members(round_))
            assert entry is not None
            record = decode_members(entry.value, "m")
            assert len(record.members) == self.world_of(round_)
            for node, rank in members.items():
                assert record.members[rank] == node

    def world_of(self, round_: int) -> int:
        entry = self.store.get(Layout.members(round_))
        assert entry is not None
        return len(decode_members(entry.value, "m").members)


RendezvousMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
TestRendezvousStateMachine = RendezvousMachine.TestCase
