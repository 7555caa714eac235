"""The client's side of one connection: handshake, then multiplexed requests.

A client holding a token accepts only a server that proves it holds the same
token, never one announcing no authentication (no downgrade); without a token
it talks to an unauthenticated server only when told that is allowed
(loopback, or ``insecure=1``). After an authenticated handshake every frame both
ways carries a MAC (``rdzv.store.tcp.auth``); a reply failing it ends the
connection.

Any thread may send a request (under a send lock); one reader thread receives
every reply and hands it to the waiting caller by request id, so requests from
many threads are pipelined on one socket and a blocked ``wait`` holds up no one.
Errors here are internal (:class:`ConnectionLostError`); ``TcpStore`` translates them.

A connection notices silent failure (a peer gone without a reset, a dropped
flow): the kernel's TCP keepalive watches an idle socket, and a caller whose
request has waited ``probe`` seconds with nothing at all received pings the
server; still nothing ``2 * probe`` seconds after the ping, and the connection
is declared lost, which fails every request on it (``TcpStore`` reconnects).
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import os
import socket
import ssl
import threading
import time
from typing import Any

from rdzv.errors import AuthenticationError, ConfigurationError
from rdzv.store.tcp import auth
from rdzv.store.tcp import protocol as p

__all__ = ["Connection", "ConnectionLostError", "Pending", "ServerError"]

log = logging.getLogger("rdzv.store.tcp.client")

MAX_REPLY_FRAME = 64 * 1024 * 1024
READ_CHUNK = 256 * 1024
SILENT_PINGS = 2.0
"""A connection silent this many probe intervals after a ping is lost."""
KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3}
"""Kernel keepalive: a peer silent for 5 s is probed every 2 s, and dropped after 3 misses."""


class ConnectionLostError(Exception):
    """The connection failed; ``final`` when the server said it is shutting down."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        self.final = final
        super().__init__(message)


class ServerError(Exception):
    """The server refused one request (the connection stays usable)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class Pending:
    """A sent request; ``wait`` for its reply.

    A one-shot signal made of one held lock (``set`` releases it) rather than a
    ``threading.Event`` (a condition, a lock and a waiter lock per wait): with
    thousands of threads in one process every request's wake-up is cheaper.
    """

    __slots__ = ("_signal", "error", "result")

    def __init__(self) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.result: Any = None
        self.error: Exception | None = None

    def set(self) -> None:
        """Mark the reply (or error) delivered; called once, by whoever removed it from the table."""
        self._signal.release()

    def wait(self, timeout: float) -> bool:
        """Whether the reply arrived within ``timeout`` seconds."""
        if self._signal.acquire(timeout=max(timeout, 0.0)):
            self._signal.release()  # stays set for any later look
            return True
        return False


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionLostError("the server closed the connection")
        chunks += chunk
    return bytes(chunks)


def _read_frame(sock: socket.socket, limit: int) -> Any:
    (size,) = p.HEADER.unpack(_recv_exact(sock, 4))
    if size > limit:
        raise ConnectionLostError(f"the server sent a frame of {size} bytes (limit {limit})")
    try:
        return p.decode(_recv_exact(sock, size))
    except p.ProtocolError as exc:
        raise ConnectionLostError(f"the server sent an undecodable frame: {exc}") from exc


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE.items():
        if hasattr(socket, name):  # Linux has all three; other systems some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _error_frame(message: Any) -> tuple[str, str] | None:
    if isinstance(message, list) and len(message) == 3 and message[0] == 0 and message[1] == p.ERROR:
        detail = message[2] if isinstance(message[2], dict) else {}
        return str(detail.get("kind", "?")), str(detail.get("message", "connection refused"))
    return None


class Connection:
    """An authenticated socket plus the reader thread that dispatches replies."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: bytes | None,
        tls: ssl.SSLContext | None,
        timeout: float,
        url: str,
        probe: float = 2.0,
        allow_unauthenticated: bool = False,
    ) -> None:
        self.url = url
        self.probe = probe
        self._allow_unauthenticated = allow_unauthenticated
        self._send_mac: auth.FrameMac | None = None
        self._recv_mac: auth.FrameMac | None = None
        self._pending: dict[int, Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.lost: ConnectionLostError | None = None
        self._last_received = time.monotonic()
        self._ping_sent_at: float | None = None
        raw = socket.create_connection(address, timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(raw)
            self.sock: socket.socket = tls.wrap_socket(raw, server_hostname=address[0]) if tls else raw
            self.server_id = self._handshake(token)
            self.sock.settimeout(None)
        except BaseException:
            raw.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name=f"rdzv-tcp-reader {url}", daemon=True)
        self._reader.start()

    def _handshake(self, token: bytes | None) -> str:
        hello = _read_frame(self.sock, p.HANDSHAKE_FRAME_MAX)
        refused = _error_frame(hello)
        if refused is not None:
            raise ConnectionLostError(f"the server refused the connection: {refused[1]}")
        if not isinstance(hello, dict) or hello.get("rdzv") != p.VERSION:
            raise ConnectionLostError(f"{self.url} does not speak the rdzv store protocol v{p.VERSION}")
        nonce, cnonce = hello.get("nonce"), os.urandom(32)
        if not isinstance(nonce, bytes) or len(nonce) < 16:
            raise ConnectionLostError(f"{self.url} sent a handshake without a proper nonce")
        self._check_auth_offer(bool(hello.get("auth")), token)
        mac = p.client_mac(token, nonce, cnonce) if token is not None else None
        message: dict[str, Any] = {"mac": mac, "cnonce": cnonce}
        run = auth.parse_run_token(token) if token else None
        if run is not None:
            message["run"] = run
        self.sock.sendall(p.encode(message))
        reply = _read_frame(self.sock, p.HANDSHAKE_FRAME_MAX)
        refused = _error_frame(reply)
        if refused is not None and refused[0] == p.KIND_AUTH:
            raise AuthenticationError(
                f"the store at {self.url} rejected our token ({refused[1]}); check --token/RDZV_TOKEN",
                url=self.url,
            )
        if refused is not None or not isinstance(reply, dict) or not reply.get("ok"):
            raise ConnectionLostError(f"handshake failed: {refused[1] if refused else reply!r:.200}")
        if token is not None:
            proof, expected = reply.get("mac"), p.server_mac(token, nonce, cnonce)
            if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
                raise AuthenticationError(
                    f"the server at {self.url} could not prove it knows the token: refusing it", url=self.url
                )
            upstream, downstream = auth.session_keys(token, nonce, cnonce)
            self._send_mac, self._recv_mac = auth.FrameMac(upstream), auth.FrameMac(downstream)
        return str(hello.get("server_id", ""))

    def _check_auth_offer(self, server_auth: bool, token: bytes | None) -> None:
        """Refuse a server that would authenticate less than this client requires."""
        if token is not None and not server_auth:
            raise AuthenticationError(
                f"the server at {self.url} offers no authentication but we hold a token: refusing it "
                "(it may be an impostor; a genuine rdzv serve with a token always authenticates)",
                url=self.url,
            )
        if server_auth and token is None:
            raise AuthenticationError(
                f"the store at {self.url} requires a token: pass ?token=... or set RDZV_TOKEN", url=self.url
            )
        if not server_auth and not self._allow_unauthenticated:
            raise AuthenticationError(
                f"the server at {self.url} is not on loopback and offers no authentication: "
                "give a token (?token=... or RDZV_TOKEN), or insecure=1 to trust it anyway",
                url=self.url,
            )

    # -- requests -------------------------------------------------------------

    def send(self, op: str, args: list[Any]) -> tuple[int, Pending]:
        """Send one request; raise ``ConnectionLostError`` if it could not be sent."""
        pending = Pending()
        with self._lock:
            if self.lost is not None:
                raise self.lost
            req_id = next(self._ids)
            self._pending[req_id] = pending
        try:
            with self._send_lock:
                try:  # before the MAC counter moves: a bad argument costs no frame
                    frame = p.encode([req_id, op, args], self._send_mac)
                except (OverflowError, TypeError, ValueError) as exc:
                    self.abandon(req_id)
                    raise ConfigurationError(f"{op}: an argument cannot be sent to the store: {exc}") from exc
                self.sock.sendall(frame)
        except OSError as exc:
            self.abandon(req_id)
            self._fail(ConnectionLostError(f"sending to the server failed: {exc}"))
            raise ConnectionLostError(f"sending to the server failed: {exc}") from exc
        return req_id, pending

    def await_reply(self, pending: Pending, deadline: float) -> bool:
        """Wait for ``pending`` until ``deadline``, pinging a silent server; whether it arrived.

        A connection found dead fails ``pending`` too, which then counts as arrived
        (with ``pending.error`` set).
        """
        while True:
            remaining = deadline - time.monotonic()
            if pending.wait(min(max(remaining, 0.0), self.probe)):
                return True
            self._check_silence()  # also when the caller gives up: short calls still probe
            if remaining <= self.probe:
                return pending.wait(0)

    def _check_silence(self) -> None:
        now = time.monotonic()
        ping = dead = False
        with self._lock:
            silent = now - self._last_received
            if self.lost is not None or silent < self.probe:
                return
            if self._ping_sent_at is None or self._ping_sent_at < self._last_received:
                self._ping_sent_at, ping = now, True
            elif now - self._ping_sent_at >= SILENT_PINGS * self.probe:
                dead = True
        if ping:
            with contextlib.suppress(ConnectionLostError):
                self.send("ping", [])  # any reply at all proves the server alive; this one is dropped
        if dead:
            log.warning("rdzv: %s silent for %.1f s, even to a ping: connection dropped", self.url, silent)
            self._fail(ConnectionLostError(f"the server sent nothing for {silent:.1f} s, not even to a ping"))
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # ends the reader thread

    def abandon(self, req_id: int) -> None:
        """Forget a request whose caller stopped waiting (its late reply is dropped)."""
        with self._lock:
            self._pending.pop(req_id, None)

    # -- reader thread ---------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._read_replies()
        except ConnectionLostError as exc:
            self._fail(exc)
        except (OSError, ValueError) as exc:
            self._fail(ConnectionLostError(f"connection to the server failed: {exc}"))

    def _read_replies(self) -> None:
        """Receive in large chunks and dispatch every complete frame in each.

        One ``recv`` per burst of replies, not two per reply: each ``recv``
        gives up the GIL, and in a process with many busy threads taking it
        back can cost a whole switch interval (5 ms), so a herd of 2,000
        replies read one by one would take seconds.
        """
        buf = bytearray()
        while True:
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                raise ConnectionLostError("the server closed the connection")
            self._last_received = time.monotonic()
            buf += chunk
            offset = 0
            while len(buf) - offset >= 4:
                (size,) = p.HEADER.unpack_from(buf, offset)
                if size > MAX_REPLY_FRAME:
                    raise ConnectionLostError(
                        f"the server sent a frame of {size} bytes (limit {MAX_REPLY_FRAME})"
                    )
                end = offset + 4 + size
                if len(buf) < end:
                    break
                try:
                    message = p.decode(p.unseal(bytes(buf[offset + 4 : end]), self._recv_mac))
                except p.ProtocolError as exc:
                    raise ConnectionLostError(f"the server sent an undecodable frame: {exc}") from exc
                except auth.MacError as exc:  # tampering: retrying on this path would not help
                    raise ConnectionLostError(
                        f"a reply from {self.url} was rejected: {exc}", final=True
                    ) from exc
                offset = end
                if not self._dispatch(message):
                    return
            del buf[:offset]

    def _dispatch(self, message: Any) -> bool:
        refused = _error_frame(message)
        if refused is not None:
            kind, text = refused
            self._fail(
                ConnectionLostError(
                    f"the server closed the connection: {text}",
                    final=kind in (p.KIND_SHUTDOWN, p.KIND_INTEGRITY),
                )
            )
            return False
        if not (isinstance(message, list) and len(message) == 3 and isinstance(message[0], int)):
            raise ConnectionLostError(f"the server sent a malformed reply: {message!r:.100}")
        req_id, status, result = message
        with self._lock:
            pending = self._pending.pop(req_id, None)
        if pending is None:
            return True
        if status == p.OK:
            pending.result = result
        else:
            detail = result if isinstance(result, dict) else {}
            pending.error = ServerError(str(detail.get("kind")), str(detail.get("message")))
        pending.set()
        return True

    def _fail(self, error: ConnectionLostError) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = error
            waiting, self._pending = self._pending, {}
        for pending in waiting.values():
            pending.error = self.lost
            pending.set()

    def close(self) -> None:
        self._fail(ConnectionLostError("the store was closed", final=True))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if threading.current_thread() is not self._reader:
            self._reader.join(5)
        self.sock.close()
