"""The rdzv command line, run as a real subprocess where it matters."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from rdzv import Rendezvous
from rdzv.cli.main import main
from rdzv.testing.servers import serve_process

RDZV = [sys.executable, "-m", "rdzv"]
JOIN = ["join", "memory://x", "--run-id", "a"]


def rendezvous_all(nodes: list[Rendezvous]) -> None:
    threads = [threading.Thread(target=n.next_rendezvous) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RDZV, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["join", "memory://x", "--run-id", "a", "--min", "3", "--max", "1"],
            "max_nodes (1) must be >= min_nodes",
        ),
        ([*JOIN, "--min", "1"], "Missing option '--max'"),
        (["join", "bogus://x", "--run-id", "a", "--min", "1", "--max", "1"], "known schemes: "),
        (["join", "memory://x", "--run-id", "a/b", "--min", "1", "--max", "1"], "run_id 'a/b' is invalid"),
        ([*JOIN, "--min", "0", "--max", "1"], "--min"),
        (["status", "memory://x"], "--run-id is required"),
    ],
)
def test_bad_options_give_one_line_error_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("rdzv: error: ")
    assert message in result.stderr


def test_join_prints_json_with_rank_and_members() -> None:
    result = run("join", "memory://solo", "--run-id", "a", "--min", "1", "--max", "1", "--node-id", "n1")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["rank"] == 0
    assert info["world_size"] == 1
    assert info["members"] == ["n1"]
    assert info["round"] == 1


def test_join_runs_command_with_rank_variables_and_passes_exit_code() -> None:
    names = ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
    script = f"import os, sys; print(*[os.environ[n] for n in {names!r}]); sys.exit(7)"
    result = run(
        "join", "memory://cmd", "--run-id", "a", "--min", "1", "--max", "1", "--addr", "127.0.0.1:4242",
        "--format", "env", "--", sys.executable, "-c", script,
    )  # fmt: skip
    assert result.returncode == 7
    assert "export RANK=0" in result.stdout
    assert "0 1 127.0.0.1 4242" in result.stdout


def test_status_shows_members_waiting_and_spares() -> None:
    nodes = [
        Rendezvous("memory://status", "job", 2, 2, node_id=f"node{i}", addr=f"127.0.0.{i + 1}:900{i}")
        for i in range(2)
    ]
    rendezvous_all(nodes)
    try:
        result = CliRunner().invoke(main, ["status", "memory://status", "--run-id", "job"])
        assert result.exit_code == 0, result.output
        assert "round 1 complete, world size 2 (min 2, max 2)" in result.output
        assert "node0" in result.output
        assert "127.0.0.2:9001" in result.output
        assert "waiting for round 2: 0" in result.output
        as_json = CliRunner().invoke(main, ["status", "memory://status", "--run-id", "job", "--json"])
        body = json.loads(as_json.output)
        assert [m["alive"] for m in body["members"]] == [True, True]
    finally:
        for n in nodes:
            n.shutdown()


def test_backends_lists_built_in_schemes() -> None:
    result = run("backends")
    assert result.returncode == 0
    assert "memory://" in result.stdout
    assert "torchrun rendezvous handlers" in result.stdout


def test_help_explains_every_command() -> None:
    result = run("--help")
    for command in ("backends", "join", "run", "status"):
        assert command in result.stdout


@pytest.mark.slow
def test_status_over_a_real_server_shows_heartbeat_ages_and_server_counters() -> None:
    with serve_process(token="status-token") as server:
        nodes = [Rendezvous(server.url, "job", 2, 2, node_id=f"n{i}", addr="127.0.0.1") for i in range(2)]
        rendezvous_all(nodes)
        try:
            table = run("status", server.url, "--run-id", "job")
            assert table.returncode == 0, table.stderr
            assert table.stdout.count(" s ago") == 2
            counters = run("status", server.url, "--server", "--json")
            assert counters.returncode == 0, counters.stderr
            stats = json.loads(counters.stdout)
            assert stats["leases"] == 2
            assert stats["connections"] >= 2
        finally:
            for n in nodes:
                n.shutdown()
