"""Entry point of the ``rdzv`` command: a click group with one module per command."""

from __future__ import annotations

import click

from rdzv import __version__
from rdzv.cli.backends import backends
from rdzv.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rdzv")
def main() -> None:
    """Elastic rendezvous for distributed jobs.

    Nodes meet through a store given as a URL: tcp://HOST:PORT (the embedded
    server, see `rdzv serve`), file:///shared/dir, etcd://HOST:2379 or
    memory://NAME (one process only).
    """


main.add_command(backends)
main.add_command(serve)
