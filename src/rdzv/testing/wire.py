"""A raw client of the TCP store's wire protocol, for tests that play a hostile or broken peer.

::

    with WireClient(port) as raw:
        raw.handshake(b"token")            # prove the token; later frames carry MACs
        raw.send([1, "add", ["k", 2**63]])
        assert raw.receive()[1] == p.ERROR

It speaks the protocol by hand (``rdzv.store.tcp.protocol``) so that a test can
send what ``TcpStore`` never would: bad frames, bad arguments, half frames.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from rdzv.store.tcp import auth
from rdzv.store.tcp import protocol as p

__all__ = ["WireClient"]


class WireClient:
    """One socket to a store server, with the frame MACs of an authenticated connection."""

    def __init__(
        self, port: int, *, host: str = "127.0.0.1", source: str | None = None, timeout: float = 10
    ) -> None:
        """Connect to ``host:port``, from the loopback address ``source`` if given (another peer)."""
        source_address = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=source_address)
        self.send_mac: auth.FrameMac | None = None
        self.recv_mac: auth.FrameMac | None = None
        self.hello: dict[str, Any] = {}

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def read_hello(self) -> dict[str, Any]:
        hello = self.receive()
        if not isinstance(hello, dict):
            raise AssertionError(f"expected the server's hello, got {hello!r:.200}")
        self.hello = hello
        return hello

    def handshake(self, token: bytes | None, *, run: str | None = None) -> Any:
        """Read the hello, prove ``token``, and return the server's answer (an error frame if refused)."""
        nonce, cnonce = self.read_hello()["nonce"], os.urandom(32)
        mac = p.client_mac(token, nonce, cnonce) if token else None
        message: dict[str, Any] = {"mac": mac, "cnonce": cnonce}
        if run is not None:
            message["run"] = run
        self.send_raw(p.encode(message))
        reply = self.receive()
        if token is not None and isinstance(reply, dict) and reply.get("ok"):
            upstream, downstream = auth.session_keys(token, nonce, cnonce)
            self.send_mac, self.recv_mac = auth.FrameMac(upstream), auth.FrameMac(downstream)
        return reply

    def send(self, message: Any) -> None:
        """One frame, sealed with the connection's MAC once authenticated."""
        self.send_raw(p.encode(message, self.send_mac))

    def send_body(self, body: bytes) -> None:
        """Arbitrary bytes as one frame body (sealed once authenticated)."""
        tag = self.send_mac.tag(body) if self.send_mac is not None else b""
        self.send_raw(p.HEADER.pack(len(body) + len(tag)) + body + tag)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Any:
        """The next frame's message; ``ConnectionError`` if the server closed the connection."""
        (size,) = p.HEADER.unpack(self._exactly(4))
        return p.decode(p.unseal(self._exactly(size), self.recv_mac))

    def receive_until_closed(self) -> list[Any]:
        """Every frame until the server closes the connection."""
        frames = []
        while True:
            try:
                frames.append(self.receive())
            except ConnectionError:
                return frames

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return bytes(data)
