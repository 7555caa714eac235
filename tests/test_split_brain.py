"""The split-brain guard: a proxy splits five nodes between two candidate hosts; at most
one side forms a round, in every run.

Two real ``rdzv serve`` processes are the candidate hosts. Every node reaches each
through its own proxy link, so the test decides per node which host it can see.
After round K forms on the first host, the links of ``cut`` nodes to it reject
everything: those nodes fail over to the second host, rebuild round K there and,
once the others' leases are gone, each side wants round K+1. A round formed on a
store that did not hold round K (or on a store that may fail over) needs a strict
majority of round K's members: the majority side goes on, the other times out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rdzv.testing.faultproxy import FaultProxy, Link, Mode
from rdzv.testing.servers import ServerProcess, serve_process
from recovery_nodes import Event, Node, each

pytestmark = pytest.mark.timeout(120)

TOKEN = "split-token"
NODES = 5
JOIN_TIMEOUT = 8.0
SPLITS = (2, 3, 1, 4, 2)
"""How many of the five nodes are cut off from the first host, one run each."""


@dataclass
class Run:
    run_id: str
    cut: int
    nodes: list[Node]
    first_links: list[Link]
    round: int = 0

    def side(self, node: Node) -> str:
        return "cut" if self.nodes.index(node) < self.cut else "kept"


def _start(proxy: FaultProxy, hosts: tuple[ServerProcess, ServerProcess], run_id: str, cut: int,
           guard: bool) -> Run:  # fmt: skip
    nodes, first_links = [], []
    for i in range(NODES):
        first = proxy.link(f"{run_id}/n{i}->h1", ("127.0.0.1", hosts[0].port))
        second = proxy.link(f"{run_id}/n{i}->h2", ("127.0.0.1", hosts[1].port))
        url = f"tcp://127.0.0.1:{first.port},127.0.0.1:{second.port}?token={TOKEN}&is_host=0"
        nodes.append(Node(url, run_id, f"n{i}", 1, NODES, join_timeout=JOIN_TIMEOUT, guard=guard))
        first_links.append(first)
    return Run(run_id, cut, nodes, first_links)


def _outcome(node: Node, after_round: int, deadline: float) -> Event:
    """The node's next round after ``after_round``, or its timeout."""
    return node.next_event(
        lambda e: e["event"] == "timeout" or (e["event"] == "placed" and e["round"] > after_round), deadline
    )


@pytest.fixture
def two_hosts() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with serve_process(token=TOKEN) as first, serve_process(token=TOKEN) as second:
        yield first, second


def test_a_partition_between_two_hosts_lets_at_most_one_side_form_a_round(
    two_hosts: tuple[ServerProcess, ServerProcess],
) -> None:
    runs: list[Run] = []
    with FaultProxy() as proxy:
        try:
            # Five guarded runs and one with the guard off, side by side on the same two hosts.
            for index, cut in enumerate(SPLITS):
                runs.append(_start(proxy, two_hosts, f"split{index}", cut, guard=True))
            control = _start(proxy, two_hosts, "unguarded", 2, guard=False)
            runs.append(control)
            for run in runs:
                full = each(run.nodes, lambda e: e["event"] == "placed" and e["world"] == NODES, 60)
                run.round = full[0]["round"]
                assert {e["round"] for e in full} == {run.round}
            for run in runs:
                for link in run.first_links[: run.cut]:
                    link.set_mode(Mode.REJECT)
            deadline = time.monotonic() + 4 * JOIN_TIMEOUT
            two_groups = 0
            guarded = runs[:-1]
            for run in guarded:
                outcomes = {node.node_id: _outcome(node, run.round, deadline) for node in run.nodes}
                formed = {run.side(n) for n in run.nodes if outcomes[n.node_id]["event"] == "placed"}
                two_groups += len(formed) == 2
                majority = "cut" if 2 * run.cut > NODES else "kept"
                for node in run.nodes:
                    outcome = outcomes[node.node_id]
                    if run.side(node) == majority:
                        assert outcome["event"] == "placed", outcome
                        assert outcome["world"] == (run.cut if majority == "cut" else NODES - run.cut)
                    else:
                        assert outcome["event"] == "timeout", outcome
                        assert "split-brain guard" in outcome["error"]
            print(f"\nsplit-brain guard: {len(guarded)} runs, {two_groups} formed two groups")
            assert two_groups == 0
            # The guard is what holds the minority back: without it both sides go on.
            unguarded = {control.side(n) for n in control.nodes
                         if _outcome(n, control.round, deadline)["event"] == "placed"}  # fmt: skip
            assert unguarded == {"cut", "kept"}
        finally:
            for run in runs:
                for node in run.nodes:
                    node.kill()
