"""``python -m rdzv``: the same as the ``rdzv`` command."""

from rdzv.cli.main import run

run()
