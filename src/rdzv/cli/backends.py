"""``rdzv backends``: the store backends and torchrun handlers installed."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from rdzv.registry import available, torchrun_handlers


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def backends(as_json: bool) -> None:
    """List store backends (by URL scheme) and torchrun rendezvous handlers.

    Store backends come built in or from packages registering the entry-point
    group `rdzv.stores`. Rendezvous handlers are what `torchrun --rdzv-backend`
    accepts from packages registering `torchrun.handlers` (torch is not imported).
    """
    stores = available()
    handlers = torchrun_handlers()
    if as_json:
        click.echo(
            json.dumps(
                {"stores": [asdict(s) for s in stores], "torchrun_handlers": [asdict(h) for h in handlers]},
                indent=2,
            )
        )
        return
    click.echo("Store backends (rdzv.stores):")
    for info in stores:
        if info.error:
            status = f"unusable: {info.error}"
        elif info.capabilities is None:
            status = "capabilities not declared"
        else:
            caps = [name for name, on in asdict(info.capabilities).items() if on]
            status = ", ".join(caps) or "none"
        click.echo(f"  {info.scheme + '://':<14} {info.origin:<24} {status}")
    click.echo("torchrun rendezvous handlers (torchrun.handlers):")
    if not handlers:
        click.echo("  none installed")
    for handler in handlers:
        click.echo(f"  {handler.name:<14} {handler.distribution} {handler.version:<10} {handler.target}")
