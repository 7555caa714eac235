"""Options shared by the commands that join or inspect a run, and how they open the store."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import click

from rdzv.core.ranks import RANK_POLICIES
from rdzv.registry import open_store
from rdzv.rendezvous.config import ENV_VARS
from rdzv.rendezvous.node import Rendezvous
from rdzv.retry import RetryObserver
from rdzv.store.base import Store

F = TypeVar("F", bound=Callable[..., Any])

SECONDS = click.FloatRange(min=0, min_open=True)

TOKEN_PRECEDENCE = "--token-file, then --token, then the URL's ?token=, then RDZV_TOKEN"
"""Where a command's token comes from, first found wins (tcp:// stores)."""


def store_url(func: F) -> F:
    return click.argument("url", envvar=ENV_VARS["url"])(func)


def run_id(func: F) -> F:
    return click.option(
        "--run-id",
        required=True,
        envvar=ENV_VARS["run_id"],
        help=f"Job identifier [env {ENV_VARS['run_id']}].",
    )(func)


def addr_option(*names: str, held_until: str) -> Callable[[F], F]:
    """Where others reach this node; ``held_until`` says when the default port is let go."""
    return click.option(
        *names,
        help="HOST or HOST:PORT others reach this node at; PORT becomes MASTER_PORT on the node "
        "of rank 0 [default: this machine's address on the route to the store's host, and a free "
        f"port held until {held_until}].",
    )


def quiet_option(func: F) -> F:
    return click.option("--quiet", "-q", is_flag=True, help="No progress line while waiting.")(func)


@dataclass(frozen=True)
class NodeSettings:
    """The rendezvous settings ``rdzv join`` and ``rdzv run`` share, as their options gave them."""

    node_id: str | None
    join_timeout: float
    last_call_timeout: float
    heartbeat_interval: float
    heartbeat_misses: int
    rank_policy: str
    split_brain_guard: bool

    def rendezvous(
        self, store: Store, run_id: str, min_nodes: int, max_nodes: int, *, addr: str | None,
        on_retry: RetryObserver,
    ) -> Rendezvous:  # fmt: skip
        """This node's membership of ``run_id`` through ``store`` (which the caller closes)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        return Rendezvous(store, run_id, min_nodes, max_nodes, addr=addr, on_retry=on_retry, **settings)


_NODE_OPTIONS = (
    click.option("--node-id", help="Unique name of this node [default: HOST-PID-RANDOM]."),
    click.option(
        "--join-timeout",
        type=SECONDS,
        default=600,
        show_default=True,
        envvar=ENV_VARS["join_timeout"],
        help="Seconds to wait for a round.",
    ),
    click.option(
        "--last-call-timeout",
        type=SECONDS,
        default=30,
        show_default=True,
        envvar=ENV_VARS["last_call_timeout"],
        help="Seconds to wait for more nodes once the fewest a round may start with have joined.",
    ),
    click.option(
        "--heartbeat-interval",
        type=SECONDS,
        default=5,
        show_default=True,
        envvar=ENV_VARS["heartbeat_interval"],
        help="Seconds between heartbeats.",
    ),
    click.option(
        "--heartbeat-misses",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        envvar=ENV_VARS["heartbeat_misses"],
        help="Missed heartbeats before eviction.",
    ),
    click.option(
        "--rank-policy",
        type=click.Choice(RANK_POLICIES),
        default="stable",
        show_default=True,
        envvar=ENV_VARS["rank_policy"],
        help="How node ranks are assigned.",
    ),
    click.option(
        "--split-brain-guard/--no-split-brain-guard",
        default=True,
        show_default=True,
        envvar=ENV_VARS["split_brain_guard"],
        help="After a store failover, form a round only with a majority of the last one's members.",
    ),
)


def node_settings(func: F) -> F:
    """``--node-id``, ``--join-timeout``, ... handed to the command as one ``settings: NodeSettings``."""
    names = [f.name for f in fields(NodeSettings)]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        settings = NodeSettings(**{name: kwargs.pop(name) for name in names})
        return func(*args, settings=settings, **kwargs)

    for option in reversed(_NODE_OPTIONS):
        command = option(command)
    return cast(F, command)


def token_options(func: F) -> F:
    """``--token`` and ``--token-file``: the shared secret of a tcp:// store."""
    with_file = click.option(
        "--token-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the store's shared secret from this file (where a secret belongs).",
    )(func)
    return click.option(
        "--token",
        help=f"The store's shared secret. Precedence: {TOKEN_PRECEDENCE} [env {ENV_VARS['token']}].",
    )(with_file)


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The token given on the command line (``--token-file`` wins over ``--token``), or ``None``."""
    if token_file is not None:
        text = token_file.read_text().strip()
        if not text:
            raise click.UsageError(f"token file {token_file} is empty")
        return text
    return token or None


def env_token() -> str | None:
    return os.environ.get(ENV_VARS["token"]) or None


def open_url(url: str, token: str | None, *, read_only: bool = False) -> Store:
    """Open the store at ``url`` with a command-line token; ``read_only`` never hosts a server."""
    scheme = urlsplit(url).scheme
    options: dict[str, Any] = {}
    if token is not None:
        if scheme != "tcp":
            raise click.UsageError(f"--token/--token-file apply to tcp:// stores, not {scheme}://")
        options["token"] = token
    if read_only and scheme == "tcp":
        options["is_host"] = "0"  # a command that only looks must not start a private, empty store
    return open_store(url, **options)
