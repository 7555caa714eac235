"""A loopback TCP proxy that records the bytes it forwards and can cut connections.

Tests put it between a client and a server to check what crosses the wire (for
example, that a token never does) or to drop connections on purpose::

    with RecordingProxy(("127.0.0.1", server_port)) as proxy:
        store = open_store(f"tcp://127.0.0.1:{proxy.port}?is_host=0")
        ...
        assert b"secret" not in proxy.upstream_bytes()
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable

__all__ = ["RecordingProxy"]


class RecordingProxy:
    """Forwards every connection on ``127.0.0.1:port`` to ``upstream``, recording both ways."""

    def __init__(
        self, upstream: tuple[str, int], *, tamper: Callable[[str, bytes], bytes] | None = None
    ) -> None:
        """``tamper(direction, data)``, if given, rewrites what is forwarded ("client": to the server)."""
        self.upstream = upstream
        self.tamper = tamper
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._to_server = bytearray()
        self._to_client = bytearray()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._cut = False
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="rdzv-recording-proxy", daemon=True)
        self._thread.start()

    def upstream_bytes(self) -> bytes:
        """Everything clients sent to the server so far."""
        with self._lock:
            return bytes(self._to_server)

    def downstream_bytes(self) -> bytes:
        """Everything the server sent to clients so far."""
        with self._lock:
            return bytes(self._to_client)

    def cut(self) -> None:
        """Close every forwarded connection now (new ones are still accepted)."""
        self._cut = True
        self._wake_w.send(b"x")

    def close(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(10)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    sock.recv(64)
                    if self._cut:
                        self._cut = False
                        self._drop_all()
                elif sock is self._listener:
                    self._accept()
                elif sock in self._peers:
                    self._forward(sock)
        self._drop_all()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._peers[client], self._peers[server] = server, client
        self._selector.register(client, selectors.EVENT_READ, "client")
        self._selector.register(server, selectors.EVENT_READ, "server")

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers[sock]
        direction = self._selector.get_key(sock).data
        try:
            data = sock.recv(65536)
            if data and self.tamper is not None:
                data = self.tamper(direction, data)
            if data:
                peer.sendall(data)
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        with self._lock:
            (self._to_server if direction == "client" else self._to_client).extend(data)

    def _drop(self, sock: socket.socket) -> None:
        peer = self._peers.pop(sock, None)
        for s in (sock, peer):
            if s is None:
                continue
            self._peers.pop(s, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(s)
            s.close()

    def _drop_all(self) -> None:
        for sock in list(self._peers):
            self._drop(sock)
