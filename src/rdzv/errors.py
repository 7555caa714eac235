"""The one exception tree of rdzv.

::

    RdzvError
    ├── ConfigurationError (also ValueError)        bad URL, option, setting
    │   ├── UnknownBackendError (also LookupError)  lists the schemes that exist
    │   └── PluginError                             a store backend that cannot be loaded or used
    ├── StoreError                                  raised by stores, translated at their edge
    │   ├── StoreUnavailableError (also ConnectionError)
    │   ├── StoreTimeoutError (also TimeoutError)
    │   ├── StoreCorruptedError
    │   └── StoreStateLostError                     the store restarted empty: waiting cannot help
    ├── AuthenticationError
    └── RendezvousError
        ├── RendezvousClosedError
        ├── RendezvousTimeoutError (also TimeoutError)
        └── RendezvousStateError

Errors carry the fields that locate them (``url``, ``run_id``, ``round``, ``key``)
and are raised ``from`` the foreign error that caused them.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "PluginError",
    "RdzvError",
    "RendezvousClosedError",
    "RendezvousError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "StoreCorruptedError",
    "StoreError",
    "StoreStateLostError",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "UnknownBackendError",
]


class RdzvError(Exception):
    """Root of every error rdzv raises."""


class ConfigurationError(RdzvError, ValueError):
    """A URL, option or setting is invalid; the message names it and what is accepted."""


class UnknownBackendError(ConfigurationError, LookupError):
    """No store backend is registered for a URL scheme."""

    def __init__(self, scheme: str, known: list[str]) -> None:
        self.scheme = scheme
        self.known = sorted(known)
        super().__init__(f"no store backend for scheme {scheme!r}; known schemes: {', '.join(self.known)}")


class PluginError(ConfigurationError):
    """A store backend cannot be loaded or used: a plugin from an entry point, or a built-in.

    ``distribution`` names the package providing it (``"rdzv"`` for a built-in,
    ``None`` when unknown or when several packages claim ``scheme``); the cause
    is chained.
    """

    def __init__(self, message: str, *, scheme: str, distribution: str | None) -> None:
        self.scheme = scheme
        self.distribution = distribution
        super().__init__(message)


class StoreError(RdzvError):
    """A store operation failed."""

    def __init__(self, message: str, *, url: str | None = None, key: str | None = None) -> None:
        self.url = url
        self.key = key
        super().__init__(message)


class StoreUnavailableError(StoreError, ConnectionError):
    """The store cannot be reached."""


class StoreTimeoutError(StoreError, TimeoutError):
    """The store did not answer within the deadline."""


class StoreCorruptedError(StoreError):
    """The store holds data rdzv cannot read."""


class StoreStateLostError(StoreError):
    """The store lost what it held (its server restarted, or the client moved to another host).

    Not transient: retrying cannot bring the state back. Raised by the call that spanned
    the change (revisions and leases it referred to mean nothing to the new store); the
    caller re-asserts what it knows (``rdzv.rendezvous.recovery``), later calls work.
    """


class AuthenticationError(RdzvError):
    """The store refused our credentials, or we refused the server's."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)


class RendezvousError(RdzvError):
    """A rendezvous could not be completed."""

    def __init__(self, message: str, *, run_id: str | None = None, round: int | None = None) -> None:  # noqa: A002
        self.run_id = run_id
        self.round = round
        super().__init__(message)


class RendezvousClosedError(RendezvousError):
    """The rendezvous has been closed; no further rounds will form."""


class RendezvousTimeoutError(RendezvousError, TimeoutError):
    """The rendezvous did not complete within its timeout."""


class RendezvousStateError(RendezvousError):
    """The rendezvous state in the store is inconsistent or of an unknown version."""
