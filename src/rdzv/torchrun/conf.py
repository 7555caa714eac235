"""torchrun's ``--rdzv-endpoint`` and ``--rdzv-conf``, read as an rdzv store URL and settings.

No torch import here: the rules are checked without torch, and
:mod:`rdzv.torchrun.handler` applies them to torch's ``RendezvousParameters``.

* ``--rdzv-endpoint=HOST:PORT`` (or ``HOST``, port 29400) is the embedded TCP
  store at that address, hosted by the node that owns it (``is_host=auto``) or
  by an external ``rdzv serve``: ``tcp://HOST:PORT``.
* ``--rdzv-endpoint=SCHEME://...`` picks that store backend as is.
* ``--rdzv-conf`` keys are the rendezvous settings, ``token`` and ``is_host``
  (tcp only), and ``timeout``, which torchrun always passes (900 s by default)
  and which rdzv takes as the join timeout unless ``join_timeout`` is given. Any
  other key is an error that lists the valid ones; torch's own backends ignore
  unknown keys silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from rdzv.errors import ConfigurationError
from rdzv.rendezvous.config import RendezvousSettings

__all__ = ["DEFAULT_PORT", "VALID_KEYS", "TorchrunOptions", "parse_options"]

DEFAULT_PORT = 29400
"""torchrun's default rendezvous port, used when the endpoint names only a host."""

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
VALID_KEYS = (*SETTING_KEYS, *TCP_KEYS, "timeout")


@dataclass(frozen=True)
class TorchrunOptions:
    """What one torchrun agent needs to open its store and build its ``Rendezvous``."""

    url: str
    settings: RendezvousSettings
    store_options: dict[str, str] = field(default_factory=dict)
    """Keyword options for ``open_store`` (``token``, ``is_host``)."""


def parse_options(
    endpoint: str, run_id: str, min_nodes: int, max_nodes: int, conf: Mapping[str, object]
) -> TorchrunOptions:
    """Check ``conf`` (``--rdzv-conf`` plus torchrun's ``timeout``) and read ``endpoint``."""
    unknown = sorted(set(conf) - set(VALID_KEYS))
    if unknown:
        raise ConfigurationError(
            f"rdzv: unknown --rdzv-conf key(s) {', '.join(unknown)}; valid keys: {', '.join(VALID_KEYS)}"
        )
    values = {key: str(value) for key, value in conf.items() if value is not None}
    url = endpoint_url(endpoint)
    store_options = {key: values[key] for key in TCP_KEYS if key in values}
    if store_options and not url.startswith("tcp://"):
        raise ConfigurationError(
            f"rdzv: --rdzv-conf {', '.join(sorted(store_options))} applies only to a tcp store "
            f"(HOST:PORT or tcp:// endpoint), not {url!r}; put the backend's options in its URL"
        )
    if "join_timeout" not in values and "timeout" in values:
        values["join_timeout"] = values["timeout"]
    strings = {key: values[key] for key in SETTING_KEYS if key in values}
    settings = RendezvousSettings.from_strings(
        {"run_id": run_id, "min_nodes": str(min_nodes), "max_nodes": str(max_nodes), **strings}
    )
    return TorchrunOptions(url, settings, store_options)


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
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"rdzv: --rdzv-endpoint {endpoint!r} is not HOST:PORT with PORT in 1-65535 "
            "(or a store URL such as tcp://HOST:PORT or file:///shared/dir)"
        )
    return host, int(port)
