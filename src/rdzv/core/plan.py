"""When a round may complete, and who tries to complete it.

A node's *arrival* is its position in the lobby of a round (from an atomic
counter). The node that arrives ``max_nodes``-th (or later) tries at once; any
node arriving ``min_nodes``-th or later tries ``last_call_timeout`` after its
own arrival. Nodes arriving earlier never plan, so a round is planned by one
or a few nodes, not all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from rdzv.core.records import JoinRecord


def attempt_delay(arrival: int, min_nodes: int, max_nodes: int, last_call_timeout: float) -> float | None:
    """Seconds after arriving at which this node tries to complete the round, or ``None``."""
    if arrival >= max_nodes:
        return 0.0
    if arrival >= min_nodes:
        return last_call_timeout
    return None


def plan_round(
    lobby: Sequence[JoinRecord], min_nodes: int, max_nodes: int, *, last_call_due: bool
) -> list[JoinRecord] | None:
    """The members of the next round in arrival order, or ``None`` if it may not complete yet.

    The round completes at once with ``max_nodes`` live joiners, or with at
    least ``min_nodes`` once the last call is due. Joiners beyond ``max_nodes``
    stay in the lobby as spares.
    """
    live = sorted(lobby, key=lambda record: (record.arrival, record.node_id))
    if len(live) >= max_nodes or (last_call_due and len(live) >= min_nodes):
        return live[:max_nodes]
    return None


def counts_as_waiting(record: JoinRecord, round_: int, world_size: int, max_nodes: int) -> bool:
    """Whether a lobby record is a node the running round should make room for.

    A member of ``round_`` asking for a new round always counts; any other
    joiner counts only while the round is below ``max_nodes`` (when it is full,
    they are spares).
    """
    return record.prev_round == round_ or not 0 < max_nodes <= world_size


def has_majority(members: Sequence[JoinRecord], prev_round: int, prev_world: int) -> bool:
    """Whether ``members`` hold a strict majority of round ``prev_round``'s ``prev_world``
    members: the split-brain guard, so that of two groups at most one goes on."""
    present = {record.node_id for record in members if record.prev_round == prev_round}
    return 2 * len(present) > prev_world
