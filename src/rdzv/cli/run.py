"""``rdzv run``: the elastic launcher, an agent per node running K workers of any framework."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import click

from rdzv.cli.feedback import JoinFeedback
from rdzv.cli.options import (
    SECONDS,
    NodeSettings,
    addr_option,
    node_settings,
    open_url,
    quiet_option,
    read_token,
    token_options,
)
from rdzv.errors import ConfigurationError
from rdzv.launcher import Agent, Event, LaunchSpec
from rdzv.launcher.report import ERROR_FILE_ENV, write_error_file
from rdzv.launcher.spec import parse_std, worker_command
from rdzv.rendezvous.config import ENV_VARS


def parse_nnodes(text: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` -> (min, max)."""
    low, _, high = text.partition(":")
    try:
        bounds = int(low), int(high or low)
    except ValueError:
        raise ConfigurationError(f"--nnodes {text!r}: expected N or MIN:MAX (whole numbers)") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise ConfigurationError(f"--nnodes {text!r}: expected 1 <= MIN <= MAX")
    return bounds


class LauncherCommand(click.Command):
    """Options go before the worker command; from its first word on, everything is the command's.

    ``rdzv run URL --run-id J train.py --lr 1`` hands ``--lr 1`` to train.py, as
    torchrun does: a ``--`` is put before the command when the user left it out.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._mark_command(args))

    def _mark_command(self, args: list[str]) -> list[str]:
        takes_value = {
            opt for p in self.params if isinstance(p, click.Option) and not p.is_flag for opt in p.opts
        }
        at, seen_url = 0, False
        while at < len(args):
            word = args[at]
            if word == "--":
                return args
            if word.startswith("-") and word != "-":
                at += 2 if word in takes_value else 1
            elif "://" in word and not seen_url:
                seen_url, at = True, at + 1
            else:
                return [*args[:at], "--", *args[at:]]
        return args


@click.command(cls=LauncherCommand)
@click.option("--run-id", "--run_id", envvar=ENV_VARS["run_id"], help="Job identifier [env RDZV_RUN_ID].")
@click.option("--nnodes", default="1", show_default=True, help="Nodes in the job: N or MIN:MAX.")
@click.option(
    "--nproc-per-node",
    "--nproc_per_node",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes on this node (nodes may differ).",
)
@click.option(
    "--max-restarts",
    "--max_restarts",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Restarts of the whole job after worker failures, shared by all nodes.",
)
@click.option("--standalone", is_flag=True, help="One node, with a private store: no URL needed.")
@click.option(
    "--monitor-interval",
    "--monitor_interval",
    type=SECONDS,
    default=0.5,
    show_default=True,
    help="Seconds between checks of the workers (round changes wake it at once).",
)
@click.option(
    "--term-timeout",
    type=SECONDS,
    default=10,
    show_default=True,
    help="Seconds workers get between SIGTERM and SIGKILL.",
)
@click.option("--role", default="default", show_default=True, help="Role name of the workers (ROLE_NAME).")
@addr_option("--local-addr", "--local_addr", held_until="the workers start")
@click.option(
    "--log-dir",
    "--log_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep LOG_DIR/RUN_ID/round_R/rank_N.log for every worker.",
)
@click.option("--redirects", help="Streams kept off the console (log file only): 0-3 or LOCAL_RANK:0-3,...")
@click.option("--tee", help="Streams on the console and in the log file: 0-3 or LOCAL_RANK:0-3,...")
@click.option(
    "--local-ranks-filter", "--local_ranks_filter", help="Local ranks whose output reaches the console: 0,2."
)
@click.option("--health-check", metavar="CMD", help="Shell command that must exit 0 before each join.")
@click.option(
    "--health-check-timeout",
    type=SECONDS,
    default=60,
    show_default=True,
    help="Seconds the health check may take.",
)
@node_settings
@quiet_option
@token_options
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def run(args: tuple[str, ...], run_id: str | None, nnodes: str, nproc_per_node: int, max_restarts: int,
        standalone: bool, monitor_interval: float, term_timeout: float, role: str, local_addr: str | None,
        log_dir: Path | None, redirects: str | None, tee: str | None, local_ranks_filter: str | None,
        health_check: str | None, health_check_timeout: float, settings: NodeSettings, quiet: bool,
        token: str | None, token_file: Path | None) -> None:  # fmt: skip
    """Run K workers on this node as part of job RUN_ID; re-form and restart it elastically.

    ARGS is the store URL then the command (after `--`), or with --standalone
    only the command. A command ending in .py runs with this Python. Each
    worker gets torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
    ...), RDZV_ROUND/RDZV_RUN_ID/RDZV_NODE_ID and JAX_COORDINATOR_ADDRESS.

    \b
    Examples:
      rdzv run tcp://10.0.0.1:29400 --run-id job1 --nnodes 2:4 --nproc-per-node 8 train.py
      rdzv run --standalone --nproc-per-node 2 -- python -c 'import os; print(os.environ["RANK"])'
    """
    url, command = _split_args(list(args), standalone)
    if standalone and (token or token_file):
        raise click.UsageError("--standalone uses a private store: --token and --token-file do not apply")
    if standalone:
        nnodes, run_id = "1", run_id or "standalone"
        local_addr = local_addr or "127.0.0.1"
        settings = replace(settings, last_call_timeout=0.1)
    if not run_id:
        raise click.UsageError("--run-id is required (or RDZV_RUN_ID), except with --standalone")
    min_nodes, max_nodes = parse_nnodes(nnodes)
    spec = LaunchSpec(
        worker_command(command), nproc_per_node, max_restarts, monitor_interval, term_timeout, role, log_dir,
        parse_std(redirects, nproc_per_node, "--redirects") if redirects else {},
        parse_std(tee, nproc_per_node, "--tee") if tee else {},
        _ranks(local_ranks_filter) if local_ranks_filter else None,
        health_check, health_check_timeout,
    )  # fmt: skip
    feedback = JoinFeedback()
    with open_url(url, read_token(token, token_file)) as store:
        node = settings.rendezvous(
            store, run_id, min_nodes, max_nodes, addr=local_addr, on_retry=feedback.store_trouble
        )
        agent = Agent(
            spec,
            node,
            on_event=_printer(node.node_id, feedback),
            joining=partial(feedback.joining, node, quiet=quiet),
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, agent.handle_signal)
        code = agent.run()
    error_file = os.environ.get(ERROR_FILE_ENV)
    if code == 1 and error_file:
        write_error_file(Path(error_file), agent.ending_reason)
    sys.exit(code)


def _split_args(args: list[str], standalone: bool) -> tuple[str, list[str]]:
    if args and args[0] == "--":
        args = args[1:]
    if standalone:
        return f"memory://rdzv-standalone-{uuid.uuid4().hex}", args
    url = os.environ.get(ENV_VARS["url"])
    if url is None or (args and "://" in args[0]):
        if not args:
            raise click.UsageError("give the store URL (or RDZV_URL) and the command, or use --standalone")
        url, args = args[0], args[1:]
    if args and args[0] == "--":
        args = args[1:]
    return url, args


def _ranks(text: str) -> frozenset[int]:
    try:
        return frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigurationError(f"--local-ranks-filter {text!r}: expected ranks like 0 or 0,2") from None


def _printer(node_id: str, feedback: JoinFeedback) -> Callable[[Event], None]:
    def show(event: Event) -> None:
        feedback.say(f"rdzv run [{node_id}]: {event.describe()}")

    return show
