"""The ``torchrun.handlers`` entry point ``rdzv``: torch-free, so torch can load it while importing.

torch imports every ``torchrun.handlers`` entry point from inside
``torch.distributed.elastic.rendezvous/__init__.py`` and calls it with no
arguments. Importing :mod:`rdzv.torchrun.handler` (which imports that same torch package)
at that moment could find it half-initialised, for instance when user code
imports ``rdzv.torchrun.handler`` first; so this module imports nothing from torch and
loads the adapter only when torchrun creates a handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdzv.torchrun.handler import RdzvRendezvousHandler

__all__ = ["create_handler", "handler_creator"]


def create_handler(params: Any) -> RdzvRendezvousHandler:
    """``creator(params: RendezvousParameters) -> RendezvousHandler``, as torch calls it."""
    from rdzv.torchrun.handler import create_handler as create

    return create(params)


def handler_creator() -> Any:
    """The entry point's target: returns the creator torch registers as backend ``rdzv``."""
    return create_handler
