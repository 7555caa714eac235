"""Many processes rendezvous over etcd:// on real etcd, also while the leader is killed."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from rdzv.registry import open_store
from rdzv.rendezvous.layout import Layout
from rdzv.testing.etcd import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NODE = """
import sys
from rdzv import Rendezvous

url, run_id, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Rendezvous(url, run_id, nodes, nodes, join_timeout=90, heartbeat_interval=2, addr="127.0.0.1") as rv:
    info = rv.next_rendezvous()
    print(info.rank, info.world_size, info.round, flush=True)
"""
PATIENCE = 100.0


class Nodes:
    """Node processes, each running ``NODE``; killed on exit if still running."""

    def __init__(self, url: str, run_id: str, count: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", NODE, url, run_id, str(count)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]

    def results(self) -> list[tuple[int, int, int]]:
        deadline = time.monotonic() + PATIENCE
        outputs = []
        for proc in self.procs:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            assert proc.returncode == 0, err
            rank, world, round_ = map(int, out.split())
            outputs.append((rank, world, round_))
        return outputs

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def run_id() -> str:
    return f"job-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spawn() -> Iterator[list[Nodes]]:
    groups: list[Nodes] = []
    yield groups
    for group in groups:
        group.kill()


def _assert_one_round_with_unique_ranks(results: list[tuple[int, int, int]], count: int) -> None:
    assert sorted(rank for rank, _, _ in results) == list(range(count))
    assert {(world, round_) for _, world, round_ in results} == {(count, 1)}


def test_sixteen_processes_rendezvous_over_etcd(etcd: EtcdCluster, spawn: list[Nodes], run_id: str) -> None:
    spawn.append(Nodes(etcd.url(f"rdzv-test/{run_id}"), run_id, 16))
    _assert_one_round_with_unique_ranks(spawn[0].results(), 16)


def test_rendezvous_completes_when_the_leader_is_killed_while_nodes_join(
    etcd3: EtcdCluster, spawn: list[Nodes], run_id: str
) -> None:
    leader = etcd3.leader()
    order = [leader] + [i for i in range(3) if i != leader]  # nodes prefer the doomed leader
    count = 8
    spawn.append(Nodes(etcd3.url(f"rdzv-test/{run_id}", order), run_id, count))
    lobby = f"/rdzv-test/{run_id}/{Layout(run_id).prefix}{Layout.lobby(1)}"
    with open_store(etcd3.url("", order[1:])) as observer:
        listing = observer.list(lobby)
        deadline = time.monotonic() + PATIENCE
        while len(listing) < count // 2:  # kill once about half the nodes have joined
            assert time.monotonic() < deadline, "nodes did not join"
            observer.wait(lobby, listing.revision, deadline - time.monotonic())
            listing = observer.list(lobby)
        etcd3.kill(leader)
    _assert_one_round_with_unique_ranks(spawn[0].results(), count)
