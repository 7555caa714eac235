"""`rdzv run` end to end: real agents over a real `rdzv serve`, real worker processes, loopback.

Each agent is a `python -m rdzv run` process; its event lines on stderr are
read as they come and tests wait on them (never on sleeps). Faults are staged
the way they happen: SIGKILL of a node (agent and workers), SIGTERM, workers
exiting non-zero, a failing health check.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv.testing.agents import AgentProcess
from rdzv.testing.net import free_port
from rdzv.testing.servers import ServerProcess, serve_process

pytestmark = [pytest.mark.slow, pytest.mark.launcher, pytest.mark.timeout(90)]

PROGRAMS = Path(__file__).parent / "launcher_programs"
WORKER = PROGRAMS / "worker.py"
PATIENCE = 45.0
STARTED = r"round (\d+): started (\d+) worker\(s\), ranks \[([\d, ]+)\], pids \[([\d, ]+)\]"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serve_process() as running:
        yield running


@pytest.fixture
def agents(server: ServerProcess, request: pytest.FixtureRequest) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


def start(agents: list[AgentProcess], server: ServerProcess, run_id: str, node_id: str,
          command: list[str], *args: str, env: dict[str, str] | None = None) -> AgentProcess:  # fmt: skip
    agent = AgentProcess(server.url, run_id, node_id, command, *args, env=env)
    agents.append(agent)
    return agent


def worker(mode: str, out: Path) -> list[str]:
    return [sys.executable, str(WORKER), mode, str(out)]


def test_two_nodes_of_two_workers_see_torchrun_rdzv_and_jax_variables(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    nodes = [
        start(
            agents, server, "env", f"n{i}", worker("env", tmp_path), "--nnodes", "2", "--nproc-per-node", "2"
        )
        for i in range(2)
    ]
    assert [node.finish() for node in nodes] == [0, 0], nodes[0].text + nodes[1].text
    seen = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("env_*.json"))]
    assert sorted(int(env["RANK"]) for env in seen) == [0, 1, 2, 3]
    masters = {(env["MASTER_ADDR"], env["MASTER_PORT"], env["JAX_COORDINATOR_ADDRESS"]) for env in seen}
    assert len(masters) == 1
    ((addr, port, jax_address),) = masters
    assert (addr, jax_address.split(":")[0]) == ("127.0.0.1", "127.0.0.1")
    assert int(port) > 0
    for env in seen:
        rank, local, group = int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["GROUP_RANK"])
        assert rank == 2 * group + local
        assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["GROUP_WORLD_SIZE"]) == ("4", "2", "2")
        assert (env["ROLE_RANK"], env["ROLE_WORLD_SIZE"], env["ROLE_NAME"]) == (env["RANK"], "4", "default")
        assert (env["TORCHELASTIC_RESTART_COUNT"], env["TORCHELASTIC_MAX_RESTARTS"]) == ("0", "0")
        assert env["TORCHELASTIC_RUN_ID"] == env["RDZV_RUN_ID"] == "env"
        assert env["RDZV_ROUND"] == seen[0]["RDZV_ROUND"]
        assert env["JAX_COORDINATOR_BIND_ADDRESS"] == jax_address
        assert env["TORCHELASTIC_ERROR_FILE"]
    assert len({env["TORCHELASTIC_ERROR_FILE"] for env in seen}) == 4
    assert {(env["RDZV_NODE_ID"], env["GROUP_RANK"]) for env in seen} in (
        {("n0", "0"), ("n1", "1")},
        {("n0", "1"), ("n1", "0")},
    )
    assert all("succeeded" in node.text for node in nodes)


@pytest.mark.torchrun
def test_a_torchrun_script_runs_unchanged_gloo_all_reduce(
    agents: list[AgentProcess], server: ServerProcess
) -> None:
    script = [str(PROGRAMS / "torch_allreduce.py")]
    nodes = [start(agents, server, "torch", f"n{i}", script, "--nnodes", "2", "--nproc-per-node", "2")
             for i in range(2)]  # fmt: skip
    assert [node.finish(80) for node in nodes] == [0, 0], nodes[0].text + nodes[1].text
    out = "".join(nodes[0].stdout + nodes[1].stdout)
    assert sorted(re.findall(r"^\[(\d)\]:all_reduce ok: rank (\d) of 4", out, re.M)) == [
        (str(r), str(r)) for r in range(4)
    ]


def test_jax_initializes_with_no_arguments_and_gathers_across_processes(
    agents: list[AgentProcess], server: ServerProcess
) -> None:
    pytest.importorskip("jax")
    script = [str(PROGRAMS / "jax_allgather.py")]
    nodes = [start(agents, server, "jax", f"n{i}", script, "--nnodes", "2", "--nproc-per-node", "2")
             for i in range(2)]  # fmt: skip
    assert [node.finish(80) for node in nodes] == [0, 0], nodes[0].text + nodes[1].text
    out = "".join(nodes[0].stdout + nodes[1].stdout)
    assert len(re.findall(r"allgather ok: process \d of 4: \[0, 1, 2, 3\]", out)) == 4


def test_a_worker_failing_once_restarts_the_job_on_every_node_which_then_completes(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    args = ("--nnodes", "2", "--nproc-per-node", "2", "--max-restarts", "1")
    nodes = [start(agents, server, "once", f"n{i}", worker("fail-once", tmp_path), *args) for i in range(2)]
    assert [node.finish() for node in nodes] == [0, 0], nodes[0].text + nodes[1].text
    for node in nodes:
        assert "restarting the job (restart 1 of 1)" in node.text
        assert re.findall(r"started 2 worker\(s\).*restart count (\d)", node.text) == ["0", "1"]
    failed = [n for n in nodes if "worker failed: rank 1 (local rank 1" in n.text]
    assert len(failed) == 1
    assert "exited with code 3" in failed[0].text


def test_a_worker_failing_every_time_stops_every_node_after_the_budget_with_one_report(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    error_file = tmp_path / "agent-error.json"
    args = ("--nnodes", "2", "--nproc-per-node", "2", "--max-restarts", "2")
    nodes = [
        start(agents, server, "always", f"n{i}", worker("fail-always", tmp_path), *args,
              env={"TORCHELASTIC_ERROR_FILE": str(error_file)} if i == 0 else {})
        for i in range(2)
    ]  # fmt: skip
    codes = [node.finish() for node in nodes]
    assert codes == [1, 1], nodes[0].text + nodes[1].text
    for node in nodes:
        assert node.text.count("spent the restart budget (--max-restarts 2, shared by all nodes)") == 1
        assert node.text.count("rank 1 always fails") >= 1  # the report's stderr tail (and maybe the line)
        assert len(re.findall(r"started 2 worker\(s\)", node.text)) == 3  # first run + 2 restarts
    report = nodes[0].text[nodes[0].text.index("done (exit 1)") :]
    failures = r"^  failure: rank 1 \(local rank 1 on node n\d, round \d+\) exited with code 3"
    assert len(re.findall(failures, report, re.M)) == 3
    assert "last lines of rank 1's stderr:\n    rank 1 always fails" in report
    written = json.loads(error_file.read_text())  # torchrun's layout, for tools that read it
    assert "spent the restart budget" in written["message"]["message"]


def test_the_restart_budget_is_job_wide_nodes_failing_in_turn_spend_one_budget(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    # With torchrun's per-agent budget each node would have spent 1 of its 2 and gone on.
    args = ("--nnodes", "3", "--nproc-per-node", "1", "--max-restarts", "2")
    nodes = [
        start(agents, server, "turns", f"n{i}", worker("fail-in-turn", tmp_path), *args) for i in range(3)
    ]
    assert [node.finish() for node in nodes] == [1, 1, 1], "".join(n.text for n in nodes)
    assert [len(re.findall(r"worker failed: rank \d", node.text)) for node in nodes] == [1, 1, 1]
    for node in nodes:
        assert "3 worker failure(s) spent the restart budget (--max-restarts 2" in node.text


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until_dead(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their agent"
        time.sleep(0.05)


def test_a_third_node_scales_the_job_up_and_its_death_scales_it_down_without_spending_the_budget(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    command, args = worker("run", tmp_path), ("--nnodes", "2:3", "--nproc-per-node", "2")
    pair = [start(agents, server, "scale", f"n{i}", command, *args) for i in range(2)]
    for node in pair:
        node.expect(r"formed: .* of 4$")
        node.expect(STARTED)

    began = time.monotonic()
    third = start(agents, server, "scale", "n2", command, "--nnodes", "2:3", "--nproc-per-node", "1")
    for node in pair:
        node.expect(r"membership change \(nodes-waiting\)")
    started = []
    for node in [*pair, third]:
        node.expect(r"formed: .* of 5$")  # heterogeneous: 2 + 2 + 1 workers
        started.append(node.expect(STARTED))
    scale_up = max(at for at, _ in started) - began
    third_pids = [int(pid) for pid in started[2][1][4].split(", ")]

    third.proc.kill()  # the node dies: its agent by SIGKILL, its workers with it
    killed = time.monotonic()
    wait_until_dead(third_pids, 10)
    restarted = []
    for node in pair:
        node.expect(r"membership change \(member-lost\)")
        node.expect(r"formed: .* of 4$")
        restarted.append(node.expect(STARTED)[0])
    scale_down = max(restarted) - killed

    (tmp_path / "release").write_text("")
    assert [node.finish() for node in pair] == [0, 0], pair[0].text + pair[1].text
    for node in pair:  # membership changes leave the restart budget alone
        assert re.findall(r"restart count (\d)", node.text) == ["0", "0", "0"]
    print(f"\nscale-up: third node start -> 5 workers running: {scale_up:.2f} s")
    print(f"scale-down: SIGKILL of a node -> survivors' workers running: {scale_down:.2f} s "
          f"(lease ttl 0.6 s, last call 1 s)")  # fmt: skip


def test_sigterm_stops_the_nodes_workers_with_sigterm_exits_143_and_the_others_see_a_member_lost(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    command, args = worker("run", tmp_path), ("--nnodes", "1:2", "--nproc-per-node", "2")
    nodes = [start(agents, server, "term", f"n{i}", command, *args) for i in range(2)]
    ranks = {}
    for node in nodes:
        node.expect(r"formed: .* of 4$")
        ranks[node.node_id] = node.expect(STARTED)[1][3].split(", ")
        for _ in range(2):
            node.expect(r"running$", stdout=True)  # its SIGTERM handler is in place

    nodes[1].proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert nodes[1].finish(15) == 143
    assert time.monotonic() - sent < 5  # within --term-timeout: the workers obeyed SIGTERM
    assert {f"sigterm_n1_{rank}" for rank in ranks["n1"]} <= {p.name for p in tmp_path.iterdir()}
    assert "SIGTERM: workers stopped, node left run term" in nodes[1].text

    nodes[0].expect(r"membership change \(member-lost\)")
    nodes[0].expect(r"formed: node 0 of 1, ranks 0-1 of 2$")
    nodes[0].expect(STARTED)
    (tmp_path / "release").write_text("")
    assert nodes[0].finish() == 0, nodes[0].text


def test_a_node_whose_health_check_fails_stays_out_and_the_others_run(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    args = ("--nnodes", "2:3", "--nproc-per-node", "1")
    sick = start(agents, server, "health", "sick", worker("env", tmp_path), *args,
                 "--health-check", "echo no usable GPU >&2; exit 1")  # fmt: skip
    sick.expect(r"health check failed, not joining: .*exited with code 1: no usable GPU; retrying in 1.0 s")
    nodes = [start(agents, server, "health", f"n{i}", worker("env", tmp_path), *args,
                   "--health-check", "true") for i in range(2)]  # fmt: skip
    assert [node.finish() for node in nodes] == [0, 0], nodes[0].text + nodes[1].text
    assert all("of 2 formed" not in n.text and re.search(r"formed: node \d of 2", n.text) for n in nodes)
    seen = [json.loads(path.read_text()) for path in tmp_path.glob("env_*.json")]
    assert sorted(env["RDZV_NODE_ID"] for env in seen) == ["n0", "n1"]
    # The run is over: the sick node learns it at its next check and ends with the job's outcome.
    assert sick.finish(20) == 0
    assert "formed" not in sick.text
    assert "succeeded" in sick.text


def test_a_job_whose_store_one_of_its_nodes_hosts_ends_cleanly_on_every_node(
    agents: list[AgentProcess], tmp_path: Path
) -> None:
    url = f"tcp://127.0.0.1:{free_port()}?token=hosted"  # is_host=auto: the first node to bind hosts it
    for i in range(3):
        agents.append(AgentProcess(url, "hosted", f"n{i}", worker("env", tmp_path), "--nnodes", "3"))
    assert [node.finish() for node in agents] == [0, 0, 0], "".join(node.text for node in agents)
    assert all("succeeded" in node.text for node in agents)


def test_sigterm_while_waiting_for_a_round_leaves_at_once(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    joining = tmp_path / "joining"  # the health check runs right before the join: our cue
    lonely = start(agents, server, "lonely", "n0", worker("env", tmp_path), "--nnodes", "2",
                   "--health-check", f"touch {joining}")  # fmt: skip
    deadline = time.monotonic() + PATIENCE
    while not joining.exists():
        assert time.monotonic() < deadline, lonely.text
        time.sleep(0.02)
    lonely.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert lonely.finish(15) == 143, lonely.text
    assert time.monotonic() - sent < 5  # not the 60 s join timeout
    assert "formed" not in lonely.text


def test_a_second_sigterm_ends_the_grace_and_kills_workers_that_ignore_the_first(
    agents: list[AgentProcess], server: ServerProcess, tmp_path: Path
) -> None:
    node = start(agents, server, "stubborn", "n0", worker("stubborn", tmp_path), "--nnodes", "1",
                 "--nproc-per-node", "2", "--term-timeout", "60")  # fmt: skip
    pids = [int(pid) for pid in node.expect(STARTED)[1][4].split(", ")]
    for _ in pids:
        node.expect(r"ignores SIGTERM", stdout=True)
    node.proc.send_signal(signal.SIGTERM)
    node.expect(r"SIGTERM: stopping the workers \(grace 60 s; signal again to kill them now\)")
    node.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert node.finish(30) == 143, node.text
    assert time.monotonic() - sent < 20  # not the 60 s grace
    wait_until_dead(pids, 5)
