"""``python -m rdzv``: the same as the ``rdzv`` command."""

from rdzv.cli.main import main

main(prog_name="rdzv")
