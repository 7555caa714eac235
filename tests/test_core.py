"""Pure decision functions of rdzv.core."""

from __future__ import annotations

import ast
import pathlib

import pytest

import rdzv.core
from rdzv.core import (
    JoinRecord,
    RoundDoc,
    RoundState,
    assign_ranks,
    attempt_delay,
    counts_as_waiting,
    natural_key,
    plan_round,
)
from rdzv.core.records import decode_join, decode_round_doc, encode
from rdzv.errors import RendezvousStateError


def rec(
    node: str, arrival: int, *, host: str = "h", prev_round: int = 0, prev_rank: int | None = None
) -> JoinRecord:
    return JoinRecord(node, host, 1000, arrival, lease=arrival, prev_round=prev_round, prev_rank=prev_rank)


def test_natural_key_orders_numbers_by_value() -> None:
    hosts = ["node10", "node9", "node1", "node100", "alpha"]
    assert sorted(hosts, key=natural_key) == ["alpha", "node1", "node9", "node10", "node100"]


def test_attempt_delay_only_for_arrivals_at_or_past_min() -> None:
    assert attempt_delay(1, 2, 4, 30) is None
    assert attempt_delay(2, 2, 4, 30) == 30
    assert attempt_delay(4, 2, 4, 30) == 0
    assert attempt_delay(9, 2, 4, 30) == 0


def test_plan_completes_at_max_and_leaves_later_arrivals_as_spares() -> None:
    lobby = [rec(f"n{i}", i) for i in (5, 1, 3, 2, 4)]
    members = plan_round(lobby, 2, 3, last_call_due=False)
    assert members is not None
    assert [m.node_id for m in members] == ["n1", "n2", "n3"]


def test_plan_waits_below_max_until_last_call() -> None:
    lobby = [rec("a", 1), rec("b", 2)]
    assert plan_round(lobby, 2, 4, last_call_due=False) is None
    assert plan_round(lobby, 2, 4, last_call_due=True) is not None
    assert plan_round(lobby[:1], 2, 4, last_call_due=True) is None


def test_stable_ranks_keep_survivors_and_fill_gaps_in_address_order() -> None:
    survivors = [rec("a", 1, prev_round=3, prev_rank=0), rec("c", 2, prev_round=3, prev_rank=2)]
    newcomers = [rec("z", 3, host="node10"), rec("y", 4, host="node9")]
    ordered = assign_ranks(survivors + newcomers, "stable", previous_round=3)
    assert [r.node_id for r in ordered] == ["a", "y", "c", "z"]


def test_stable_ranks_ignore_ranks_from_older_rounds_and_out_of_range() -> None:
    members = [rec("a", 1, prev_round=1, prev_rank=0), rec("b", 2, prev_round=3, prev_rank=5), rec("c", 3)]
    ordered = assign_ranks(members, "stable", previous_round=3)
    assert sorted(r.node_id for r in ordered) == ["a", "b", "c"]
    assert len(ordered) == 3


def test_sorted_policy_is_natural_sort_of_host_then_node() -> None:
    members = [rec("x", 1, host="node10"), rec("y", 2, host="node9"), rec("w", 3, host="node9")]
    assert [r.node_id for r in assign_ranks(members, "sorted", 0)] == ["w", "y", "x"]


def test_unknown_rank_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="stable"):
        assign_ranks([], "random", 0)


def test_records_round_trip_as_versioned_json() -> None:
    doc = RoundDoc(3, RoundState.COMPLETE, 4, "h:1", "t")
    raw = encode(doc)
    assert b'"schema":1' in raw
    assert decode_round_doc(raw, "doc") == doc
    join = rec("a", 0)
    assert decode_join(encode(join), "k") == join


def test_record_of_unknown_schema_names_key_and_schema() -> None:
    with pytest.raises(RendezvousStateError, match="'rdzv/x/doc' has schema 2"):
        decode_round_doc(b'{"schema":2,"round":1}', "rdzv/x/doc")


def test_garbage_record_is_a_state_error_not_a_crash() -> None:
    with pytest.raises(RendezvousStateError, match="unreadable"):
        decode_round_doc(b"\x80\x81", "doc")


def test_core_imports_nothing_above_it() -> None:
    allowed = {"rdzv.core", "rdzv.errors"}
    for path in pathlib.Path(rdzv.core.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rdzv"):
                assert any(node.module.startswith(a) for a in allowed), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in {"re", "json", "dataclasses", "enum", "typing"}


def test_rejoining_members_always_wait_and_newcomers_only_below_max() -> None:
    member, newcomer = rec("m", 1, prev_round=3, prev_rank=0), rec("n", 2)
    assert counts_as_waiting(member, 3, world_size=4, max_nodes=4)
    assert not counts_as_waiting(newcomer, 3, world_size=4, max_nodes=4)  # a spare
    assert counts_as_waiting(newcomer, 3, world_size=3, max_nodes=4)
    assert counts_as_waiting(newcomer, 0, world_size=0, max_nodes=0)  # no round yet


def test_split_brain_guard_needs_a_strict_majority_of_the_previous_round() -> None:
    from rdzv.core.plan import has_majority

    two_of_four = [rec("a", 1, prev_round=3), rec("b", 2, prev_round=3), rec("new", 3)]
    assert not has_majority(two_of_four, 3, 4)  # half is not a majority: the other half may go on
    assert has_majority([*two_of_four, rec("c", 4, prev_round=3)], 3, 4)
    assert not has_majority([rec("a", 1, prev_round=2), rec("b", 2, prev_round=2)], 3, 3)  # older round


def test_a_rebuilt_round_document_says_so_and_older_ones_read_as_not_rebuilt() -> None:
    doc = RoundDoc(4, RoundState.COMPLETE, 2, "h:1", "t", 1, 2, rebuilt=True)
    assert decode_round_doc(encode(doc), "doc").rebuilt
    assert not decode_round_doc(b'{"schema":1,"round":1,"state":"complete"}', "doc").rebuilt
