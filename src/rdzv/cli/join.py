"""``rdzv join``: join a run, print this node's place, optionally run a command in it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import click

from rdzv.cli.feedback import JoinFeedback
from rdzv.cli.options import (
    NodeSettings,
    addr_option,
    node_settings,
    open_url,
    quiet_option,
    read_token,
    run_id,
    store_url,
    token_options,
)
from rdzv.rendezvous.config import ENV_VARS
from rdzv.rendezvous.node import Rendezvous, RendezvousInfo

__all__ = ["Terminated", "join"]

HOST_LINGER = 60.0
"""Most seconds a node hosting the store waits, before leaving, for members to read their placement."""


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C, so the node leaves the lobby or round on its way out."""


@click.command()
@store_url
@run_id
@click.option(
    "--min",
    "min_nodes",
    type=click.IntRange(min=1),
    required=True,
    envvar=ENV_VARS["min_nodes"],
    help="Fewest nodes a round may start with.",
)
@click.option(
    "--max",
    "max_nodes",
    type=click.IntRange(min=1),
    required=True,
    envvar=ENV_VARS["max_nodes"],
    help="Most nodes in a round; later ones wait as spares.",
)
@addr_option("--addr", held_until="the command starts")
@node_settings
@click.option(
    "--format",
    "output",
    type=click.Choice(["json", "env"]),
    default="json",
    show_default=True,
    help="Print the result as a JSON object or as shell `export` lines.",
)
@quiet_option
@token_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def join(url: str, run_id: str, min_nodes: int, max_nodes: int, addr: str | None, settings: NodeSettings,
         output: str, quiet: bool, token: str | None, token_file: Path | None,
         command: tuple[str, ...]) -> None:  # fmt: skip
    """Join run RUN_ID through the store at URL and print this node's rank.

    With a command after `--`, run it with RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT (and RDZV_ROUND, RDZV_RUN_ID, RDZV_NODE_ID) set, keeping this
    node's heartbeat alive until it exits; rdzv exits with its exit code.
    SIGTERM or Ctrl-C leaves the lobby or round at once (exit 143 or 130).

    \b
    URL forms:
      tcp://HOST:PORT[?token=T]   the embedded server: `rdzv serve`, or hosted by the
                                  node whose address HOST is (it stays until the round's
                                  members have read their placement)
      file:///shared/dir[?create=1]   a directory every node mounts
      etcd://HOST:2379[,HOST2:2379]   etcd v3
      memory://NAME               this process only (tests)

    A tcp:// store's token (shared secret) comes from --token-file, else
    --token, else the URL's ?token=, else RDZV_TOKEN: the first found wins.

    \b
    Environment: RDZV_URL, RDZV_RUN_ID, RDZV_MIN_NODES, RDZV_MAX_NODES,
    RDZV_JOIN_TIMEOUT, RDZV_LAST_CALL_TIMEOUT, RDZV_HEARTBEAT_INTERVAL,
    RDZV_HEARTBEAT_MISSES, RDZV_RANK_POLICY and RDZV_TOKEN stand in for the
    argument and options.

    \b
    Example:
      rdzv join tcp://10.0.0.1:29400 --run-id job1 --min 2 --max 4 -- python train.py
    """
    feedback = JoinFeedback()
    with (
        _sigterm_unwinds(),
        open_url(url, read_token(token, token_file)) as store,
        settings.rendezvous(
            store, run_id, min_nodes, max_nodes, addr=addr, on_retry=feedback.store_trouble
        ) as node,
    ):
        with feedback.joining(node, quiet=quiet):
            info = node.next_rendezvous()
        text = _format(info, output, node.node_id)
        node.confirm_placement()
        click.echo(text)
        sys.stdout.flush()
        try:
            if command:
                node.release_port()  # rank 0's MASTER_PORT, held until now, is the command's to bind
                sys.exit(_run_child(list(command), _child_env(info, node.node_id)))
        finally:
            if getattr(store, "hosted", None) is not None:
                _stay_for_members(node, feedback)


def _stay_for_members(node: Rendezvous, feedback: JoinFeedback) -> None:
    """This process serves the store: leave only when the round's members have read their places."""
    unread = node.wait_placements_read(HOST_LINGER)
    if unread:
        feedback.say(
            f"rdzv: leaving after {HOST_LINGER:.0f} s although {len(unread)} member(s) have not read "
            f"their placement from the store this node hosts: {' '.join(unread)}"
        )


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    def terminate(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one unwind; a second signal must not cut it short
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _child_env(info: RendezvousInfo, node_id: str) -> dict[str, str]:
    return {
        "RANK": str(info.rank),
        "WORLD_SIZE": str(info.world_size),
        "MASTER_ADDR": info.coordinator_host,
        "MASTER_PORT": str(info.coordinator_port),
        "RDZV_ROUND": str(info.round),
        "RDZV_RUN_ID": info.run_id,
        "RDZV_NODE_ID": node_id,
    }


def _format(info: RendezvousInfo, output: str, node_id: str) -> str:
    if output == "env":
        return "\n".join(f"export {k}={v}" for k, v in _child_env(info, node_id).items())
    return json.dumps(info.as_dict())


def _run_child(command: list[str], extra_env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(command, env={**os.environ, **extra_env})
    except OSError as exc:
        raise click.UsageError(f"cannot run {command[0]!r}: {exc.strerror}") from exc

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
