"""The store protocol and its built-in backends (loaded by scheme, see ``rdzv.registry``)."""

from rdzv.store.base import Capabilities, CasResult, Entry, Listing, Store

__all__ = ["Capabilities", "CasResult", "Entry", "Listing", "Store"]
