"""``rdzv status --watch``: a live rich table on a terminal, plain JSON for scripts."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from rdzv.cli.watchview import status_table, watch_live
from rdzv.errors import RdzvError
from rdzv.rendezvous.node import Rendezvous
from rdzv.rendezvous.status import read_status
from rdzv.testing.servers import serve_process

pytest.importorskip("rich")

from rich.console import Console  # after the skip: rich is an optional extra


def form(url: str, run_id: str, count: int) -> list[Rendezvous]:
    nodes = [
        Rendezvous(  # a short heartbeat: a fresh server holds a first round back one interval
            url,
            run_id,
            count,
            count,
            node_id=f"node{i}",
            addr=f"127.0.0.{i + 1}:900{i}",
            heartbeat_interval=0.5,
        )
        for i in range(count)
    ]
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda node: node.next_rendezvous(), nodes))
    return nodes


def test_status_table_shows_round_members_heartbeat_ages_and_waiting_nodes() -> None:
    nodes = form("memory://watch-table", "job", 2)
    late = Rendezvous(
        "memory://watch-table", "job", 2, 2, node_id="late", addr="127.0.0.9:9009", join_timeout=2
    )
    joiner = threading.Thread(target=join_quietly, args=(late,), daemon=True)
    try:
        joiner.start()
        store = nodes[0].store
        deadline = time.monotonic() + 10
        while not (status := read_status(store, "job")).spares and time.monotonic() < deadline:
            store.wait("rdzv/job/", status.revision, 1.0)  # pushed: returns when the lobby changes
        console = Console(record=True, width=160, file=io.StringIO(), force_terminal=True)
        console.print(status_table(status))
        text = console.export_text()
        assert "round 1 complete, world size 2" in text
        assert "node0" in text
        assert "127.0.0.2:9001" in text
        assert "s ago" in text
        assert "waiting for round 2: 0" in text
        assert "spares: 1 late" in text  # the round is full (max 2): a late node is a spare
    finally:
        late.shutdown()
        for node in nodes:
            node.shutdown()
        joiner.join(10)


def join_quietly(node: Rendezvous) -> None:
    with contextlib.suppress(RdzvError):  # a spare's join times out, or ends with its shutdown
        node.next_rendezvous()


def test_watch_redraws_when_a_member_is_lost() -> None:
    nodes = form("memory://watch-live", "job", 2)
    out = io.StringIO()
    console = Console(record=True, width=160, file=out, force_terminal=True)
    done = threading.Event()

    def watch() -> None:
        watch_live(
            nodes[0].store, "job", console=console, keep_going=lambda s: all(m.alive for m in s.members)
        )
        done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        nodes[1].shutdown()  # revokes its lease: its rank key vanishes
        assert done.wait(20), "the live view did not notice the lost member"
        assert "gone (evicted)" in console.export_text()
    finally:
        nodes[0].shutdown()
        watcher.join(10)


def test_watch_on_a_terminal_draws_a_live_table_and_json_stays_plain() -> None:
    with serve_process(token="watch-token") as server:
        nodes = form(server.url, "job", 2)
        try:
            drawn = _watch_in_a_pty(server.url)
            assert "┏" in drawn  # a rich table's border: drawn for a terminal
            assert "\x1b[" in drawn  # with terminal control sequences (cursor, colour)
            plain = subprocess.run(
                [sys.executable, "-m", "rdzv", "status", server.url, "--run-id", "job", "--json"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            assert json.loads(plain.stdout)["round"] == 1
        finally:
            for node in nodes:
                node.shutdown()


def _watch_in_a_pty(url: str) -> str:
    """Run ``rdzv status --watch`` with a terminal as stdout until its table appears; Ctrl-C it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "rdzv", "status", url, "--run-id", "job", "--watch"],
        stdout=follower, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"node1" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                seen += os.read(leader, 65536)
        process.send_signal(signal.SIGINT)
        process.wait(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
        assert process.stderr is not None
        process.stderr.close()
    text = seen.decode(errors="replace")
    assert "node1" in text, text
    assert process.returncode == 0, text
    return text
