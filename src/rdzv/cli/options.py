"""Options shared by the commands that join or inspect a run, and how they open the store."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from rdzv.registry import open_store
from rdzv.rendezvous.config import ENV_VARS
from rdzv.store.base import Store

F = TypeVar("F", bound=Callable[..., Any])

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
