"""Shaped like the ``testbackend`` package PyTorch's own tests register for torchrun.

Entry point ``torchrun.handlers``: ``testbackend = "testbackend:test_handler"``. torch is
imported only when the handler is called, never when this module is imported.
"""

from __future__ import annotations

from typing import Any


def test_handler(params: Any) -> Any:
    """Return a rendezvous handler for torchrun (imports torch only now)."""
    from torch.distributed.elastic.rendezvous.static_tcp_rendezvous import create_rdzv_handler

    return create_rdzv_handler(params)
