"""What a new user meets in the first hour (issue 12), through the real ``rdzv`` command line."""

from __future__ import annotations

import errno
import json
import os
import pty
import pydoc
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv import Change, Rendezvous
from rdzv.registry import open_store
from rdzv.rendezvous.join import read_lobby_entry
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.status import RunStatus, read_status
from rdzv.store.base import Store
from rdzv.testing.net import free_port, wait_for_port
from rdzv.testing.servers import ServerProcess, serve_process

RDZV = [sys.executable, "-m", "rdzv"]
TOKEN = "first-hour-token"
PATIENCE = 30.0


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
    return {**env, **extra}


def run(*args: str, timeout: float = PATIENCE, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RDZV, *args], capture_output=True, text=True, timeout=timeout, check=False, env=_env(**env)
    )


class Command:
    """A running ``rdzv`` subprocess whose stderr is collected line by line, as it comes."""

    def __init__(self, *args: str, **env: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*RDZV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env)
        )
        self.lines: list[tuple[float, str]] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.out.extend(self.proc.stdout)

    def finish(self, timeout: float = PATIENCE) -> tuple[int, str, str]:
        """Wait for exit (killing it at ``timeout``): exit code, stdout, stderr."""
        try:
            self.proc.wait(timeout)
        finally:
            self.kill()
        for reader in self._readers:
            reader.join(5)
        return self.proc.returncode, "".join(self.out), "\n".join(line for _, line in self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.kill()
        for stream in (command.proc.stdout, command.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as process:
        yield process


@pytest.fixture
def store(server: ServerProcess) -> Iterator[Store]:
    with open_store(server.url) as opened:
        yield opened


def _url(server: ServerProcess) -> str:
    return f"tcp://{server.host}:{server.port}?is_host=0"


def wait_for_status(store: Store, run_id: str, done: object, timeout: float = PATIENCE) -> RunStatus:
    """Block on store changes (not sleeps) until ``done(status)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        current = read_status(store, run_id)
        if done(current):  # type: ignore[operator]
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} never reached the expected state: {current}")
        store.wait(Layout(run_id).prefix, current.revision, 1.0)


# -- 1. SIGTERM in the lobby -----------------------------------------------------------------


def test_sigterm_in_the_lobby_leaves_it_at_once_like_ctrl_c(
    server: ServerProcess, store: Store, commands: list[Command]
) -> None:
    node = Command("join", _url(server), "--run-id", "sigterm", "--min", "2", "--max", "2", "--node-id", "A",
                   RDZV_TOKEN=TOKEN)  # fmt: skip
    commands.append(node)
    wait_for_status(store, "sigterm", lambda s: s.waiting == ["A"])
    node.proc.send_signal(signal.SIGTERM)
    code, _, err = node.finish()
    assert code == 143, err
    assert "terminated" in err
    assert read_status(store, "sigterm").waiting == []  # gone from the lobby, not a ghost member


# -- 2. a store that is not there ------------------------------------------------------------


def test_join_says_at_once_and_again_that_the_store_refuses_and_ends_by_its_timeout(
    commands: list[Command],
) -> None:
    port = free_port()
    node = Command("join", f"tcp://127.0.0.1:{port}?is_host=0", "--run-id", "nostore", "--min", "1",
                   "--max", "1", "--join-timeout", "6")  # fmt: skip
    commands.append(node)
    code, _, err = node.finish()
    ended = time.monotonic() - node.started
    assert code == 1, err
    reports = [(at, line) for at, line in node.lines if "connection refused" in line and "s left" in line]
    # Two reports 5 s apart within a 6 s timeout: the first came at once. Timed from it, not from
    # process start, so a slow interpreter start on a loaded machine does not count.
    assert len(reports) >= 2, err
    assert f"127.0.0.1:{port}" in reports[0][1]
    assert ended - reports[0][0] < 6 + 4, f"join ended {ended - reports[0][0]:.1f} s after its first report"


# -- 3. status never hosts; an unknown run says so -----------------------------------------------


def test_status_on_a_local_url_with_nothing_listening_reports_unreachable_and_hosts_nothing() -> None:
    port = free_port()
    result = run("status", f"tcp://127.0.0.1:{port}", "--run-id", "job")
    assert result.returncode == 1, result.stdout
    assert "connection refused" in result.stderr
    assert "no round yet" not in result.stdout


def test_status_of_a_run_the_store_never_saw_says_so_and_lists_the_runs_it_has(
    server: ServerProcess,
) -> None:
    with Rendezvous(server.url, "real-run", 1, 1, addr="127.0.0.1") as node:
        node.next_rendezvous()
        result = run("status", _url(server), "--run-id", "typo-run", RDZV_TOKEN=TOKEN)
    assert result.returncode == 1, result.stdout
    assert "'typo-run' is unknown" in result.stderr
    assert "real-run" in result.stderr


# -- 4. the timeout names its round ----------------------------------------------------------


def test_join_timeout_names_the_round_it_waited_for() -> None:
    result = run(
        "join", "memory://alone", "--run-id", "t", "--min", "2", "--max", "2", "--join-timeout", "0.3"
    )
    assert result.returncode == 1
    assert "waiting for round 1)" in result.stderr


# -- 5. file:// ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [("typo/dir", "does not exist"), ("a-file", "is not a directory"), ("thesis", "not an rdzv store")],
)
def test_file_store_urls_that_would_hide_a_store_or_mix_it_into_other_files_are_refused(
    tmp_path: Path, name: str, message: str
) -> None:
    # Only temporary paths: a version with the bug would write its files wherever it is pointed.
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("precious")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run("join", f"file://{tmp_path / name}", "--run-id", "f", "--min", "1", "--max", "1")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_file_store_directory_is_created_when_asked(tmp_path: Path) -> None:
    where = tmp_path / "shared" / "rdzv"
    result = run("join", f"file://{where}?create=1", "--run-id", "f", "--min", "1", "--max", "1")
    assert result.returncode == 0, result.stderr
    assert (where / "keys").is_dir()


# -- 7. tokens on the command line -------------------------------------------------------------


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A token file holding the server's token, as an editor saves it (with a newline)."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def test_token_and_token_file_reach_the_store_with_the_file_first(
    server: ServerProcess, secret: Path
) -> None:
    url = _url(server)
    args = ("--run-id", "tokens", "--min", "1", "--max", "1", "--addr", "127.0.0.1")
    assert "AuthenticationError" in run("join", url, *args).stderr  # no token at all
    joined = run("join", url, *args, "--token-file", str(secret), "--token", "wrong")
    assert joined.returncode == 0, joined.stderr
    shown = run("status", f"{url}&token=wrong", "--run-id", "tokens", "--token", TOKEN, RDZV_TOKEN="wrong")
    assert shown.returncode == 0, shown.stderr
    assert "round 1" in shown.stdout


# -- 8 and 9. where the coordinator is, and its port -----------------------------------------------


def test_default_address_is_the_interface_routing_to_the_store(server: ServerProcess) -> None:
    result = run("join", _url(server), "--run-id", "route", "--min", "1", "--max", "1", RDZV_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["coordinator"].startswith("127.0.0.1:")


BIND_MASTER_PORT = (
    "import os, socket; s = socket.socket(); s.bind(('', int(os.environ['MASTER_PORT']))); "
    "print('bound', os.environ['RANK'])"
)


def test_coordinator_port_is_held_until_the_command_starts(
    server: ServerProcess, store: Store, commands: list[Command]
) -> None:
    args = ("--run-id", "port", "--min", "2", "--max", "2", "--rank-policy", "arrival", "--format", "env")
    first = Command("join", _url(server), *args, "--node-id", "first", "--", sys.executable, "-c",
                    BIND_MASTER_PORT, RDZV_TOKEN=TOKEN)  # fmt: skip
    commands.append(first)
    wait_for_status(store, "port", lambda s: s.waiting == ["first"])
    (entry,) = store.list(Layout("port").prefix + Layout.lobby(1))
    port = read_lobby_entry(entry).port
    with socket.socket() as thief, pytest.raises(OSError, match="in use") as taken:
        thief.bind(("", port))
    assert taken.value.errno == errno.EADDRINUSE
    second = run("join", _url(server), *args, "--node-id", "second", "--", sys.executable, "-c", "pass",
                 RDZV_TOKEN=TOKEN)  # fmt: skip
    assert second.returncode == 0, second.stderr
    code, out, err = first.finish()
    assert code == 0, err
    assert f"export MASTER_PORT={port}" in out
    assert "bound 0" in out


# -- 10. the node hosting the store stays for its round ----------------------------------------------


def test_the_joiner_hosting_the_store_stays_until_a_slow_member_has_read_its_placement(
    commands: list[Command],
) -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = ("--run-id", "hosted", "--min", "3", "--max", "3")
    host = Command("join", url, *args, "--node-id", "host")
    commands.append(host)
    wait_for_port("127.0.0.1", port, PATIENCE)
    with open_store(f"{url}?is_host=0") as hosted:
        wait_for_status(hosted, "hosted", lambda s: s.waiting == ["host"])
        slow = Command("join", url, *args, "--node-id", "slow")
        commands.append(slow)
        arrivals = Layout("hosted").prefix + Layout.arrivals(1)
        while (entry := hosted.get(arrivals)) is None or entry.value != b"2":  # counted, not just listed
            hosted.wait(arrivals, entry.version if entry else 0, PATIENCE)
    slow.proc.send_signal(signal.SIGSTOP)  # in the lobby: it will be placed but cannot read it yet
    try:
        third = run("join", url, *args, "--node-id", "third")
        assert third.returncode == 0, third.stderr
        with pytest.raises(subprocess.TimeoutExpired):
            host.proc.wait(1.0)  # placed and printed, but must not take the store away yet
    finally:
        slow.proc.send_signal(signal.SIGCONT)
    results = {"slow": slow.finish(), "host": host.finish()}
    assert {name: code for name, (code, _, _) in results.items()} == {"slow": 0, "host": 0}, results
    assert json.loads(results["slow"][1])["world_size"] == 3


# -- 11. help, docs, status ---------------------------------------------------------------------


def test_join_help_explains_tokens_url_forms_and_environment() -> None:
    text = run("join", "--help").stdout
    for needle in ("--token-file", "--token", "RDZV_TOKEN", "file:///", "?create=1", "etcd://",
                   "RDZV_MIN_NODES", "RDZV_URL", "--quiet"):  # fmt: skip
        assert needle in text, needle


def test_status_shows_a_member_that_left_cleanly_as_left(server: ServerProcess, store: Store) -> None:
    nodes = [Rendezvous(server.url, "leaving", 2, 2, node_id=f"m{i}", addr="127.0.0.1") for i in range(2)]
    threads = [threading.Thread(target=n.next_rendezvous) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)
    try:
        nodes[1].shutdown()
        result = run("status", _url(server), "--run-id", "leaving", RDZV_TOKEN=TOKEN)
        assert result.returncode == 0, result.stderr
        (line,) = [line for line in result.stdout.splitlines() if " m1 " in line]
        assert line.rstrip().endswith("left")
        assert "evicted" not in result.stdout
    finally:
        nodes[0].shutdown()


# -- 12. progress on a terminal ----------------------------------------------------------------


def _stderr_on_a_terminal(*args: str) -> str:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*RDZV, *args], stdout=subprocess.DEVNULL, stderr=follower, env=_env())
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # the terminal's other end closed: the process exited
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(leader)
    return seen.decode(errors="replace")


def test_join_shows_a_live_progress_line_on_a_terminal_only() -> None:
    args = ("join", "memory://progress", "--run-id", "p", "--min", "2", "--max", "3", "--join-timeout")
    assert "1/2 joined (min 2, max 3)" in _stderr_on_a_terminal(*args, "2")
    assert "joined" not in _stderr_on_a_terminal(*args, "1", "--quiet")
    assert "joined" not in run(*args, "1").stderr  # not a terminal


# -- 11. the library's own help and the README -----------------------------------------------------


def test_rendezvous_help_explains_its_arguments_with_an_example() -> None:
    text = pydoc.render_doc(Rendezvous)
    for needle in ("min_nodes", "max_nodes", "last_call_timeout", "addr", "labels", "Example::"):
        assert needle in text, needle
    assert Rendezvous.is_closed.__doc__


def test_readme_quickstart_shows_every_change_kind_an_entry_and_the_last_call_wait() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    for kind in (Change.MEMBER_LOST, Change.NODES_WAITING, Change.NEW_ROUND, Change.CLOSED):
        assert kind in quickstart, kind
    assert "Entry" in quickstart
    assert "30 s by default" in quickstart


# -- rdzv run meets the store as rdzv join does ------------------------------------------------------

REPORT_COORDINATOR = (
    "import os, socket\n"
    "for name in ('MASTER_PORT', 'JAX_COORDINATOR_ADDRESS'):\n"
    "    socket.socket().bind(('', int(os.environ[name].rsplit(':', 1)[-1])))  # no SO_REUSEADDR\n"
    "print('coordinator', os.environ['MASTER_ADDR'], 'ports bound')\n"
)


def test_run_help_lists_the_token_and_quiet_options_as_join_does() -> None:
    def options(command: str) -> str:
        text = run(command, "--help").stdout
        return text[text.index("-q, --quiet") :]  # --quiet, --token, --token-file: the same help

    assert options("run") == options("join")
    assert "RDZV_TOKEN" in options("run")


def test_run_takes_its_token_from_a_token_file_and_a_wrong_token_fails_with_a_clear_message(
    server: ServerProcess, secret: Path
) -> None:
    url = _url(server)
    job = ("--", sys.executable, "-c", REPORT_COORDINATOR)
    done = run("run", url, "--run-id", "run-token", "--token-file", str(secret), "--token", "wrong", *job)
    assert done.returncode == 0, done.stderr
    assert "coordinator 127.0.0.1 ports bound" in done.stdout  # the address on the route to the store
    refused = run("run", url, "--run-id", "run-token-2", "--token", "wrong", *job, RDZV_TOKEN=TOKEN)
    assert refused.returncode == 1, refused.stderr
    assert "rejected our token" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "formed" not in refused.stderr


def test_run_says_at_once_that_the_store_refuses_and_ends_by_its_join_timeout(
    commands: list[Command],
) -> None:
    port = free_port()
    node = Command("run", f"tcp://127.0.0.1:{port}?is_host=0", "--run-id", "nostore", "--join-timeout", "3",
                   "--", sys.executable, "-c", "pass")  # fmt: skip
    commands.append(node)
    code, _, err = node.finish()
    ended = time.monotonic() - node.started
    assert code == 1, err
    reports = [(at, line) for at, line in node.lines if "connection refused" in line and "s left" in line]
    assert reports, err
    assert f"127.0.0.1:{port}" in reports[0][1]
    assert ended - reports[0][0] < 3 + 4, f"run ended {ended - reports[0][0]:.1f} s after its first report"


def test_run_holds_the_coordinator_ports_of_group_rank_0_until_its_workers_start(
    server: ServerProcess, store: Store, commands: list[Command]
) -> None:
    agent = Command("run", _url(server), "--run-id", "run-ports", "--nnodes", "2", "--rank-policy", "arrival",
                    "--node-id", "agent", "--", sys.executable, "-c", REPORT_COORDINATOR,
                    RDZV_TOKEN=TOKEN)  # fmt: skip
    commands.append(agent)
    wait_for_status(store, "run-ports", lambda s: s.waiting == ["agent"])
    with Rendezvous(server.url, "run-ports", 2, 2, node_id="late", addr="127.0.0.1") as late:
        info = late.next_rendezvous()
        assert info.rank == 1
        slot = _wait_for_key(info.store, "launcher/node/0")  # the agent announced its JAX port
        ports = (info.coordinator_port, json.loads(slot)["jax_port"])
        for port in ports:  # announced, its workers not started yet: nobody else may take them
            with socket.socket() as thief, pytest.raises(OSError, match="in use") as taken:
                thief.bind(("", port))
            assert taken.value.errno == errno.EADDRINUSE, port
        info.store.put("launcher/node/1", json.dumps({"nproc": 1, "jax_port": 0}).encode())
        ended = _wait_for_key(store, Layout("run-ports").prefix + "launcher/", ("done/1", "failure/1"))
    agent.proc.send_signal(signal.SIGTERM)
    code, out, err = agent.finish()
    assert ended == "done/1", err  # its worker bound both ports (plainly) and exited 0
    assert "ports bound" in out
    assert code == 143, err


def _wait_for_key(store: Store, key: str, endings: tuple[str, ...] = ("",)) -> str:
    """Block on store changes until a key ``key + ending`` exists; its value, or (with endings) the ending."""
    deadline = time.monotonic() + PATIENCE
    while True:
        listing = store.list(key)
        for entry in listing:
            for ending in endings:
                if entry.key == key + ending:
                    return ending if ending else entry.value.decode()
        assert time.monotonic() < deadline, f"no {key}{endings} in the store"
        store.wait(key, listing.revision, 1.0)


def test_run_shows_a_live_progress_line_on_a_terminal_only() -> None:
    args = ("run", "memory://progress", "--run-id", "p", "--nnodes", "2:3", "--join-timeout")
    job = ("--", sys.executable, "-c", "pass")
    assert "1/2 joined (min 2, max 3)" in _stderr_on_a_terminal(*args, "2", *job)
    assert "joined" not in _stderr_on_a_terminal(*args, "0.5", "--quiet", *job)
    assert "joined" not in run(*args, "0.5", *job).stderr  # not a terminal
