"""Store backends by URL scheme, built in or added by other packages.

Other distributions add a backend through the entry-point group ``rdzv.stores``::

    [project.entry-points."rdzv.stores"]
    redis = "rdzv_redis:open_store"

The target is a factory ``(url: str, **options: str) -> Store``; it may carry a
``capabilities`` attribute (a :class:`~rdzv.store.Capabilities`) for listings.
Plugins load on first use of their scheme, so importing rdzv imports none of
them, and a plugin that cannot be used raises :class:`~rdzv.errors.PluginError`
with the cause chained: it is never logged and skipped.

rdzv also reads PyTorch's group ``torchrun.handlers`` (without importing torch)
so ``rdzv backends`` can list the rendezvous handlers that torchrun will see.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rdzv.errors import ConfigurationError, PluginError, UnknownBackendError
from rdzv.store.base import Capabilities, Store

__all__ = [
    "BackendInfo",
    "HandlerInfo",
    "StoreFactory",
    "available",
    "open_store",
    "register",
    "torchrun_handlers",
    "unregister",
]

StoreFactory = Callable[..., Store]
STORE_GROUP = "rdzv.stores"
TORCHRUN_GROUP = "torchrun.handlers"
BUILT_IN = "built in"


@dataclass(frozen=True)
class BackendInfo:
    """One backend as ``available()`` lists it."""

    scheme: str
    origin: str
    """``"built in"``, ``"registered"`` or ``"DIST VERSION"`` of the providing package."""
    target: str
    capabilities: Capabilities | None
    error: str | None = None
    """Why the backend cannot be used, when it cannot."""


@dataclass(frozen=True)
class HandlerInfo:
    """A rendezvous handler registered for torchrun under ``torchrun.handlers``."""

    name: str
    distribution: str
    version: str
    target: str


@dataclass
class _Backend:
    scheme: str
    origin: str
    target: str
    factory: StoreFactory | None = None
    capabilities: Capabilities | None = None
    distribution: str | None = None


# Built-ins are imported lazily too: the etcd backend needs an optional extra.
_BUILT_INS: dict[str, str] = {
    "memory": "rdzv.store.memory:MemoryStore.from_url",
    "file": "rdzv.store.file:FileStore.from_url",
    "tcp": "rdzv.store.tcp.client:TcpStore.from_url",
    "etcd": "rdzv.store.etcd:EtcdStore.from_url",
    "etcd+https": "rdzv.store.etcd:EtcdStore.from_url",
}

_registered: dict[str, _Backend] = {}
_lock = threading.Lock()


def register(scheme: str, factory: StoreFactory, *, capabilities: Capabilities | None = None) -> None:
    """Register ``factory`` for ``scheme`` in this process, replacing any earlier one."""
    if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ConfigurationError(f"invalid scheme {scheme!r}: use letters, digits, '+' and '-'")
    if not callable(factory):
        raise ConfigurationError(f"factory for {scheme!r} is not callable: {factory!r}")
    caps = capabilities or _capabilities_of(factory)
    with _lock:
        _registered[scheme] = _Backend(scheme, "registered", _qualname(factory), factory, caps)


def unregister(scheme: str) -> None:
    """Remove a backend added with ``register``."""
    with _lock:
        _registered.pop(scheme, None)


def open_store(url: str, **options: Any) -> Store:
    """Open the store at ``url``, choosing the backend by the URL's scheme.

    Query parameters and keyword ``options`` are passed to the backend's factory
    (keywords win); each backend rejects options it does not know.
    """
    scheme = _scheme_of(url)
    backend = _resolve(scheme)
    factory = _load(backend)
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    merged = {**query, **{k: v for k, v in options.items() if v is not None}}
    try:
        store = factory(url, **merged)
    except TypeError as exc:
        if backend.origin == BUILT_IN:
            raise
        raise PluginError(
            f"store plugin {scheme!r} from {backend.origin} failed: {exc}",
            scheme=scheme,
            distribution=backend.distribution,
        ) from exc
    if not isinstance(store, Store):
        raise PluginError(
            f"store plugin {scheme!r} ({backend.target}) from {backend.origin} returned "
            f"{type(store).__qualname__}, which is not an rdzv.store.Store",
            scheme=scheme,
            distribution=backend.distribution,
        )
    return store


def available() -> list[BackendInfo]:
    """Every backend this process knows, with origin and capabilities.

    A backend that cannot be loaded is listed with ``error`` set rather than
    raised, so one broken plugin does not hide the others; opening it raises.
    """
    result = []
    for scheme in sorted(_all_schemes()):
        try:
            backend = _resolve(scheme)
        except PluginError as exc:
            result.append(BackendInfo(scheme, "conflict", "", None, str(exc)))
            continue
        try:
            _load(backend)
        except ConfigurationError as exc:
            result.append(BackendInfo(scheme, backend.origin, backend.target, None, _describe(exc)))
            continue
        result.append(BackendInfo(scheme, backend.origin, backend.target, backend.capabilities))
    return result


def torchrun_handlers() -> list[HandlerInfo]:
    """Rendezvous handlers installed for torchrun (read from metadata, torch not imported)."""
    handlers = []
    for ep in metadata.entry_points(group=TORCHRUN_GROUP):
        dist = ep.dist
        handlers.append(
            HandlerInfo(
                ep.name,
                dist.metadata["Name"] if dist else "?",
                dist.version if dist else "?",
                ep.value,
            )
        )
    return sorted(handlers, key=lambda h: (h.name, h.distribution))


# -- internals ---------------------------------------------------------------


def _scheme_of(url: str) -> str:
    if "://" not in url:
        raise ConfigurationError(
            f"store URL {url!r} has no scheme; expected SCHEME://..., "
            f"with SCHEME one of {', '.join(sorted(_all_schemes()))}"
        )
    return url.split("://", 1)[0].lower()


def _all_schemes() -> set[str]:
    names = set(_BUILT_INS) | set(_registered)
    names |= {ep.name for ep in metadata.entry_points(group=STORE_GROUP)}
    return names


def _resolve(scheme: str) -> _Backend:
    with _lock:
        if scheme in _registered:
            return _registered[scheme]
    claims = [ep for ep in metadata.entry_points(group=STORE_GROUP) if ep.name == scheme]
    origins = [_origin(ep) for ep in claims]
    if scheme in _BUILT_INS:
        origins.insert(0, f"rdzv ({BUILT_IN})")
    if len(origins) > 1:
        raise PluginError(
            f"store scheme {scheme!r} is claimed by several packages: {' and '.join(origins)}; "
            "uninstall all but one",
            scheme=scheme,
            distribution=None,
        )
    if scheme in _BUILT_INS:
        backend = _Backend(scheme, BUILT_IN, _BUILT_INS[scheme])
    elif claims:
        ep = claims[0]
        dist = ep.dist.metadata["Name"] if ep.dist else None
        backend = _Backend(scheme, origins[0], ep.value, distribution=dist)
    else:
        raise UnknownBackendError(scheme, list(_all_schemes()))
    with _lock:
        return _registered.setdefault(scheme, backend)


def _load(backend: _Backend) -> StoreFactory:
    if backend.factory is not None:
        return backend.factory
    module_name, _, attr = backend.target.partition(":")
    where = f"store plugin {backend.scheme!r} ({backend.target}) from {backend.origin}"
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except ImportError as exc:
        if backend.origin == BUILT_IN:
            raise ConfigurationError(
                f"the {backend.scheme}:// backend needs an optional extra that is not installed "
                f"({exc}); install it with: pip install 'rdzv[{backend.scheme.split('+')[0]}]'"
            ) from exc
        raise PluginError(
            f"{where} failed to import: {exc}", scheme=backend.scheme, distribution=backend.distribution
        ) from exc
    except Exception as exc:
        raise PluginError(
            f"{where} failed to load: {type(exc).__name__}: {exc}",
            scheme=backend.scheme,
            distribution=backend.distribution,
        ) from exc
    if not callable(obj):
        raise PluginError(
            f"{where} is not callable (it is a {type(obj).__qualname__})",
            scheme=backend.scheme,
            distribution=backend.distribution,
        )
    factory: StoreFactory = obj
    backend.factory = factory
    backend.capabilities = backend.capabilities or _capabilities_of(obj)
    return factory


def _origin(ep: metadata.EntryPoint) -> str:
    if ep.dist is None:
        return "an unknown distribution"
    return f"{ep.dist.metadata['Name']} {ep.dist.version}"


def _qualname(factory: object) -> str:
    module = getattr(factory, "__module__", "?")
    return f"{module}:{getattr(factory, '__qualname__', repr(factory))}"


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__
    return f"{exc}" if cause is None else f"{exc} (caused by {type(cause).__name__}: {cause})"


def _capabilities_of(factory: object) -> Capabilities | None:
    """A factory's ``capabilities``, or its class's when it is a bound classmethod."""
    caps = getattr(factory, "capabilities", None) or getattr(
        getattr(factory, "__self__", None), "capabilities", None
    )
    return caps if isinstance(caps, Capabilities) else None
