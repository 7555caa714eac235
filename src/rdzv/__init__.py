"""rdzv: elastic rendezvous for distributed jobs.

Nodes meet through a store (``tcp://``, ``file://``, ``etcd://``, ``memory://``),
agree on a membership, a rank each and a coordinator address, and re-form when
a node dies or joins.
"""

from rdzv.errors import (
    AuthenticationError,
    ConfigurationError,
    PluginError,
    RdzvError,
    RendezvousClosedError,
    RendezvousError,
    RendezvousStateError,
    RendezvousTimeoutError,
    StoreCorruptedError,
    StoreError,
    StoreStateLostError,
    StoreTimeoutError,
    StoreUnavailableError,
    UnknownBackendError,
)
from rdzv.registry import open_store
from rdzv.rendezvous.node import Change, Rendezvous, RendezvousInfo
from rdzv.store.base import Capabilities, CasResult, Entry, Listing, Store

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Capabilities",
    "CasResult",
    "Change",
    "ConfigurationError",
    "Entry",
    "Listing",
    "PluginError",
    "RdzvError",
    "Rendezvous",
    "RendezvousClosedError",
    "RendezvousError",
    "RendezvousInfo",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "Store",
    "StoreCorruptedError",
    "StoreError",
    "StoreTimeoutError",
    "StoreStateLostError",
    "StoreUnavailableError",
    "UnknownBackendError",
    "__version__",
    "open_store",
]
