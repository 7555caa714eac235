"""Where other nodes reach this one: its host by default, and a coordinator port held until used.

The default host is the address of the interface that routes to the store's
host: the one peers on the store's network can reach. ``socket.gethostname()``
is no answer on stock Debian/Ubuntu, where it resolves to ``127.0.1.1``.
"""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

from rdzv.errors import ConfigurationError

__all__ = ["PortReservation", "host_port", "route_host", "split_addr"]

_PUBLIC_PROBE = ("192.0.2.1", 9)
"""TEST-NET-1 (RFC 5737): a destination for asking the kernel which interface routes outwards."""


def split_addr(addr: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` into host and optional port."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    if not port:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"addr {addr!r}: expected HOST or HOST:PORT with PORT in 1-65535")
    return host, int(port)


def host_port(host: str, port: int | str) -> str:
    """``host:port``, bracketing an IPv6 host: the inverse of :func:`split_addr`."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def store_host(url: str) -> tuple[str, int] | None:
    """The first host and port a store URL names (``None`` for ``file://``, ``memory://``)."""
    parts = urlsplit(url)
    first = parts.netloc.rpartition("@")[2].split(",")[0]
    if not first or parts.scheme in ("file", "memory"):
        return None
    try:
        host, port = split_addr(first)
    except ConfigurationError:
        return None  # the store reports its own URL errors
    return host, port or 9  # any port does: the kernel only looks up a route


def route_host(url: str) -> str:
    """This machine's address on the route to the store URL's host; a fallback without one.

    A UDP ``connect`` only asks the kernel for a route: no packet is sent.
    """
    target = store_host(url) or _PUBLIC_PROBE
    try:
        infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(sockaddr)
            except OSError:
                continue
            host: str = probe.getsockname()[0]
            return host
    return socket.gethostname()


class PortReservation:
    """A TCP port bound (not listening) so no other process takes it before it is used.

    Bound with ``SO_REUSEADDR``, so a server that sets it too (torch's TCPStore)
    may bind the port alongside; anyone else must wait for :meth:`release`.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.port = 0

    def take(self) -> int:
        """The reserved port, choosing and binding one if none is held."""
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", 0))
            self._sock, self.port = sock, sock.getsockname()[1]
        return self.port

    def release(self) -> None:
        """Let the port go (the command that binds it is about to start). Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
