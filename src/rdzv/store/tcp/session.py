"""One client connection on the server side: framing, handshake, MACs, dispatch.

A connection that sends anything malformed (bad msgpack, a wrong message shape,
an oversized length prefix, a frame failing its MAC, a failed handshake) gets
one error frame, a (rate-limited) log line, and is closed. A well-formed
request the server refuses (bad arguments, a limit, a key outside the run of a
run token) gets an error reply and the connection stays open. Nothing a
connection sent before is undone; other connections are unaffected.

A started frame must arrive whole within ``Limits.frame_timeout`` (the
handshake within :data:`HANDSHAKE_TIMEOUT`). While a client does not read its
replies, the server stops reading its requests, so neither input nor output
buffered for one connection grows without bound. A closed connection's
waiters, timers and buffers are released at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from typing import TYPE_CHECKING, Any, cast

from rdzv.store.tcp import auth
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.waiters import Waiter

if TYPE_CHECKING:
    from rdzv.store.tcp.server import StoreServer

__all__ = ["Session"]

log = logging.getLogger("rdzv.store.tcp.server")

HANDSHAKE_TIMEOUT = 10.0
OUTPUT_HIGH = 1024 * 1024
"""Replies queued past this many bytes are handed to the transport before reading on."""


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
        self.peer = self.host = "?"
        self.ready = False
        self.closed = False
        self.scope: str | None = None
        """Key prefix this connection is confined to (a run token), or ``None``."""
        self.waiters: set[Waiter] = set()
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._nonce = os.urandom(32)
        self._hello_sent = False
        self._writing_paused = False
        self._recv_mac: auth.FrameMac | None = None
        self._send_mac: auth.FrameMac | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._frame_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = str(peer[0]) if isinstance(peer, tuple) else self.peer
        self.server.admit(self)
        self._hello()

    def _hello(self) -> None:
        if self.closed or self.transport is None:
            return
        admission, now = self.server.admission, self.server.now()
        delay = admission.hello_delay(self.host, now)
        if delay > 0:  # this address failed to authenticate lately: its handshakes go one at a time
            self._handshake_timer = asyncio.get_running_loop().call_later(delay, self._hello)
            return
        admission.hello_sent(self.host, now)
        hello = {
            "rdzv": p.VERSION,
            "server_id": self.server.server_id,
            "nonce": self._nonce,
            "auth": self.server.token is not None,
        }
        self.transport.write(p.encode(hello))
        self._hello_sent = True
        self._handshake_timer = asyncio.get_running_loop().call_later(
            min(HANDSHAKE_TIMEOUT, self.server.limits.frame_timeout),
            self.fail,
            p.KIND_LIMIT,  # slow, not wrong: the client may try again (a wrong token is KIND_AUTH)
            "no handshake within the time limit",
        )
        if self._buffer:
            self.data_received(b"")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release()

    def _release(self) -> None:
        """Free everything this connection holds: timers, buffers, waiters, its slot."""
        for timer in (self._handshake_timer, self._frame_timer):
            if timer is not None:
                timer.cancel()
        self._handshake_timer = self._frame_timer = None
        self._buffer = bytearray()
        self._out.clear()
        self._out_bytes = 0
        self.server.forget(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
            asyncio.get_running_loop().call_soon(self.data_received, b"")  # frames read before the pause

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.server.bytes_in += len(data)
        self._buffer += data
        try:
            self._drain_frames()
        except p.ProtocolError as exc:
            self.fail(p.KIND_PROTOCOL, str(exc))
        except auth.MacError as exc:
            self.fail(p.KIND_INTEGRITY, str(exc))
        except Exception as exc:  # a bug must cost one connection, not a traceback per client
            log.debug("internal error serving %s", self.peer, exc_info=True)
            self.server.internal_errors += 1
            self.fail(p.KIND_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    # -- framing ----------------------------------------------------------------

    def _drain_frames(self) -> None:
        buf = self._buffer
        offset = 0
        if not self._hello_sent:
            if len(buf) > p.HANDSHAKE_FRAME_MAX + 4:
                raise p.ProtocolError("the client sent more than a handshake before the server's hello")
            return
        while not self.closed and not self._writing_paused and len(buf) - offset >= 4:
            limit = self.server.limits.max_frame + auth.MAC_SIZE if self.ready else p.HANDSHAKE_FRAME_MAX
            (size,) = p.HEADER.unpack_from(buf, offset)
            if size > limit:
                raise p.ProtocolError(f"frame of {size} bytes exceeds the limit of {limit} bytes")
            end = offset + 4 + size
            if len(buf) < end:
                break
            frame = bytes(buf[offset + 4 : end])
            offset = end
            if self.ready:
                self._on_request(p.decode(p.unseal(frame, self._recv_mac)))
                if self._out_bytes >= OUTPUT_HIGH:
                    self._flush()  # may pause writing, which stops this loop
            else:
                self._on_handshake(p.decode(frame))
        if self.closed:
            return
        del buf[:offset]
        self._time_partial_frame(progressed=offset > 0)

    def _time_partial_frame(self, *, progressed: bool) -> None:
        """A frame begun after the handshake must arrive whole within ``frame_timeout``."""
        if progressed and self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        if not self.ready or not self._buffer or self._frame_timer is not None or self._writing_paused:
            return  # (while paused, the buffer holds whole frames the client is slow to read replies to)
        self._frame_timer = asyncio.get_running_loop().call_later(
            self.server.limits.frame_timeout,
            self.fail,
            p.KIND_PROTOCOL,
            f"a frame did not arrive whole within {self.server.limits.frame_timeout} s",
        )

    def _on_handshake(self, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("cnonce"), bytes):
            raise p.ProtocolError("expected a handshake message")
        cnonce: bytes = message["cnonce"]
        run = message.get("run")
        if run is not None and not (isinstance(run, str) and auth.is_valid_run_id(run)):
            raise p.ProtocolError(f"invalid run id in the handshake: {run!r:.80}")
        token, key, downstream = self.server.token, b"", b""
        if token is not None:
            key = token if run is None else auth.derive_run_token(token, run).encode()
            mac, expected = message.get("mac"), p.client_mac(key, self._nonce, cnonce)
            if not isinstance(mac, bytes) or not hmac.compare_digest(mac, expected):
                what = "no token" if mac is None else f"a wrong token{f' for run {run}' if run else ''}"
                self.server.admission.failed(self.host, self.server.now())
                self.fail(p.KIND_AUTH, f"authentication failed: the client presented {what}")
                return
            upstream, downstream = auth.session_keys(key, self._nonce, cnonce)
            self._recv_mac = auth.FrameMac(upstream)
            self.scope = None if run is None else auth.run_prefix(run)
        elif run is not None:
            self.fail(p.KIND_AUTH, "this server has no secret, so it cannot check a run token")
            return
        if not self.server.authenticated(self):
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.ready = True
        reply = {"ok": True, "mac": p.server_mac(key, self._nonce, cnonce) if token else None}
        self._write(p.encode(reply))
        if token is not None:
            self._send_mac = auth.FrameMac(downstream)

    def _on_request(self, message: Any) -> None:
        if not (isinstance(message, list) and len(message) == 3):
            raise p.ProtocolError("a request must be [id, op, args]")
        req_id, op, args = message
        if (
            not isinstance(req_id, int)
            or not 0 < req_id <= p.INT64_MAX
            or not isinstance(op, str)
            or not isinstance(args, list)
        ):
            raise p.ProtocolError("a request must be [positive 64-bit int id, str op, list args]")
        try:
            result = self.server.dispatch(self, req_id, op, args)
        except RequestRejectedError as exc:
            self._write_error(req_id, exc.kind, str(exc))
            return
        except Exception as exc:  # a bug: this request fails, the connection and the server go on
            log.debug("internal error in %s from %s", op, self.peer, exc_info=True)
            self.server.internal_errors += 1
            self.server.log_limiter.warning(self.host, f"internal error in {op} from {self.peer}: {exc!r}")
            self._write_error(req_id, p.KIND_INTERNAL, f"internal error in {op}: {type(exc).__name__}")
            return
        if result is not _DEFERRED:
            self.reply(req_id, result)

    # -- output -----------------------------------------------------------------

    def reply(self, req_id: int, result: Any) -> None:
        try:
            frame = p.encode([req_id, p.OK, result], self._send_mac)
        except (OverflowError, TypeError, ValueError) as exc:  # this reply only; the MAC counter is untouched
            self.server.internal_errors += 1
            self._write_error(req_id, p.KIND_INTERNAL, f"the reply could not be encoded: {exc}")
            return
        self._write(frame)

    def _write_error(self, req_id: int, kind: str, message: str) -> None:
        self._write(p.encode([req_id, p.ERROR, {"kind": kind, "message": message}], self._send_mac))

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
        self._out_bytes += len(frame)

    def _flush(self) -> None:
        if self._out and not self.closed and self.transport is not None:
            data = b"".join(self._out)
            self.server.bytes_out += len(data)
            self.transport.write(data)
        self._out.clear()
        self._out_bytes = 0

    def fail(self, kind: str, message: str) -> None:
        """Send an error frame, log it (rate-limited per address), and close this connection only."""
        if self.closed:
            return
        if kind == p.KIND_AUTH:
            self.server.auth_failures += 1
        text = f"closing connection from {self.peer}: {kind}: {message}"
        if kind == p.KIND_SHUTDOWN:
            log.info("%s", text)
        else:
            self.server.log_limiter.warning(self.host, text)
        self._write_error(0, kind, message)
        self._flush()  # everything queued, then the error frame, before the close
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._release()


class _Deferred:
    """Marker: the reply will be sent later (a blocked ``wait``)."""


_DEFERRED: Any = _Deferred()
DEFERRED = _DEFERRED
