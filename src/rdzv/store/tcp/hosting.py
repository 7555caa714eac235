"""Running the store server inside a node: a background thread with its own loop.

``TcpStore`` with ``is_host=auto`` binds the URL's port when the URL's host is an
address of this machine; exactly one process can hold a listening socket on an
address and port, so exactly one node hosts and the others connect to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import ssl
import threading

from rdzv.store.tcp.metrics import ServerMetrics
from rdzv.store.tcp.protocol import Limits
from rdzv.store.tcp.server import StoreServer, new_event_loop

__all__ = ["HostedServer", "bind_listener", "is_local_address", "is_loopback"]

log = logging.getLogger("rdzv.store.tcp.server")


def _resolve(host: str) -> list[tuple[int, str]]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({(info[0], str(info[4][0])) for info in infos})


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address."""
    addresses = _resolve(host)
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for _, a in addresses)


def is_local_address(host: str) -> bool:
    """Whether ``host`` names this machine (loopback or one of its interfaces).

    An address is local exactly when a socket can be bound to it.
    """
    for family, address in _resolve(host):
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
            return True
    return False


def bind_listener(host: str, port: int) -> socket.socket | None:
    """A listening socket on ``host:port``, or ``None`` if another process holds it."""
    family, address = _resolve(host)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(4096)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    sock.setblocking(False)
    return sock


class HostedServer:
    """A :class:`StoreServer` on its own event loop in a daemon thread."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        token: bytes | None,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.server = StoreServer(token=token, limits=limits, metrics=metrics)
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self._loop = new_event_loop()
        self._stop: asyncio.Event | None = None
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(sock, tls, started, failure), name=f"rdzv-tcp-server {self.address}"
        )
        self._thread.daemon = True
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]

    def _run(
        self,
        sock: socket.socket,
        tls: ssl.SSLContext | None,
        started: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(sock, tls, started))
        except BaseException as exc:
            failure.append(exc)
            sock.close()
            started.set()
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            asyncio.set_event_loop(None)

    async def _serve(self, sock: socket.socket, tls: ssl.SSLContext | None, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        await self.server.start(sock=sock, tls=tls)
        log.info("hosting the rdzv store on %s:%d", *self.address)
        started.set()
        await self._stop.wait()
        await self.server.aclose()

    def close(self) -> None:
        """Stop serving (clients get a shutdown notice) and join the thread. Idempotent."""
        if self._thread.is_alive() and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        if self.server.metrics is not None:
            self.server.metrics.close()
