"""Per-run tokens: one ``rdzv serve`` for many jobs, each confined to its own run's keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from rdzv import Rendezvous
from rdzv.cli.main import main
from rdzv.errors import AuthenticationError, ConfigurationError
from rdzv.registry import open_store
from rdzv.rendezvous.layout import Layout
from rdzv.store.base import Store
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.auth import run_prefix
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.servers import ServerProcess, serve_process
from rdzv.testing.wire import WireClient

SECRET = "platform-secret-9d1c"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serve_process(token=SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def job42_token() -> str:
    """From the real command, as a platform team would hand it out."""
    env = {**os.environ, "RDZV_TOKEN": SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "rdzv", "token", "--run-id", "job42"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    token = result.stdout.strip()
    assert token.startswith("rdzv-run:job42:")
    assert SECRET not in token
    return token


def _url(server: ServerProcess, token: str) -> str:
    return f"tcp://127.0.0.1:{server.port}?is_host=0&timeout=5&token={token}"


def test_a_run_token_reads_writes_and_waits_on_its_own_run(server: ServerProcess, job42_token: str) -> None:
    with open_store(_url(server, job42_token)) as store:
        version = store.put("rdzv/job42/user/0/x", b"1")
        assert store.get("rdzv/job42/user/0/x").value == b"1"  # type: ignore[union-attr]
        assert store.wait("rdzv/job42/", version - 1, 1.0) == version
        lease = store.grant(10)
        store.put("rdzv/job42/r/1/rank/n0", b"0", lease=lease)
        assert store.refresh(lease)
        store.revoke(lease)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda s: s.put("rdzv/job43/doc", b"coordinator=10.6.6.6"), "belongs to another run"),
        (lambda s: s.get("rdzv/job4/doc"), "belongs to another run"),
        (lambda s: s.list("rdzv/"), "belongs to another run"),
        (lambda s: s.wait("", 0, 0.1), "belongs to another run"),
        (
            lambda s: s.put_many([("rdzv/job42/a", b"1", None), ("x", b"2", None)]),
            "belongs to another run",
        ),
        (lambda s: s.server_stats(), "stats concerns the whole server"),
    ],
    ids=["put-other-run", "get-prefix-run", "list-all-runs", "wait-everything", "put_many-mixed", "stats"],
)
def test_a_run_token_is_refused_outside_its_run(
    server: ServerProcess, job42_token: str, call: Callable[[Store], object], what: str
) -> None:
    refusal = f"{what}.*this token is for the keys under 'rdzv/job42/'"
    with open_store(_url(server, job42_token)) as store:
        with pytest.raises(AuthenticationError, match=refusal):
            call(store)
        store.put("rdzv/job42/still-usable", b"yes")  # a refusal does not end the connection
    with open_store(server.url) as admin:
        assert admin.get("rdzv/job43/doc") is None
        assert admin.get("x") is None


def test_a_run_token_cannot_use_another_runs_lease(server: ServerProcess, job42_token: str) -> None:
    with open_store(server.url) as admin, open_store(_url(server, job42_token)) as store:
        foreign = admin.grant(30)
        admin.put("rdzv/job43/r/1/rank/a", b"0", lease=foreign)
        with pytest.raises(AuthenticationError, match=f"lease {foreign} was not granted to this run"):
            store.revoke(foreign)
        assert admin.get("rdzv/job43/r/1/rank/a") is not None


def test_a_run_token_presented_for_another_run_fails_authentication(
    server: ServerProcess, job42_token: str
) -> None:
    with WireClient(server.port) as raw:
        answer = raw.handshake(job42_token.encode(), run="job43")
    assert answer[:2] == [0, p.ERROR]
    assert answer[2]["kind"] == p.KIND_AUTH
    assert "a wrong token for run job43" in server.log_text()


def test_the_server_secret_sees_every_run(server: ServerProcess, job42_token: str) -> None:
    with open_store(_url(server, job42_token)) as store:
        store.put("rdzv/job42/seen-by-admin", b"1")
    result = subprocess.run(
        [sys.executable, "-m", "rdzv", "status", server.url, "--server", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert '"keys"' in result.stdout
    with open_store(server.url) as admin:
        assert "rdzv/job42/seen-by-admin" in [e.key for e in admin.list("rdzv/")]


def test_a_whole_rendezvous_runs_with_a_run_token(server: ServerProcess, job42_token: str) -> None:
    with Rendezvous(_url(server, job42_token), "job42", 1, 1, join_timeout=30, last_call_timeout=0.1) as node:
        info = node.next_rendezvous()
        assert (info.rank, info.world_size) == (0, 1)
        node.set_closed()


def test_rdzv_token_explains_a_bad_run_id_or_a_missing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RDZV_TOKEN", raising=False)
    bad = CliRunner().invoke(main, ["token", "--run-id", "a/b", "--token", "s"])
    assert bad.exit_code == 2
    assert "run id 'a/b' is invalid: use 1-128 letters, digits" in bad.output
    missing = CliRunner().invoke(main, ["token", "--run-id", "job42"])
    assert missing.exit_code == 2
    assert "give the server's secret" in missing.output


def test_a_run_token_never_hosts_a_store(job42_token: str) -> None:
    with pytest.raises(ConfigurationError, match=r"a per-run token \(rdzv token\) cannot host a store"):
        TcpStore("127.0.0.1", 0, token=job42_token, is_host="1")


def test_the_run_prefix_a_token_allows_is_where_rendezvous_keeps_a_run() -> None:
    assert run_prefix("job42") == Layout("job42").prefix
