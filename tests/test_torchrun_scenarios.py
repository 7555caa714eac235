"""The situations torch's own agent and launcher tests stage, run with ``--rdzv-backend=rdzv``.

Our own tests (not torch's), spread over the three kinds of store: ``rdzv serve``,
the embedded TCP store (``HOST:PORT``) and ``file://``. A killed agent's
scale-down and a worker restarted with ``--max-restarts`` are in
``test_torchrun.py``; here: an agent restarted after a fault, restarts
exhausted, ranks across two roles with uneven ``--nproc-per-node``, agents that
finish at different times (torch's exit barrier), and a single node on
``HOST:0`` (what ``--standalone`` passes).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdzv.testing.net import free_port, wait_for_port
from rdzv.testing.servers import serve_process
from torchrun_agents import (
    FAST_CONF,
    RUN_SECONDS,
    TRAIN,
    Agent,
    assert_world_of_four,
    launcher,
    results,
    torchrun_args,
)

pytestmark = [
    pytest.mark.torchrun,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed"),
]

WORLD_OF_FOUR = r'^STEP .*"world": 4'


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    with launcher(tmp_path) as launch:
        yield launch


def file_store(tmp_path: Path) -> str:
    """A ``file://`` store in a directory of its own (the store expects it to exist)."""
    (tmp_path / "store").mkdir()
    return f"file://{tmp_path}/store"


def finish_all(*agents: Agent) -> tuple[list[int], str]:
    codes = [agent.finish() for agent in agents]
    return codes, "\n".join(a.output for a in agents)


def test_an_agent_restarted_after_a_fault_rejoins_over_rdzv_serve(start: Any, tmp_path: Path) -> None:
    with serve_process() as server:
        args = torchrun_args(server.url, "fault", "2", "--max-restarts=3")
        first, doomed = (start(*args, str(TRAIN), "hold") for _ in range(2))
        first.wait_for_line(WORLD_OF_FOUR)
        doomed.kill()
        replacement = start(*args, str(TRAIN), "hold")
        replacement.wait_for_line(WORLD_OF_FOUR)
        (tmp_path / "release").touch()
        codes, output = finish_all(first, replacement)
    assert codes == [0, 0], output
    found = results(first, replacement)
    assert_world_of_four(found, output)
    # The survivor's workers were restarted (a new attempt), the replacement's are its first.
    assert {r["attempt"] for r in first.records("RESULT")} == {1}, output
    assert {r["attempt"] for r in replacement.records("RESULT")} == {0}, output


def test_restarts_exhausted_end_the_run_over_a_file_store_with_torchs_quoted_conf(
    start: Any, tmp_path: Path
) -> None:
    # Quoted as torch's test_run.py passes it, with c10d's keys in it.
    conf = (
        "'join_timeout=20,last_call_timeout=1,keep_alive_interval=1,keep_alive_max_attempt=3,"
        "read_timeout=5,heartbeat_timeout=5,store_type=tcp,is_host=true'"
    )
    args = torchrun_args(file_store(tmp_path), "exhausted", "1", "--max-restarts=1", conf=conf)
    agent = start(*args, str(TRAIN), "fail-always")
    code = agent.finish()
    assert code != 0, agent.output
    assert sorted(r["attempt"] for r in agent.records("FAILING")) == [0, 1], agent.output
    assert "heartbeat_timeout, store_type: no effect with --rdzv-backend=rdzv" in agent.output
    assert "is_host has no effect with file://" in agent.output


def test_ranks_across_two_roles_with_uneven_nproc_per_node_on_the_embedded_store(start: Any) -> None:
    port = free_port()
    trainer = start(
        *torchrun_args(port, "roles", "2", "--role=trainer", conf=FAST_CONF + ",is_host=true", nproc=1),
        str(TRAIN),
        "sum",
    )
    wait_for_port("127.0.0.1", port, RUN_SECONDS)
    reader = start(
        *torchrun_args(port, "roles", "2", "--role=reader", conf=FAST_CONF + ",is_host=false", nproc=2),
        str(TRAIN),
        "sum",
    )
    codes, output = finish_all(trainer, reader)
    assert codes == [0, 0], output
    found = results(trainer, reader)
    assert [r["rank"] for r in found] == [0, 1, 2], output
    assert {(r["world"], r["sum"]) for r in found} == {(3, 6.0)}, output
    by_role = {
        role: sorted((r["role_rank"], r["role_world"], r["local_world"]) for r in found if r["role"] == role)
        for role in ("trainer", "reader")
    }
    assert by_role == {"trainer": [(0, 1, 1)], "reader": [(0, 2, 2), (1, 2, 2)]}, output
    assert {r["group_rank"] for r in found} == {0, 1}, output


def test_agents_finishing_apart_meet_in_the_exit_barrier_over_a_file_store(
    start: Any, tmp_path: Path
) -> None:
    args = torchrun_args(file_store(tmp_path), "drift", "2")
    agents = [start(*args, str(TRAIN), "drift:3") for _ in range(2)]
    codes, output = finish_all(*agents)
    assert codes == [0, 0], output
    assert_world_of_four(results(*agents), output)
    first = next(a for a in agents if any(r["group_rank"] == 0 for r in a.records("RESULT")))
    waited = re.search(r"Done waiting for other agents\. Elapsed: ([\d.]+) seconds", first.output)
    assert waited is not None, first.output
    assert float(waited.group(1)) >= 2, first.output  # it waited for the late node's workers


@pytest.mark.parametrize("share", [True, False], ids=["agent-store", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"])
def test_a_single_node_on_port_zero_hosts_its_own_store(tmp_path: Path, share: bool) -> None:
    env = {} if share else {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    with launcher(tmp_path, **env) as start:
        agent = start(*torchrun_args("localhost:0", "standalone", "1"), str(TRAIN), "sum")
        code = agent.finish()
    assert code == 0, agent.output
    found = results(agent)
    assert [(r["rank"], r["world"], r["sum"]) for r in found] == [(0, 2, 3.0), (1, 2, 3.0)], agent.output
    assert {r["agent_store"] for r in found} == {str(share)}, agent.output
    # Shared, the workers reach the agent's TCPStore as clients; not shared, rank 0's worker
    # binds MASTER_PORT itself: either way the all_reduce shows the port was the right one.
