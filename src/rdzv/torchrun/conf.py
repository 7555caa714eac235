"""torchrun's ``--rdzv-endpoint`` and ``--rdzv-conf``, read as an rdzv store URL and settings.

No torch import here: the rules are checked without torch, and
:mod:`rdzv.torchrun.handler` applies them to torch's ``RendezvousParameters``.

* ``--rdzv-endpoint=HOST:PORT`` (or ``HOST``, port 29400) is the embedded TCP
  store at that address, hosted by the node that owns it (``is_host=auto``) or
  by an external ``rdzv serve``: ``tcp://HOST:PORT``. ``HOST:0`` (the endpoint
  ``--standalone`` gives c10d) makes this node host on a free port: a single node.
* ``--rdzv-endpoint=SCHEME://...`` picks that store backend as is.
* ``--rdzv-conf`` keys are the rendezvous settings, ``token`` and ``is_host``
  (tcp only), ``timeout``, which torchrun always passes (900 s by default) and
  which rdzv takes as the join timeout unless ``join_timeout`` is given, and the
  keys of torch's own backends: ``keep_alive_interval``, ``keep_alive_max_attempt``
  and ``read_timeout`` have a meaning here (:data:`TORCH_ALIASES`), the others
  (:data:`NO_EFFECT_KEYS`) are accepted and logged as having none. Any other
  key is an error that lists the valid ones; torch's own backends ignore
  unknown keys silently, so a typo never takes effect there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from rdzv.errors import ConfigurationError
from rdzv.rendezvous.config import RendezvousSettings

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_READ_TIMEOUT",
    "NO_EFFECT_KEYS",
    "READ_TIMEOUT_KEY",
    "TORCH_ALIASES",
    "VALID_KEYS",
    "TorchrunOptions",
    "parse_options",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 29400
"""torchrun's default rendezvous port, used when the endpoint names only a host."""
DEFAULT_READ_TIMEOUT = 10.0
"""Seconds one store operation may take (reconnects included) unless ``read_timeout`` says otherwise:
short, so that ``num_nodes_waiting()`` in the agent's monitor loop fails fast on a dead store."""

SETTING_KEYS = (
    "join_timeout",
    "last_call_timeout",
    "close_timeout",
    "heartbeat_interval",
    "heartbeat_misses",
    "rank_policy",
    "split_brain_guard",
)
TCP_KEYS = ("token", "is_host")
TORCH_ALIASES = {
    "keep_alive_interval": "heartbeat_interval",
    "keep_alive_max_attempt": "heartbeat_misses",
}
"""torch's c10d keys for rdzv's heartbeat settings (``read_timeout`` is :data:`READ_TIMEOUT_KEY`)."""
READ_TIMEOUT_KEY = "read_timeout"
"""torch's timeout of one store operation: here the rdzv store's and the round TCPStore's."""
NO_EFFECT_KEYS = (
    "heartbeat_timeout",
    "store_type",
    "use_libuv",
    "etcd_prefix",
    "protocol",
    "ssl_cert",
    "ssl_cert_key",
    "ca_cert",
)
"""Keys torch's backends document that have no meaning with rdzv: accepted, logged, ignored."""
VALID_KEYS = (*SETTING_KEYS, *TCP_KEYS, "timeout", *TORCH_ALIASES, READ_TIMEOUT_KEY, *NO_EFFECT_KEYS)
TIMEOUT_SCHEMES = ("tcp", "file", "etcd")
"""Built-in stores whose ``timeout`` option bounds one operation (``read_timeout``)."""

_TRUE = ("1", "true", "t", "yes", "y")
_FALSE = ("0", "false", "f", "no", "n")


@dataclass(frozen=True)
class TorchrunOptions:
    """What one torchrun agent needs to open its store and build its ``Rendezvous``."""

    url: str
    settings: RendezvousSettings
    store_options: dict[str, str] = field(default_factory=dict)
    """Keyword options for ``open_store`` (``token``, ``is_host``, ``timeout``)."""
    read_timeout: float | None = None
    """``read_timeout`` if given: the round TCPStore's operation timeout too (torch's default otherwise)."""


def parse_options(
    endpoint: str, run_id: str, min_nodes: int, max_nodes: int, conf: Mapping[str, object]
) -> TorchrunOptions:
    """Check ``conf`` (``--rdzv-conf`` plus torchrun's ``timeout``) and read ``endpoint``."""
    values = _unquoted(conf)
    unknown = sorted(set(values) - set(VALID_KEYS))
    if unknown:
        raise ConfigurationError(
            f"rdzv: unknown --rdzv-conf key(s) {', '.join(unknown)}; valid keys: {', '.join(VALID_KEYS)}"
        )
    ignored = sorted(set(values) & set(NO_EFFECT_KEYS))
    if ignored:
        log.warning("rdzv: --rdzv-conf %s: no effect with --rdzv-backend=rdzv", ", ".join(ignored))
    _apply_aliases(values)
    url = endpoint_url(endpoint)
    store_options = _store_options(url, values, max_nodes)
    if "join_timeout" not in values and "timeout" in values:
        values["join_timeout"] = values["timeout"]
    strings = {key: values[key] for key in SETTING_KEYS if key in values}
    settings = RendezvousSettings.from_strings(
        {"run_id": run_id, "min_nodes": str(min_nodes), "max_nodes": str(max_nodes), **strings}
    )
    read_timeout = _read_timeout(values.get(READ_TIMEOUT_KEY))
    parts = urlsplit(url)
    in_url = "timeout" in dict(parse_qsl(parts.query))
    if not in_url and (read_timeout is not None or parts.scheme in TIMEOUT_SCHEMES):
        store_options["timeout"] = str(read_timeout or DEFAULT_READ_TIMEOUT)
    return TorchrunOptions(url, settings, store_options, read_timeout)


def _unquoted(conf: Mapping[str, object]) -> dict[str, str]:
    """String values, one level of matching quotes stripped from keys and values.

    ``--rdzv-conf="'a=1,b=2'"`` (quotes inside the value, as torch's own tests
    pass it) reaches us split at commas: ``{"'a": "1", "b": "2'"}``, perhaps with
    torchrun's ``timeout`` after it; the quote that opens the first key and the
    one that closes the last value to end with it are one pair.
    """
    items = [[str(key).strip(), str(value).strip()] for key, value in conf.items() if value is not None]
    quote = items[0][0][:1] if items else ""
    if quote in ("'", '"') and not items[0][0].endswith(quote):
        closing = [item for item in items if item[1].endswith(quote) and not item[1].startswith(quote)]
        if closing:
            items[0][0] = items[0][0][1:]
            closing[-1][1] = closing[-1][1][:-1]
    return {_strip_quotes(key): _strip_quotes(value) for key, value in items}


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in ("'", '"'):
        return text[1:-1]
    return text


def _apply_aliases(values: dict[str, str]) -> None:
    """torch's ``keep_alive_*`` keys as rdzv's heartbeat settings; both for one setting is an error."""
    for torch_key, ours in TORCH_ALIASES.items():
        if torch_key not in values:
            continue
        if ours in values:
            raise ConfigurationError(
                f"rdzv: --rdzv-conf has both {torch_key} and {ours}, which set the same thing; give one"
            )
        values[ours] = values.pop(torch_key)


def _store_options(url: str, values: dict[str, str], max_nodes: int) -> dict[str, str]:
    """``token`` and ``is_host`` for a tcp store; ``is_host`` elsewhere has no effect (logged)."""
    tcp = url.startswith("tcp://")
    options: dict[str, str] = {}
    if "token" in values:
        if not tcp:
            raise ConfigurationError(
                f"rdzv: --rdzv-conf token applies only to a tcp store (HOST:PORT or tcp:// endpoint), "
                f"not {url!r}; put the backend's options in its URL"
            )
        options["token"] = values["token"]
    if "is_host" in values:
        is_host = parse_is_host(values["is_host"])
        if tcp:
            options["is_host"] = is_host
        else:
            log.warning("rdzv: --rdzv-conf is_host has no effect with %s (only a tcp store is hosted)", url)
    if tcp and urlsplit(url).port == 0:
        if options.get("is_host") == "0":
            raise ConfigurationError(f"rdzv: --rdzv-endpoint {url!r} with port 0 must host, but is_host=0")
        if max_nodes > 1:
            raise ConfigurationError(
                f"rdzv: --rdzv-endpoint with port 0 hosts on a free port no other node can know; "
                f"it needs --nnodes=1, got max {max_nodes} nodes"
            )
        options["is_host"] = "1"
    return options


def parse_is_host(value: object) -> str:
    """``auto``, ``1`` or ``0`` from torch's spellings: a bool, or ``1/0 true/false t/f yes/no y/n``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    text = str(value).strip().lower()
    if text == "auto":
        return text
    if text in _TRUE:
        return "1"
    if text in _FALSE:
        return "0"
    raise ConfigurationError(
        f"rdzv: --rdzv-conf is_host={value!r} is not a boolean; use auto, or one of "
        f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}"
    )


def _read_timeout(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ConfigurationError(
            f"rdzv: --rdzv-conf read_timeout must be a positive number of seconds, got {text!r}"
        )
    return seconds


def endpoint_url(endpoint: str) -> str:
    """``HOST[:PORT]`` -> ``tcp://HOST:PORT``; a URL (``SCHEME://...``) unchanged.

    Several candidate hosts, ``H1:P1,H2:P2``, become ``tcp://H1:P1,H2:P2`` (failover in order).
    """
    endpoint = endpoint.strip()
    if not endpoint:
        raise ConfigurationError(
            "rdzv: --rdzv-endpoint is required: HOST:PORT for the embedded TCP store, "
            "or a store URL (tcp://, file://, etcd://)"
        )
    if "://" in endpoint:
        return endpoint
    hosts = [_split_host_port(part.strip()) for part in endpoint.split(",")]
    return "tcp://" + ",".join(f"{host}:{port}" for host, port in hosts)


def _split_host_port(endpoint: str) -> tuple[str, int]:
    if endpoint.startswith("["):  # [v6] or [v6]:port
        close = endpoint.find("]")
        if close < 0:
            raise ConfigurationError(f"rdzv: --rdzv-endpoint {endpoint!r} has '[' without ']'")
        host, rest = endpoint[: close + 1], endpoint[close + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, port = endpoint.split(":")
    elif ":" in endpoint:  # a bare IPv6 address
        host, port = f"[{endpoint}]", ""
    else:
        host, port = endpoint, ""
    if not port and host:
        return host, DEFAULT_PORT
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(
            f"rdzv: --rdzv-endpoint {endpoint!r} is not HOST:PORT with PORT in 0-65535 "
            "(0: this single node hosts on a free port; or a store URL such as tcp://HOST:PORT "
            "or file:///shared/dir)"
        )
    return host, int(port)
