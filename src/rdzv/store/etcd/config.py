"""Parsing and validating ``etcd://`` and ``etcd+https://`` URLs.

``etcd://HOST[:PORT][,HOST[:PORT]...][/PREFIX][?OPTION=VALUE&...]``; the port
defaults to 2379. Keys are stored under ``/PREFIX/`` (nothing when the URL has
no path). Options are listed in :data:`OPTIONS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from rdzv.errors import ConfigurationError

__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "OPTIONS", "EtcdConfig", "parse_url"]

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 10.0

OPTIONS: dict[str, str] = {
    "user": "etcd user name (auth); needs password",
    "password": "etcd user password (auth); needs user",
    "ca": "PEM file of the CA that signed the servers' certificates (etcd+https)",
    "cert": "PEM client certificate for mutual TLS (etcd+https); needs key",
    "key": "PEM private key of cert (etcd+https); needs cert",
    "timeout": f"seconds one store operation may take, failover included (default {DEFAULT_TIMEOUT:g})",
}


@dataclass(frozen=True)
class EtcdConfig:
    """A validated etcd store location."""

    endpoints: tuple[str, ...]
    """Base URLs such as ``http://127.0.0.1:2379``, tried in order with failover."""
    prefix: str
    """Prepended to every key; ``""`` or ends with ``/``."""
    user: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    display_url: str = ""
    """The URL with any password masked, for messages and ``Store.url``."""

    @property
    def tls(self) -> bool:
        return self.endpoints[0].startswith("https://")


def parse_url(url: str, **options: str) -> EtcdConfig:
    """Parse ``url`` with its query and ``options`` (which win) into an :class:`EtcdConfig`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("etcd", "etcd+https"):
        raise ConfigurationError(f"not an etcd URL: {url!r}; expected etcd://HOST:PORT or etcd+https://...")
    if "@" in parts.netloc:
        raise ConfigurationError(
            f"etcd URL {_mask(url)!r} has credentials before the host; pass them as ?user=...&password=..."
        )
    merged = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options)
    unknown = sorted(set(merged) - set(OPTIONS))
    if unknown:
        valid = "; ".join(f"{name}: {text}" for name, text in OPTIONS.items())
        raise ConfigurationError(f"unknown etcd option(s) {', '.join(unknown)}; valid options are {valid}")
    http = "https" if scheme == "etcd+https" else "http"
    endpoints = tuple(f"{http}://{hostport}" for hostport in _hosts(parts.netloc, url))
    user, password = merged.get("user") or None, merged.get("password")
    if (user is None) != (password is None):
        raise ConfigurationError("etcd options user and password must be given together")
    tls_files = {name: merged.get(name) or None for name in ("ca", "cert", "key")}
    _check_tls(scheme, tls_files)
    display = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    return EtcdConfig(
        endpoints=endpoints,
        prefix=_prefix(parts.path),
        user=user,
        password=password,
        ca=tls_files["ca"],
        cert=tls_files["cert"],
        key=tls_files["key"],
        timeout=_timeout(merged.get("timeout")),
        display_url=display,
    )


def _hosts(netloc: str, url: str) -> list[str]:
    if not netloc:
        raise ConfigurationError(
            f"etcd URL {_mask(url)!r} names no host; expected etcd://HOST:PORT[,HOST:PORT]"
        )
    hosts = []
    for item in netloc.split(","):
        host, port = _split_host(item.strip(), url)
        hosts.append(f"{host}:{port}")
    return hosts


def _split_host(item: str, url: str) -> tuple[str, int]:
    if not item:
        raise ConfigurationError(f"etcd URL {_mask(url)!r} has an empty host in its host list")
    port_text: str | None
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise ConfigurationError(f"etcd URL {_mask(url)!r}: unterminated IPv6 address {item!r}")
        host, rest = item[: end + 1], item[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else (rest or None)
    else:
        host, colon, after = item.partition(":")
        port_text = after if colon else None
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigurationError(f"etcd URL {_mask(url)!r}: invalid port {port_text!r} for host {host!r}")
    return host, int(port_text)


def _prefix(path: str) -> str:
    stripped = path.strip("/")
    return f"/{stripped}/" if stripped else ""


def _timeout(text: str | None) -> float:
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"etcd option timeout must be a positive number of seconds, got {text!r}")
    return value


def _check_tls(scheme: str, files: dict[str, str | None]) -> None:
    given = [name for name, path in files.items() if path]
    if given and scheme != "etcd+https":
        raise ConfigurationError(f"etcd option(s) {', '.join(given)} need TLS: use an etcd+https:// URL")
    if bool(files["cert"]) != bool(files["key"]):
        raise ConfigurationError("etcd options cert and key must be given together")
    for name in given:
        path = files[name]
        if path and not os.path.isfile(path):
            raise ConfigurationError(f"etcd option {name}: no such file {path!r}")


def _mask(url: str) -> str:
    parts = urlsplit(url)
    query = "&".join(
        f"{k}={'***' if k == 'password' else v}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))
