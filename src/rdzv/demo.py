"""``make demo``: six local nodes rendezvous, one is killed, the rest re-form.

``python -m rdzv.demo`` starts ``rdzv serve`` on a free loopback port with a
generated token, six node processes (min 4, max 6), prints the node → rank
table of the first round and ``rdzv status``, SIGKILLs one node, shows the
status once it is evicted, waits for the survivors to form the next round,
prints it again, then closes the run. ``--store file`` uses a temporary
directory instead of the server.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from rdzv.registry import open_store
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import Change, Rendezvous
from rdzv.rendezvous.status import read_status
from rdzv.testing.servers import serve_process

NODES = 6
RUN_ID = "demo"
ROUND_TIMEOUT = 60.0


def node_main(url: str, name: str) -> None:
    """One node: join rounds until the run is closed, printing each placement as JSON."""
    with Rendezvous(
        url, RUN_ID, 4, NODES, node_id=name, addr="127.0.0.1",
        last_call_timeout=1.0, heartbeat_interval=0.5, heartbeat_misses=3, join_timeout=ROUND_TIMEOUT,
    ) as node:  # fmt: skip
        while True:
            info = node.next_rendezvous()
            print(json.dumps({"node": name, "pid": os.getpid(), **info.as_dict()}), flush=True)
            change = None
            while change is None:
                change = node.wait_for_change(5.0)
            if change == Change.CLOSED:
                return


class Nodes:
    """The node processes and the lines they print."""

    def __init__(self, url: str) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.procs: dict[str, subprocess.Popen[str]] = {}
        for i in range(NODES):
            name = f"node{i}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "rdzv.demo", "--node", name, "--url", url],
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs[name] = proc
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.put(json.loads(line))

    def next_round(self, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` nodes to report the same new round."""
        deadline = time.monotonic() + ROUND_TIMEOUT
        by_round: dict[int, list[dict[str, Any]]] = {}
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise click.ClickException("the demo round did not form in time") from None
            placed = by_round.setdefault(line["round"], [])
            placed.append(line)
            if len(placed) == count:
                return sorted(placed, key=lambda p: p["rank"])

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout:
                proc.stdout.close()


def print_round(placed: list[dict[str, Any]]) -> None:
    first = placed[0]
    click.echo(
        f"\nround {first['round']}: world size {first['world_size']}, coordinator {first['coordinator']}"
    )
    click.echo(f"  {'node':<8} {'pid':>7}  rank")
    for p in placed:
        click.echo(f"  {p['node']:<8} {p['pid']:>7}  {p['rank']:>4}")


@contextmanager
def file_store() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="rdzv-demo-") as directory:
        yield f"file://{directory}"


@contextmanager
def tcp_store() -> Iterator[str]:
    token = secrets.token_urlsafe(16)
    with serve_process(token=token) as server:
        where = f"{server.host}:{server.port} (pid {server.process.pid})"
        click.echo(f"started `rdzv serve` on {where} with a generated token in RDZV_TOKEN")
        os.environ["RDZV_TOKEN"] = token  # the nodes and `rdzv status` read it from the environment
        yield f"tcp://{server.host}:{server.port}?is_host=0"


def show_status(url: str) -> None:
    click.echo(f"\n$ rdzv status {url} --run-id {RUN_ID}")
    result = subprocess.run(
        [sys.executable, "-m", "rdzv", "status", url, "--run-id", RUN_ID],
        capture_output=True, text=True, timeout=ROUND_TIMEOUT, check=False,
    )  # fmt: skip
    click.echo((result.stdout + result.stderr).rstrip())


def wait_until_evicted(url: str, node: str) -> None:
    """Block (on store changes, not a sleep) until ``node``'s rank key is gone."""
    deadline = time.monotonic() + ROUND_TIMEOUT
    with open_store(url) as store:
        while True:
            current = read_status(store, RUN_ID)
            if any(m.node_id == node and not m.alive for m in current.members) or current.round > 1:
                return
            if time.monotonic() > deadline:
                raise click.ClickException(f"{node} was not evicted in time")
            store.wait(Layout(RUN_ID).prefix, current.revision, 1.0)


def run_demo(url: str) -> None:
    click.echo(f"store: {url}\nstarting {NODES} nodes (min 4, max {NODES})")
    nodes = Nodes(url)
    try:
        first = nodes.next_round(NODES)
        print_round(first)
        show_status(url)
        victim = first[2]
        click.echo(f"\nkilling {victim['node']} (rank {victim['rank']}, pid {victim['pid']}) with SIGKILL")
        nodes.procs[victim["node"]].send_signal(signal.SIGKILL)
        started = time.monotonic()
        wait_until_evicted(url, victim["node"])
        show_status(url)
        second = nodes.next_round(NODES - 1)
        print_round(second)
        click.echo(f"\nthe survivors re-formed in {time.monotonic() - started:.1f} s "
                   "(eviction after 3 missed heartbeats of 0.5 s, then a 1 s last call)")  # fmt: skip
        Rendezvous(url, RUN_ID, 4, NODES).set_closed()
        for name, proc in nodes.procs.items():
            if name != victim["node"]:
                proc.wait(timeout=ROUND_TIMEOUT)
        click.echo("run closed; every node exited")
    finally:
        nodes.stop()


@click.command()
@click.option("--store", type=click.Choice(["tcp", "file"]), default="tcp", show_default=True,
              help="tcp: a real `rdzv serve` on loopback; file: a temporary directory.")  # fmt: skip
@click.option("--node", "node_name", hidden=True)
@click.option("--url", hidden=True)
def main(store: str, node_name: str | None, url: str | None) -> None:
    """Run the rdzv demo: six nodes, one killed, the rest re-form."""
    if node_name and url:
        node_main(url, node_name)
        return
    with tcp_store() if store == "tcp" else file_store() as store_url:
        run_demo(store_url)


if __name__ == "__main__":
    main()
