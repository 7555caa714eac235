"""Rendezvous semantics over the in-process store, with one thread per node."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from rdzv.errors import ConfigurationError, RendezvousClosedError, RendezvousTimeoutError
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import Change, Rendezvous, RendezvousInfo

_runs = itertools.count()
PATIENCE = 20.0


@pytest.fixture
def url() -> str:
    return f"memory://rdzv-{next(_runs)}"


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=32) as executor:
        yield executor


class Cluster:
    """Nodes of one run, each a ``Rendezvous`` joined from a pool thread."""

    def __init__(
        self, url: str, pool: ThreadPoolExecutor, min_nodes: int, max_nodes: int, **kw: float
    ) -> None:
        self.url, self.pool, self.min, self.max = url, pool, min_nodes, max_nodes
        self.options = {"last_call_timeout": 600, "heartbeat_interval": 0.2, "join_timeout": PATIENCE, **kw}
        self.nodes: dict[str, Rendezvous] = {}

    def node(self, name: str) -> Rendezvous:
        if name not in self.nodes:
            self.nodes[name] = Rendezvous(
                self.url, "job", self.min, self.max, node_id=name, addr="127.0.0.1", **self.options
            )  # type: ignore[arg-type]
        return self.nodes[name]

    def join(self, *names: str) -> dict[str, Future[RendezvousInfo]]:
        return {name: self.pool.submit(self.node(name).next_rendezvous) for name in names}

    def shutdown(self) -> None:
        for node in self.nodes.values():
            node.shutdown()


@pytest.fixture
def cluster(url: str, pool: ThreadPoolExecutor) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(min_nodes: int, max_nodes: int, **kw: float) -> Cluster:
        made.append(Cluster(url, pool, min_nodes, max_nodes, **kw))
        return made[-1]

    yield make
    for c in made:
        c.shutdown()


def results(futures: dict[str, Future[RendezvousInfo]]) -> dict[str, RendezvousInfo]:
    return {name: f.result(PATIENCE) for name, f in futures.items()}


def test_round_completes_at_max_nodes_with_unique_ranks(cluster: Callable[..., Cluster]) -> None:
    infos = results(cluster(2, 8).join(*[f"n{i}" for i in range(8)]))
    assert sorted(i.rank for i in infos.values()) == list(range(8))
    assert {(i.round, i.world_size, i.coordinator) for i in infos.values()} == {
        (1, 8, next(i.coordinator for i in infos.values() if i.rank == 0))
    }
    members = next(iter(infos.values())).members
    assert [members[i.rank] for i in infos.values()] == list(infos)


def test_round_completes_after_last_call_with_min_nodes(cluster: Callable[..., Cluster]) -> None:
    infos = results(cluster(2, 4, last_call_timeout=0.3).join("a", "b", "c"))
    assert {i.world_size for i in infos.values()} == {3}


def test_coordinator_is_rank_zero_address(cluster: Callable[..., Cluster]) -> None:
    infos = results(cluster(2, 2).join("a", "b"))
    rank0 = next(i for i in infos.values() if i.rank == 0)
    assert rank0.coordinator_host == "127.0.0.1"
    assert 0 < rank0.coordinator_port < 65536


def test_late_node_waits_and_is_counted_until_members_rejoin(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 4, last_call_timeout=0.3)
    first = results(c.join("a", "b"))
    late = c.join("c")["c"]
    assert c.node("a").wait_for_change(PATIENCE) == Change.NODES_WAITING
    assert c.node("a").num_nodes_waiting() == 1
    assert not late.done()
    second = results(c.join("a", "b"))
    assert late.result(PATIENCE).round == 2
    assert {i.round for i in second.values()} == {2}
    assert {n: i.rank for n, i in second.items()} == {n: i.rank for n, i in first.items()}


def test_spares_beyond_max_are_not_counted_as_waiting(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2)
    results(c.join("a", "b"))
    spare = c.join("s")["s"]
    assert c.node("a").store.wait("rdzv/job/r/1/next/", 0, PATIENCE) is not None  # the spare is in
    assert c.node("a").num_nodes_waiting() == 0
    assert c.node("a").wait_for_change(0.3) is None
    assert not spare.done()
    c.node("s").set_closed()
    with pytest.raises(RendezvousClosedError):
        spare.result(PATIENCE)


def test_crashed_member_is_evicted_and_survivors_reform_keeping_ranks(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(2, 3, last_call_timeout=0.3, heartbeat_misses=2)
    first = results(c.join("a", "b", "c"))
    victim = next(n for n, i in first.items() if i.rank == 1)
    c.node(victim)._heartbeat.stop(revoke=False)  # dies silently: no more refreshes
    survivors = [n for n in first if n != victim]
    assert c.node(survivors[0]).wait_for_change(PATIENCE) == Change.MEMBER_LOST
    second = results(c.join(*survivors))
    assert {i.world_size for i in second.values()} == {2}
    assert sorted(i.rank for i in second.values()) == [0, 1]
    kept = [n for n in survivors if first[n].rank == 0]
    assert all(second[n].rank == 0 for n in kept)


def test_shutdown_is_seen_by_peers_at_once(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2, heartbeat_interval=60)
    results(c.join("a", "b"))
    c.node("b").shutdown()
    assert c.node("a").wait_for_change(PATIENCE) == Change.MEMBER_LOST


def test_a_host_waits_for_peers_to_leave_by_shutdown_or_by_dying(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3, 3, heartbeat_misses=2)
    round_ = results(c.join("host", "leaver", "dead"))["host"].round
    spare = c.join("spare")["spare"]  # a full round: it waits in the next lobby, a reader too
    host = c.node("host")
    assert host._store.wait(Layout.lobby(round_ + 1), 0, PATIENCE) is not None  # the spare is in
    assert host.wait_for_peers_to_leave(0) == ["dead", "leaver", "spare"]
    host.set_closed()
    with pytest.raises(RendezvousClosedError):
        spare.result(PATIENCE)
    c.node("spare").shutdown()
    c.node("leaver").shutdown()
    c.node("dead")._heartbeat.stop(revoke=False)  # dies silently: its lease runs out (0.4 s)
    assert host.wait_for_peers_to_leave(PATIENCE) == []


def test_set_closed_wakes_waiters_and_refuses_later_joins(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3, 3)
    waiting = c.join("a")["a"]
    c.node("b").set_closed()
    with pytest.raises(RendezvousClosedError):
        waiting.result(PATIENCE)
    with pytest.raises(RendezvousClosedError):
        c.node("c").next_rendezvous()
    assert c.node("b").is_closed()
    assert c.node("c").is_closed()


def test_closing_a_running_round_is_reported_to_members(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2)
    results(c.join("a", "b"))
    c.node("b").set_closed()
    assert c.node("a").wait_for_change(PATIENCE) == Change.CLOSED


def test_join_timeout_raises_and_leaves_the_lobby(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2, join_timeout=0.2)
    with pytest.raises(RendezvousTimeoutError, match=r"did not complete.*waiting for round 1\)") as raised:
        c.node("a").next_rendezvous()
    assert raised.value.round == 1
    assert c.node("b").num_nodes_waiting() == 0


def test_a_host_waits_for_members_to_confirm_their_placement_but_not_for_the_departed(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(3, 3)
    results(c.join("host", "reader", "leaver"))
    c.node("reader").confirm_placement()
    c.node("leaver").shutdown()  # its lease ends, as a crashed member's does when it expires
    assert c.node("host").wait_placements_read(PATIENCE) == []


def test_waiting_for_placements_gives_up_at_its_timeout_naming_the_unconfirmed(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(2, 2)
    results(c.join("host", "silent"))
    assert c.node("host").wait_placements_read(0.2) == ["silent"]


def test_wait_for_change_returns_none_when_nothing_happens(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2)
    results(c.join("a", "b"))
    assert c.node("a").wait_for_change(0.2) is None


def test_round_store_is_shared_within_a_round_and_separate_across_rounds(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(2, 2)
    first = results(c.join("a", "b"))
    first["a"].store.put("addr", b"10.0.0.1")
    assert first["b"].store.get("addr").value == b"10.0.0.1"  # type: ignore[union-attr]
    second = results(c.join("a", "b"))
    assert second["b"].store.get("addr") is None


def test_many_rounds_in_a_row_stay_consistent(cluster: Callable[..., Cluster]) -> None:
    c = cluster(4, 4)
    for expected_round in range(1, 6):
        infos = results(c.join("a", "b", "c", "d"))
        assert {i.round for i in infos.values()} == {expected_round}
        assert sorted(i.rank for i in infos.values()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_nodes": 0}, "min_nodes must be a whole number >= 1"),
        ({"min_nodes": 3, "max_nodes": 2}, r"max_nodes \(2\) must be >= min_nodes \(3\)"),
        ({"run_id": "a/b"}, "run_id 'a/b' is invalid"),
        ({"rank_policy": "random"}, "expected one of stable, sorted, arrival"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a positive number"),
        ({"addr": "host:99999"}, "PORT in 1-65535"),
        ({"node_id": "a/b"}, "contain no '/'"),
    ],
)
def test_bad_settings_are_rejected_with_the_setting_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"run_id": "job", "min_nodes": 1, "max_nodes": 2, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        Rendezvous("memory://bad", **args)  # type: ignore[arg-type]


def test_context_manager_shuts_down() -> None:
    with Rendezvous("memory://ctx", "job", 1, 1, addr="127.0.0.1") as node:
        info = node.next_rendezvous()
        assert info.world_size == 1
    assert node.shutdown() is False


def test_threads_are_not_left_running(cluster: Callable[..., Cluster]) -> None:
    c = cluster(2, 2)
    results(c.join("a", "b"))
    c.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("rdzv-heartbeat") and t.is_alive()]
    for name in ("a", "b"):  # beats run on the process's scheduler: each node's task has ended
        beats = c.node(name)._heartbeat._beats
        assert beats is not None
        assert beats.cancelled
        assert beats.cancel()  # no beat in progress


def test_split_brain_guard_setting_reads_on_off_and_names_a_bad_value() -> None:
    from rdzv.errors import ConfigurationError
    from rdzv.rendezvous.config import RendezvousSettings

    base = {"run_id": "job", "min_nodes": "1", "max_nodes": "2"}
    assert RendezvousSettings.from_strings(base).split_brain_guard
    assert not RendezvousSettings.from_strings({**base, "split_brain_guard": "off"}).split_brain_guard
    with pytest.raises(ConfigurationError, match="split_brain_guard must be true or false"):
        RendezvousSettings.from_strings({**base, "split_brain_guard": "maybe"})
