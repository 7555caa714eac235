"""The rendezvous layer: drives the pure logic of :mod:`rdzv.core` over a store.

``node`` (the public ``Rendezvous``), ``join`` (the join steps), ``heartbeat``
(lease refreshes), ``layout`` (the key layout of a run), ``status`` (a read-only
view of a run) and ``config`` (validated settings).
"""

from rdzv.rendezvous.node import Change, Rendezvous, RendezvousInfo

__all__ = ["Change", "Rendezvous", "RendezvousInfo"]
