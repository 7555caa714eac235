"""The job outlives its store: real ``rdzv serve`` and node processes, SIGKILL, a restarted server.

Each node is a ``recovery_worker.py`` process reporting what it observes (placed,
re-asserted, a change of its round) with ``time.monotonic()`` stamps.
"""

from __future__ import annotations

import signal
import time

import pytest

from rdzv.core.records import decode_round_doc
from rdzv.registry import open_store
from rdzv.rendezvous.layout import Layout
from rdzv.testing.net import free_port
from rdzv.testing.servers import ServerProcess, start_server
from recovery_nodes import Node, each, event, node_group, placed

pytestmark = pytest.mark.timeout(120)

TOKEN = "recovery-token"
HEARTBEAT = 0.5
LEASE_TTL = HEARTBEAT * 4  # heartbeat_misses=4 in the worker


def _url(server: ServerProcess) -> str:
    return f"tcp://127.0.0.1:{server.port}?token={TOKEN}&is_host=0"


def _restart(server: ServerProcess) -> ServerProcess:
    server.kill()
    server.stop()
    return start_server(token=TOKEN, port=server.port)


def _round_doc(server: ServerProcess, run_id: str) -> tuple[int, int]:
    with open_store(_url(server)) as store:
        entry = store.get(Layout(run_id).prefix + Layout.doc)
        assert entry is not None
        doc = decode_round_doc(entry.value, Layout.doc)
        ranks = store.list(Layout(run_id).prefix + Layout.ranks(doc.round))
        return doc.round, len(ranks)


def _changes(nodes: list[Node]) -> list[object]:
    return [e for node in nodes for e in node.drain() if e["event"] == "change"]


def test_store_restarted_on_its_port_every_member_goes_on_in_the_same_round() -> None:
    server = start_server(token=TOKEN)
    try:
        with node_group(_url(server), "restart", 4, 4, 4, heartbeat=HEARTBEAT) as nodes:
            assert {e["round"] for e in each(nodes, placed())} == {1}
            killed_at = time.monotonic()
            server = _restart(server)
            reasserted = each(nodes, event("reasserted"))
            assert {e["round"] for e in reasserted} == {1}
            took = max(e["t"] for e in reasserted) - killed_at
            print(f"\nstore restart: all members re-asserted {took:.2f} s after SIGKILL (restart included)")
            assert _round_doc(server, "restart") == (1, 4)
            # Past the recovery window (one lease ttl), nothing changed for anyone.
            time.sleep(LEASE_TTL + 1.5)  # an observation window, not synchronisation
            assert _changes(nodes) == []
    finally:
        server.stop()


def test_a_member_dead_during_the_restart_is_an_ordinary_member_lost() -> None:
    server = start_server(token=TOKEN)
    try:
        with node_group(_url(server), "dead", 4, 3, 4, heartbeat=HEARTBEAT) as nodes:
            each(nodes, placed(1))
            server.kill()
            nodes[3].kill()
            server = _restart(server)
            survivors = nodes[:3]
            each(survivors, event("reasserted"))
            changes = each(survivors, event("change"))
            # The first to judge the recovery window sees the member lost; others may see it waiting.
            assert "member-lost" in {e["change"] for e in changes} <= {"member-lost", "nodes-waiting"}
            rounds = each(survivors, placed())
            assert {(e["round"], e["world"]) for e in rounds} == {(2, 3)}
    finally:
        server.stop()


def test_fresh_nodes_on_a_restarted_store_never_start_a_parallel_round_one() -> None:
    """The members are stopped while the store restarts, so fresh nodes reach it first:
    they would form a round 1 at once; the store's youth holds them until the members
    (resumed within the hold) re-assert round 1, and all four form round 2."""
    heartbeat = 1.5  # the store holds a first round for 2.5 s: the members have 1.7 s after resuming
    server = start_server(token=TOKEN)
    try:
        with node_group(_url(server), "fresh", 2, 2, 4, heartbeat=heartbeat) as members:
            each(members, placed(1))
            server.kill()
            fresh = [Node(_url(server), "fresh", f"late{i}", 2, 2, heartbeat=heartbeat) for i in range(2)]
            try:
                for node in members:
                    node.proc.send_signal(signal.SIGSTOP)
                time.sleep(1.0)  # the fresh processes start and knock on the closed port
                server = _restart(server)
                time.sleep(0.8)  # the members stay stopped while the fresh nodes reach the new server
                for node in members:
                    node.proc.send_signal(signal.SIGCONT)
                rounds = each(members + fresh, placed())
                assert {(e["round"], e["world"]) for e in rounds} == {(2, 4)}
            finally:
                for node in fresh:
                    node.kill()
    finally:
        server.stop()


def _candidates() -> str:
    """Two candidate hosts on loopback: 127.0.0.1 and 127.0.0.2 stand for two machines."""
    return f"tcp://127.0.0.1:{free_port()},127.0.0.2:{free_port('127.0.0.2')}?token={TOKEN}"


def test_hosting_node_killed_the_next_candidate_serves_and_the_round_goes_on() -> None:
    url = _candidates()
    second = url.split(",")[1].split("?")[0]
    host = Node(url, "other-job", "host", 1, 1, heartbeat=HEARTBEAT)  # hosts, but is no member of "job"
    try:
        assert host.next_event(placed(1), time.monotonic() + 30)["hosting"] is not None
        with node_group(url, "job", 4, 4, 4, heartbeat=HEARTBEAT) as nodes:
            assert all(e["hosting"] is None for e in each(nodes, placed(1)))
            killed_at = time.monotonic()
            host.kill()
            reasserted = each(nodes, event("reasserted"))
            took = max(e["t"] for e in reasserted) - killed_at
            print(f"\nfailover: all 4 members re-asserted round 1 on {second} {took:.2f} s after SIGKILL")
            assert [e["hosting"] for e in reasserted].count(second) == 1
            time.sleep(LEASE_TTL + 1.5)  # an observation window past the recovery window
            assert _changes(nodes) == []
    finally:
        host.kill()


def test_a_hosting_member_killed_the_survivors_form_the_next_round_on_the_next_candidate() -> None:
    url = _candidates()
    with node_group(url, "job", 4, 3, 4, heartbeat=HEARTBEAT) as nodes:
        rounds = each(nodes, placed(1))
        hosts = [node for node, e in zip(nodes, rounds, strict=True) if e["hosting"]]
        assert len(hosts) == 1
        survivors = [node for node in nodes if node is not hosts[0]]
        killed_at = time.monotonic()
        hosts[0].kill()
        changes = each(survivors, event("change"))
        assert "member-lost" in {e["change"] for e in changes} <= {"member-lost", "nodes-waiting"}
        again = each(survivors, placed(2))
        took = max(e["t"] for e in again) - killed_at
        print(f"\nhosting member killed: 3 survivors in round 2 on the next candidate {took:.2f} s later")
        assert {e["world"] for e in again} == {3}
