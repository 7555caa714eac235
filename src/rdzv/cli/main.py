"""Entry point of the ``rdzv`` command: a click group with one module per command."""

from __future__ import annotations

import signal
import sys

import click

from rdzv import __version__
from rdzv.cli.backends import backends
from rdzv.cli.bench import bench
from rdzv.cli.join import Terminated, join
from rdzv.cli.run import run as run_command
from rdzv.cli.serve import serve
from rdzv.cli.status import status
from rdzv.cli.token import token
from rdzv.errors import ConfigurationError, RdzvError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rdzv")
def main() -> None:
    """Elastic rendezvous for distributed jobs.

    Nodes meet through a store given as a URL: tcp://HOST:PORT (the embedded
    server, see `rdzv serve`), file:///shared/dir (?create=1 to create it),
    etcd://HOST:2379 or memory://NAME (one process only).
    """


main.add_command(backends)
main.add_command(serve)
main.add_command(join)
main.add_command(run_command)
main.add_command(status)
main.add_command(bench)
main.add_command(token)


def run(argv: list[str] | None = None) -> None:
    """Console script: errors are one line on stderr; exit 2 for bad usage, 1 for failures."""
    try:
        code = main.main(args=argv, prog_name="rdzv", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("rdzv: interrupted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("rdzv: terminated", err=True)
        sys.exit(128 + signal.SIGTERM)
    except click.ClickException as exc:
        click.echo(f"rdzv: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ConfigurationError as exc:
        click.echo(f"rdzv: error: {exc}", err=True)
        sys.exit(2)
    except RdzvError as exc:
        click.echo(f"rdzv: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
