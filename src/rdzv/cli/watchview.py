"""``rdzv status --watch`` on a terminal: a live table drawn with rich (the ``watch`` extra).

The view redraws when the run changes (a pushed ``wait`` on the run's keys) and
at least every :data:`REDRAW` seconds, since heartbeat ages grow without any key
changing. Scripts use ``--json``, which stays plain text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.status import RunStatus, read_status
from rdzv.store.base import Store

__all__ = ["REDRAW", "rich_available", "status_table", "watch_live"]

REDRAW = 1.0
"""Seconds between redraws when nothing in the run changes."""


def rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _heartbeat(alive: bool, since: float | None, interval_hint: float) -> tuple[str, str]:
    """The age of a member's last heartbeat and a style for it."""
    if not alive:
        return "gone (evicted)", "bold red"
    if since is None:
        return "?", "yellow"
    return f"{since:.1f} s ago", "green" if since <= interval_hint else "yellow"


def status_table(run: RunStatus, heartbeat_interval: float = 2.0) -> Any:
    """A rich renderable: the round's header, members with heartbeat ages, waiting nodes, spares."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if run.round == 0:
        title = f"run {run.run_id}: no round yet (joining)"
    else:
        title = (
            f"run {run.run_id}: round {run.round} {run.state}, world size {run.world_size} "
            f"(min {run.min_nodes}, max {run.max_nodes}), coordinator {run.coordinator}"
        )
    table = Table(expand=False)
    table.add_column("rank", justify="right")
    table.add_column("node")
    table.add_column("address")
    table.add_column("last heartbeat")
    for member in run.members:
        age, style = _heartbeat(member.alive, member.since_heartbeat, heartbeat_interval)
        table.add_row(str(member.rank), member.node_id, member.addr, Text(age, style=style))
    waiting = Text(f"waiting for round {run.round + 1}: {len(run.waiting)} {' '.join(run.waiting)}".rstrip())
    spares = Text(f"spares: {len(run.spares)} {' '.join(run.spares)}".rstrip())
    return Group(Text(title, style="bold"), table, waiting, spares)


def watch_live(
    store: Store,
    run_id: str,
    *,
    console: Any = None,
    keep_going: Callable[[RunStatus], bool] = lambda _: True,
) -> None:
    """Redraw the run's status in place until Ctrl-C (or ``keep_going`` says stop)."""
    from rich.live import Live

    prefix = Layout(run_id).prefix
    try:
        current = read_status(store, run_id)
        with Live(status_table(current), console=console, auto_refresh=False) as live:
            while keep_going(current):
                store.wait(prefix, current.revision, REDRAW)
                current = read_status(store, run_id)
                live.update(status_table(current), refresh=True)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends
