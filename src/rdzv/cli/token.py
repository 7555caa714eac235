"""``rdzv token``: derive the token of one run from a ``rdzv serve`` secret."""

from __future__ import annotations

from pathlib import Path

import click

from rdzv.cli.options import env_token, read_token, token_options

__all__ = ["token"]


@click.command()
@click.option("--run-id", required=True, help="The run the token is for (letters, digits, '_', '.', '-').")
@token_options
def token(run_id: str, token: str | None, token_file: Path | None) -> None:
    """Print a token that lets its holder touch only the keys of RUN_ID.

    Give it to that job as ?token=... (or RDZV_TOKEN). The server re-derives it
    from its own secret, so nothing is restarted and no list is kept. A
    connection with it may read, write and wait only under rdzv/RUN_ID/; any
    other key, another run's lease, or `rdzv status --server` is refused. The
    server's own secret still sees everything.

    \b
      RDZV_TOKEN=$SECRET rdzv token --run-id job42
    """
    from rdzv.store.tcp.auth import derive_run_token

    secret = read_token(token, token_file) or env_token()
    if secret is None:
        raise click.UsageError("give the server's secret: --token, --token-file or RDZV_TOKEN")
    try:
        click.echo(derive_run_token(secret.encode(), run_id))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
