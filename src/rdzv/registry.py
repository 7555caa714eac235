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
import inspect
import re
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
REGISTERED = "registered"


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
    "file": "rdzv.store.file.store:FileStore.from_url",
    "tcp": "rdzv.store.tcp.client:TcpStore.from_url",
    "etcd": "rdzv.store.etcd:EtcdStore.from_url",
    "etcd+https": "rdzv.store.etcd:EtcdStore.from_url",
}

# Built-in scheme -> (extra, top-level modules that extra installs). Only a missing
# one of these earns the "pip install 'rdzv[EXTRA]'" hint.
_EXTRAS: dict[str, tuple[str, frozenset[str]]] = {
    "etcd": ("etcd", frozenset({"httpx"})),
    "etcd+https": ("etcd", frozenset({"httpx"})),
}

# RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); compared in lower case.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\Z")

# Backends added with register(), and the built-ins and entry points resolved so far.
_resolved: dict[str, _Backend] = {}
_lock = threading.Lock()


def register(scheme: str, factory: StoreFactory, *, capabilities: Capabilities | None = None) -> None:
    """Register ``factory`` for ``scheme`` in this process.

    It takes precedence over a built-in or entry-point backend of the same scheme
    and replaces an earlier ``register``. Schemes are case-insensitive.
    """
    scheme = _check_scheme(scheme)
    if not callable(factory):
        raise ConfigurationError(f"factory for {scheme!r} is not callable: {factory!r}")
    caps = capabilities or _capabilities_of(factory)
    with _lock:
        _resolved[scheme] = _Backend(scheme, REGISTERED, _qualname(factory), factory, caps)


def unregister(scheme: str) -> None:
    """Remove a backend added with ``register``; a built-in or plugin of that scheme reappears.

    A scheme that was not registered in this process is left alone.
    """
    scheme = scheme.lower()
    with _lock:
        backend = _resolved.get(scheme)
        if backend is not None and backend.origin == REGISTERED:
            del _resolved[scheme]


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
    _check_call(backend, factory, url, merged)
    store = factory(url, **merged)
    if not isinstance(store, Store):
        raise _plugin_error(
            backend,
            f"returned {_short_repr(store)} (a {type(store).__module__}.{type(store).__qualname__}), "
            "which is not an rdzv.store.Store",
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
            result.append(BackendInfo(scheme, backend.origin, backend.target, None, str(exc)))
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


def _check_scheme(scheme: str) -> str:
    lowered = scheme.lower()
    if not _SCHEME.match(lowered):
        raise ConfigurationError(
            f"invalid scheme {scheme!r}: a letter, then letters, digits, '+', '-' or '.'"
        )
    return lowered


def _scheme_of(url: str) -> str:
    if "://" not in url:
        raise ConfigurationError(
            f"store URL {url!r} has no scheme; expected SCHEME://..., "
            f"with SCHEME one of {', '.join(sorted(_all_schemes()))}"
        )
    return _check_scheme(url.split("://", 1)[0])


def _all_schemes() -> set[str]:
    names = set(_BUILT_INS) | set(_resolved)
    names |= {ep.name.lower() for ep in metadata.entry_points(group=STORE_GROUP)}
    return names


def _resolve(scheme: str) -> _Backend:
    with _lock:
        if scheme in _resolved:
            return _resolved[scheme]
    claims = [ep for ep in metadata.entry_points(group=STORE_GROUP) if ep.name.lower() == scheme]
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
        return _resolved.setdefault(scheme, backend)


def _load(backend: _Backend) -> StoreFactory:
    if backend.factory is not None:
        return backend.factory
    module_name, _, attr = backend.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except ImportError as exc:
        extra = _EXTRAS.get(backend.scheme) if backend.origin == BUILT_IN else None
        if extra is not None and (exc.name or "").partition(".")[0] in extra[1]:
            raise ConfigurationError(
                f"the {backend.scheme}:// backend needs the optional extra {extra[0]!r}, which is not "
                f"installed ({type(exc).__name__}: {exc}); install it with: pip install 'rdzv[{extra[0]}]'"
            ) from exc
        raise _plugin_error(backend, f"failed to import: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise _plugin_error(backend, f"failed to load: {type(exc).__name__}: {exc}") from exc
    if not callable(obj):
        raise _plugin_error(
            backend, f"is not callable: it is {_short_repr(obj)} (a {type(obj).__qualname__})"
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


def _where(backend: _Backend) -> str:
    if backend.origin == BUILT_IN:
        return f"built-in store backend {backend.scheme!r} ({backend.target})"
    if backend.origin == REGISTERED:
        return f"store backend {backend.scheme!r} ({backend.target}, registered in this process)"
    return f"store plugin {backend.scheme!r} ({backend.target}) from {backend.origin}"


def _plugin_error(backend: _Backend, what: str) -> PluginError:
    distribution = "rdzv" if backend.origin == BUILT_IN else backend.distribution
    return PluginError(f"{_where(backend)} {what}", scheme=backend.scheme, distribution=distribution)


def _short_repr(obj: object, limit: int = 80) -> str:
    shown = repr(obj)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _check_call(backend: _Backend, factory: StoreFactory, url: str, options: dict[str, Any]) -> None:
    """Raise a clear error unless ``factory(url, **options)`` matches the factory's signature.

    Checked before the call, so a ``TypeError`` raised inside a factory is never
    mistaken for a bad option.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to check (some builtins): let the call decide
        return
    try:
        signature.bind(url, **options)
    except TypeError as exc:
        try:
            signature.bind(url)
        except TypeError:
            raise _plugin_error(backend, f"cannot be called as FACTORY(url, **options): {exc}") from exc
        keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = [p.name for p in list(signature.parameters.values())[1:] if p.kind in keywords]
        raise ConfigurationError(
            f"{_where(backend)} rejected the options {', '.join(sorted(options))} given for {url!r} "
            f"({exc}); it accepts: {', '.join(sorted(accepted)) or 'no options'}"
        ) from exc


def _capabilities_of(factory: object) -> Capabilities | None:
    """A factory's ``capabilities``, or its class's when it is a bound classmethod."""
    caps = getattr(factory, "capabilities", None) or getattr(
        getattr(factory, "__self__", None), "capabilities", None
    )
    return caps if isinstance(caps, Capabilities) else None
