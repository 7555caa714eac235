"""The launcher's parts: worker variables, options, reports; and the Agent embedded in a program."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rdzv import Rendezvous
from rdzv.cli.run import LauncherCommand, parse_nnodes, run
from rdzv.errors import ConfigurationError
from rdzv.launcher import (
    Agent,
    Done,
    Event,
    LaunchSpec,
    Restart,
    RoundFormed,
    Std,
    WorkerFailed,
    WorkersStarted,
)
from rdzv.launcher.env import RoundPlan
from rdzv.launcher.report import WorkerFailure, format_report, read_error_file, write_error_file
from rdzv.launcher.spec import parse_std, worker_command

WORKER = Path(__file__).parent / "launcher_programs" / "worker.py"


def plan(group_rank: int, nprocs: tuple[int, ...]) -> RoundPlan:
    return RoundPlan("job", f"n{group_rank}", 4, group_rank, nprocs, "10.0.0.1", 29500, 29600, 2, 5)


def test_global_ranks_count_each_nodes_own_worker_count() -> None:
    nprocs = (2, 3, 1)
    ranks = [plan(g, nprocs).worker_env(local)["RANK"] for g in range(3) for local in range(nprocs[g])]
    assert ranks == ["0", "1", "2", "3", "4", "5"]
    env = plan(1, nprocs).worker_env(2)
    assert env["LOCAL_RANK"] == "2"
    assert (env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("6", "3")
    assert (env["GROUP_RANK"], env["GROUP_WORLD_SIZE"]) == ("1", "3")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.0.0.1", "29500")
    assert env["JAX_COORDINATOR_ADDRESS"] == env["JAX_COORDINATOR_BIND_ADDRESS"] == "10.0.0.1:29600"
    assert (env["TORCHELASTIC_RESTART_COUNT"], env["TORCHELASTIC_MAX_RESTARTS"]) == ("2", "5")
    assert (env["RDZV_ROUND"], env["RDZV_NODE_ID"], env["RDZV_RUN_ID"]) == ("4", "n1", "job")


def test_an_ipv6_coordinator_is_bracketed_for_jax() -> None:
    ipv6 = RoundPlan("job", "n0", 1, 0, (1,), "fd00::1", 1, 2, 0, 0)
    assert ipv6.worker_env(0)["JAX_COORDINATOR_ADDRESS"] == "[fd00::1]:2"


def test_a_local_rank_outside_the_node_is_refused() -> None:
    with pytest.raises(ValueError, match=r"local rank 2 outside 0\.\.1"):
        plan(0, (2,)).worker_env(2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", {0: Std.ALL, 1: Std.ALL}), ("0:1,1:2", {0: Std.OUT, 1: Std.ERR}), ("0", {0: 0, 1: 0})],
)
def test_std_options_take_torchruns_values(text: str, expected: dict[int, int]) -> None:
    assert parse_std(text, 2, "--tee") == expected


@pytest.mark.parametrize("text", ["4", "x", "0:9", "0=1"])
def test_a_bad_std_option_names_what_is_accepted(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^--redirects.*stderr"):
        parse_std(text, 2, "--redirects")


@pytest.mark.parametrize(("text", "bounds"), [("2", (2, 2)), ("2:4", (2, 4)), ("1:", (1, 1))])
def test_nnodes_is_n_or_min_max(text: str, bounds: tuple[int, int]) -> None:
    assert parse_nnodes(text) == bounds


@pytest.mark.parametrize("text", ["0", "3:2", "a:b", ":2"])
def test_bad_nnodes_says_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--nnodes"):
        parse_nnodes(text)


def test_a_py_target_runs_with_this_python_and_other_commands_as_given() -> None:
    assert worker_command(["train.py", "--lr", "1"]) == [sys.executable, "-u", "train.py", "--lr", "1"]
    assert worker_command(["bash", "go.sh"]) == ["bash", "go.sh"]


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["tcp://h:1", "--run-id", "j", "train.py", "--lr", "1"], ["train.py", "--lr", "1"]),
        (["tcp://h:1", "--run-id", "j", "--", "python", "-m", "x"], ["python", "-m", "x"]),
        (["--standalone", "--nproc-per-node", "2", "t.py", "--standalone"], ["t.py", "--standalone"]),
    ],
)
def test_options_stop_where_the_worker_command_starts(argv: list[str], command: list[str]) -> None:
    assert isinstance(run, LauncherCommand)
    marked = run._mark_command(argv)
    assert marked[marked.index("--") + 1 :] == command


def test_the_failure_report_names_every_failure_and_the_last_ones_stderr(tmp_path: Path) -> None:
    failures = [
        WorkerFailure(3, 1, "n1", 1, 3, 0.0, ("trace", "ValueError: bad")),
        WorkerFailure(0, 0, "n0", 2, -9, 60.0, (), "OOM in step 7"),
    ]
    report = format_report("job", failures, 1)
    assert "2 worker failure(s) spent the restart budget (--max-restarts 1, shared by all nodes)" in report
    assert "rank 3 (local rank 1 on node n1, round 1) exited with code 3 at 1970-01-01T00:00:00Z" in report
    assert "rank 0 (local rank 0 on node n0, round 2) was killed by SIGKILL at 1970-01-01T00:01:00Z" in report
    assert "error: OOM in step 7" in report
    assert WorkerFailure.from_bytes(failures[0].to_bytes()) == failures[0]
    assert WorkerFailure.from_bytes(b"\xff not json") is None
    write_error_file(tmp_path / "e.json", report)
    assert read_error_file(tmp_path / "e.json") == report
    (tmp_path / "plain").write_text("just text\n")
    assert read_error_file(tmp_path / "plain") == "just text"
    assert read_error_file(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": []}, "no worker command"),
        ({"nproc_per_node": 0}, "nproc_per_node must be >= 1"),
        ({"redirects": {0: 3}}, "need --log-dir"),
        ({"role": "a/b"}, "role 'a/b'"),
    ],
)
def test_a_bad_launch_spec_says_what_is_wrong(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"command": ["true"], **changes}
    with pytest.raises(ConfigurationError, match=message):
        LaunchSpec(**fields)  # type: ignore[arg-type]


def test_an_embedded_agent_reports_each_step_and_restarts_within_its_budget(tmp_path: Path) -> None:
    spec = LaunchSpec(
        [sys.executable, str(WORKER), "fail-once", str(tmp_path)], nproc_per_node=2, max_restarts=1,
        monitor_interval=0.05,
    )  # fmt: skip
    node = Rendezvous("memory://embedded", "emb", 1, 1, addr="127.0.0.1", last_call_timeout=0.1)
    events: list[Event] = []
    out, err = io.BytesIO(), io.BytesIO()
    assert Agent(spec, node, on_event=events.append, stdout=out, stderr=err).run() == 0
    kinds = [type(event) for event in events]
    assert kinds == [
        RoundFormed, WorkersStarted, WorkerFailed, Restart, RoundFormed, WorkersStarted, Done,
    ]  # fmt: skip
    failed = events[2]
    assert isinstance(failed, WorkerFailed)
    assert (failed.failure.rank, failed.failure.returncode) == (1, 3)
    assert failed.failure.stderr_tail == ("rank 1 fails on the first attempt",)
    assert b"[1]:rank 1 fails on the first attempt\n" in err.getvalue()
    done = events[-1]
    assert isinstance(done, Done)
    assert "succeeded" in done.reason


def rdzv_run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rdzv", "run", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_standalone_log_dir_keeps_a_file_per_rank_and_filters_decide_the_console(tmp_path: Path) -> None:
    script = "import os, sys; r = os.environ['RANK']; print('out', r); print('err', r, file=sys.stderr)"
    done = rdzv_run("--standalone", "--nproc-per-node", "2", "--log-dir", str(tmp_path), "--redirects", "1",
                    "--local-ranks-filter", "0", "--", sys.executable, "-c", script)  # fmt: skip
    assert done.returncode == 0, done.stderr
    logs = sorted(tmp_path.glob("standalone/round_*/rank_*.log"))
    assert [p.name for p in logs] == ["rank_0.log", "rank_1.log"]
    assert sorted(logs[1].read_text().splitlines()) == ["err 1", "out 1"]
    assert done.stdout == ""  # stdout is redirected to the files
    assert "[0]:err 0" in done.stderr
    assert "err 1" not in done.stderr  # local rank 1 is filtered off the console


@pytest.mark.slow
def test_a_command_that_cannot_run_is_a_clear_error() -> None:
    done = rdzv_run("--standalone", "--", "/nonexistent/worker")
    assert done.returncode == 2
    assert "cannot run '/nonexistent/worker'" in done.stderr
    assert "Traceback" not in done.stderr


def test_standalone_refuses_a_token_its_private_store_would_ignore() -> None:
    done = rdzv_run("--standalone", "--token", "s3cret", "--", sys.executable, "-c", "pass")
    assert done.returncode == 2
    assert "--standalone uses a private store" in done.stderr


def test_the_jax_plugin_fills_in_initialize_under_rdzv_join_and_wins_over_slurm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("jax")
    from jax._src import clusters

    import rdzv.jax

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_BIND_ADDRESS", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(name, "placeholder")  # recorded, so the test leaves the environment as it was
        monkeypatch.delenv(name)
    joined = {"RDZV_RUN_ID": "j", "RANK": "1", "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
              "MASTER_PORT": "4321", "SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "a", "SLURM_NTASKS": "9",
              "SLURM_PROCID": "5", "SLURM_LOCALID": "0"}  # fmt: skip
    for name, value in joined.items():
        monkeypatch.setenv(name, value)
    found = clusters.ClusterEnv.auto_detect_unset_distributed_params(None, None, None, None, None, None)
    assert found == ("127.0.0.1:4321", 3, 1, None)
    assert os.environ["JAX_COORDINATOR_BIND_ADDRESS"] == "127.0.0.1:4321"  # not [::]
    assert clusters.ClusterEnv._cluster_types[0] is rdzv.jax.RdzvCluster
