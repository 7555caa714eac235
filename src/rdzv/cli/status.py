"""``rdzv status``: the current round of a run, or the store server's counters."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from rdzv.cli.options import open_url, read_token, store_url, token_options
from rdzv.cli.watchview import rich_available, watch_live
from rdzv.errors import StoreError
from rdzv.rendezvous.config import ENV_VARS
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.status import RunStatus, known_runs, read_status
from rdzv.store.base import Store


@click.command()
@store_url
@click.option("--run-id", envvar=ENV_VARS["run_id"], help="The run to show (not needed with --server).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--watch", is_flag=True,
    help="Redraw whenever the run changes (Ctrl-C to stop); a live table on a terminal with rdzv[watch].",
)  # fmt: skip
@click.option("--server", is_flag=True, help="Show the tcp:// server's counters instead of a run.")
@token_options
def status(
    url: str,
    run_id: str | None,
    as_json: bool,
    watch: bool,
    server: bool,
    token: str | None,
    token_file: Path | None,
) -> None:
    """Show a run's current round: state, members with rank, address and last
    heartbeat, nodes waiting for the next round, and spares.

    Only reads: it never hosts a tcp:// store nor creates a file:// one, and
    exits 1 if the store cannot be reached or has never seen the run.

    \b
    Examples:
      rdzv status tcp://10.0.0.1:29400 --run-id job1
      rdzv status tcp://10.0.0.1:29400 --server --json
    """
    with open_url(url, read_token(token, token_file), read_only=True) as store:
        if server:
            _show_server(store, as_json)
            return
        if not run_id:
            raise click.UsageError("--run-id is required (or --server for the server's counters)")
        if watch and not as_json and sys.stdout.isatty():
            if read_status(store, run_id).state == "unknown":
                raise click.ClickException(_unknown_run(store, run_id))
            if _live_view(store, run_id):
                return
        while True:
            current = read_status(store, run_id)
            if current.state == "unknown":
                raise click.ClickException(_unknown_run(store, run_id))
            if watch:
                click.clear()
            click.echo(json.dumps(asdict(current), indent=2) if as_json else render(current))
            if not watch:
                return
            store.wait(Layout(run_id).prefix, current.revision, 2.0)


def _live_view(store: Store, run_id: str) -> bool:
    """Draw ``--watch`` with rich on a terminal; ``False`` without rich (the plain redraw)."""
    if not rich_available():
        click.echo("rdzv status: pip install 'rdzv[watch]' for a live table; plain redraw", err=True)
        return False
    watch_live(store, run_id)
    return True


def _unknown_run(store: Store, run_id: str) -> str:
    message = f"run {run_id!r} is unknown to the store at {store.url}"
    try:
        runs = known_runs(store)
    except StoreError:  # not allowed to list everything: say no more
        return message
    return f"{message}; runs there: {', '.join(runs)}" if runs else f"{message}; it holds no runs"


def render(run: RunStatus) -> str:
    if run.round == 0:
        lines = [f"run {run.run_id}: no round yet (state joining)"]
    else:
        lines = [
            f"run {run.run_id}: round {run.round} {run.state}, world size {run.world_size} "
            f"(min {run.min_nodes}, max {run.max_nodes}), coordinator {run.coordinator}",
            f"  {'RANK':>4}  {'NODE':<28} {'ADDRESS':<22} {'LAST HEARTBEAT':<15}",
        ]
        for m in run.members:
            beat = (
                "left"
                if m.left
                else "gone (evicted)"
                if not m.alive
                else "?"
                if m.since_heartbeat is None
                else f"{m.since_heartbeat:.1f} s ago"
            )
            lines.append(f"  {m.rank:>4}  {m.node_id:<28} {m.addr:<22} {beat:<15}")
    lines.append(f"waiting for round {run.round + 1}: {len(run.waiting)} {' '.join(run.waiting)}".rstrip())
    lines.append(f"spares: {len(run.spares)} {' '.join(run.spares)}".rstrip())
    return "\n".join(line.rstrip() for line in lines)


def _heartbeat(alive: bool, since: float | None) -> str:
    if not alive:
        return "gone"
    return "?" if since is None else f"{since:.1f} s ago"


def _show_server(store: Store, as_json: bool) -> None:
    stats_of = getattr(store, "server_stats", None)
    if stats_of is None:
        raise click.UsageError(f"--server needs a tcp:// store; {store.url} has no server counters")
    stats: dict[str, Any] = stats_of()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for key, value in stats.items():
        click.echo(f"{key:<20} {value}")
