"""Options shared by the commands that join or inspect a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from rdzv.rendezvous.config import ENV_VARS

F = TypeVar("F", bound=Callable[..., Any])


def store_url(func: F) -> F:
    return click.argument("url", envvar=ENV_VARS["url"])(func)


def run_id(func: F) -> F:
    return click.option(
        "--run-id",
        required=True,
        envvar=ENV_VARS["run_id"],
        help=f"Job identifier [env {ENV_VARS['run_id']}].",
    )(func)
