"""One client connection on the server side: framing, handshake, dispatch.

A connection that sends anything malformed (bad msgpack, a wrong message shape,
an oversized length prefix, a failed handshake) gets one error frame, a log
line, and is closed. Nothing it sent before is undone; other connections are
unaffected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import TYPE_CHECKING, Any, cast

from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.waiters import Waiter

if TYPE_CHECKING:
    from rdzv.store.tcp.server import StoreServer

__all__ = ["Session"]

log = logging.getLogger("rdzv.store.tcp.server")

HANDSHAKE_TIMEOUT = 10.0


class RequestRejectedError(Exception):
    """A well-formed request the server refuses; the connection stays open."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class Session(asyncio.Protocol):
    """The server's side of one connection."""

    def __init__(self, server: StoreServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ready = False
        self.closed = False
        self.waiters: set[Waiter] = set()
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._nonce = os.urandom(32)
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if not self.server.admit(self):
            self.fail(p.KIND_BUSY, f"too many connections (limit {self.server.limits.max_connections})")
            return
        hello = {
            "rdzv": p.VERSION,
            "server_id": self.server.server_id,
            "nonce": self._nonce,
            "auth": self.server.token is not None,
        }
        self.transport.write(p.encode(hello))
        loop = asyncio.get_running_loop()
        self._handshake_timer = loop.call_later(
            HANDSHAKE_TIMEOUT, self.fail, p.KIND_AUTH, "no handshake within the time limit"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.server.forget(self)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.server.bytes_in += len(data)
        self._buffer += data
        try:
            self._drain_frames()
        except p.ProtocolError as exc:
            self.fail(p.KIND_PROTOCOL, str(exc))

    # -- framing ----------------------------------------------------------------

    def _drain_frames(self) -> None:
        buf = self._buffer
        offset = 0
        limit = self.server.limits.max_frame if self.ready else p.HANDSHAKE_FRAME_MAX
        while not self.closed and len(buf) - offset >= 4:
            (size,) = p.HEADER.unpack_from(buf, offset)
            if size > limit:
                raise p.ProtocolError(f"frame of {size} bytes exceeds the limit of {limit} bytes")
            end = offset + 4 + size
            if len(buf) < end:
                break
            body = bytes(buf[offset + 4 : end])
            offset = end
            if self.ready:
                self._on_request(p.decode(body))
            else:
                self._on_handshake(p.decode(body))
                limit = self.server.limits.max_frame
        del buf[:offset]

    def _on_handshake(self, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("cnonce"), bytes):
            raise p.ProtocolError("expected a handshake message")
        cnonce: bytes = message["cnonce"]
        mac = message.get("mac")
        token = self.server.token
        if token is not None:
            expected = p.client_mac(token, self._nonce, cnonce)
            if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
                what = "no token" if mac is None else "a wrong token"
                self.fail(p.KIND_AUTH, f"authentication failed: the client presented {what}")
                return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.ready = True
        reply = {"ok": True, "mac": p.server_mac(token, self._nonce, cnonce) if token else None}
        self._write(p.encode(reply))

    def _on_request(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 3):
            raise p.ProtocolError("a request must be [id, op, args]")
        req_id, op, args = message
        if (
            not isinstance(req_id, int)
            or req_id <= 0
            or not isinstance(op, str)
            or not isinstance(args, list)
        ):
            raise p.ProtocolError("a request must be [positive int id, str op, list args]")
        try:
            result = self.server.dispatch(self, req_id, op, args)
        except RequestRejectedError as exc:
            self._write(p.encode([req_id, p.ERROR, {"kind": exc.kind, "message": str(exc)}]))
            return
        if result is not _DEFERRED:
            self.reply(req_id, result)

    # -- output -----------------------------------------------------------------

    def reply(self, req_id: int, result: Any) -> None:
        self._write(p.encode([req_id, p.OK, result]))

    def _write(self, frame: bytes) -> None:
        """Queue a frame; the queue goes out in one write when the loop is next free.

        Waking 4,096 waiters, or answering a burst of pipelined requests, then
        costs one system call per connection instead of one per reply.
        """
        if self.closed or self.transport is None:
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(frame)

    def _flush(self) -> None:
        if self._out and not self.closed and self.transport is not None:
            data = b"".join(self._out)
            self.server.bytes_out += len(data)
            self.transport.write(data)
        self._out.clear()

    def fail(self, kind: str, message: str) -> None:
        """Send an error frame, log it, and close this connection only."""
        if self.closed:
            return
        if kind == p.KIND_AUTH:
            self.server.auth_failures += 1
        log_at = logging.INFO if kind == p.KIND_SHUTDOWN else logging.WARNING
        log.log(log_at, "closing connection from %s: %s: %s", self.peer, kind, message)
        self._write(p.encode([0, p.ERROR, {"kind": kind, "message": message}]))
        self._flush()  # everything queued, then the error frame, before the close
        self.closed = True
        self._buffer.clear()
        if self.transport is not None:
            self.transport.close()


class _Deferred:
    """Marker: the reply will be sent later (a blocked ``wait``)."""


_DEFERRED: Any = _Deferred()
DEFERRED = _DEFERRED
