"""The ``rdzv`` command line (click)."""
