"""The client's side of one connection: handshake, then multiplexed requests.

A client holding a token accepts only a server that proves it holds the same
token, never one announcing no authentication (no downgrade); without a token
it talks to an unauthenticated server only when told that is allowed
(loopback, or ``insecure=1``). After an authenticated handshake every frame both
ways carries a MAC (``rdzv.store.tcp.auth``); a reply failing it ends the
connection.

Any thread may send a request (under a send lock); replies are matched to their
callers by request id, so requests from many threads are pipelined on one socket
and a blocked ``wait`` holds up no one. Who reads the socket: a caller waiting
for a reply reads it itself when no one else does (the *reader*; one caller
waiting for one reply costs no thread hand-off), handing every other reply to
its caller; when no caller reads, the process's one I/O thread
(``reactor.py``) does. So a process needs no thread per connection.
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
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any

from rdzv.errors import AuthenticationError, ConfigurationError
from rdzv.store.tcp import auth
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.pending import Pending
from rdzv.store.tcp.reactor import reactor

__all__ = ["Connection", "ConnectionLostError", "Pending", "ServerError"]

log = logging.getLogger("rdzv.store.tcp.client")

MAX_REPLY_FRAME = 64 * 1024 * 1024
READ_CHUNK = 256 * 1024
SILENT_PINGS = 2.0
"""A connection silent this many probe intervals after a ping is lost."""
KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3}
"""Kernel keepalive: a peer silent for 5 s is probed every 2 s, and dropped after 3 misses."""


HANDSHAKES_AT_ONCE = 16
"""Connections of one process in their connect and handshake at the same time.

A deployed node opens one connection and never waits here. A process holding
a thousand nodes that all connect at once would otherwise have a thousand
threads runnable together, and CPython's lock hand-offs among them cost more
than the handshakes (the server then times slow handshakes out); queued on a
semaphore they sleep instead."""
_HANDSHAKES = threading.BoundedSemaphore(HANDSHAKES_AT_ONCE)


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
    """An authenticated socket whose replies are read by a waiting caller or the I/O thread."""

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
        self._read_lock = threading.Lock()
        """Held by whoever reads the socket now: a caller, or the I/O thread."""
        self._caller_reads = False
        """A caller reads (the I/O thread must not watch the socket meanwhile); under ``_lock``."""
        self._watched = False
        """The I/O thread watches the socket; under ``_lock``."""
        self._followers: dict[Pending, None] = {}
        """Requests whose callers sleep while another caller reads; under ``_lock``."""
        self._buffer = bytearray()
        self._tls = tls is not None
        self._recv_timeout = 0
        """Microseconds of ``SO_RCVTIMEO`` set on the socket (0: none yet)."""
        if not _HANDSHAKES.acquire(timeout=timeout):
            raise ConnectionLostError(f"no handshake slot of this process came free in {timeout:.1f} s")
        try:
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
        finally:
            _HANDSHAKES.release()
        self._poll = select.poll()  # for a caller reading: poll, unlike select, takes any fd number
        self._poll.register(self.sock, select.POLLIN)
        with self._lock:
            self._hand_off()

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

        The caller reads the socket itself while no other caller does, and
        otherwise sleeps until its reply is handed to it or it is asked to take
        over reading. A connection found dead fails ``pending`` too, which then
        counts as arrived (with ``pending.error`` set).
        """
        try:
            while not pending.delivered:
                now = time.monotonic()
                remaining = deadline - now
                step = min(max(remaining, 0.0), self.probe)
                if self._lead():
                    self._read_as_caller(pending, step)
                else:
                    self._follow(pending, step)
                if pending.delivered:
                    break
                if time.monotonic() - now >= step:  # a whole step without the reply
                    self._check_silence()  # also when the caller gives up: short calls still probe
                    if remaining <= self.probe:
                        break
        finally:
            with self._lock:
                self._hand_off()  # whoever reads next, if no one does now
        return pending.delivered

    def _lead(self) -> bool:
        """Become the socket's reader if no caller is; the I/O thread then stops watching it."""
        with self._lock:
            if self._caller_reads or self.lost is not None:
                return False
            self._caller_reads = True
            if self._watched:
                self._watched = False
                reactor().unwatch(self.sock)
        return True

    def _follow(self, pending: Pending, timeout: float) -> None:
        """Sleep until the reply is delivered, this caller should read, or ``timeout``."""
        with self._lock:
            if pending.delivered or not self._caller_reads:
                return  # delivered, or the reader stepped down: lead instead
            self._followers[pending] = None
        woken = pending._signal.acquire(timeout=max(timeout, 0.0))
        with self._lock:
            self._followers.pop(pending, None)
            pending._rearm(woken)

    def _hand_off(self) -> None:
        """Under ``_lock``, with no caller reading: wake a sleeping caller to read, else watch."""
        if self._caller_reads or self.lost is not None:
            return
        if self._followers:
            first = next(iter(self._followers))
            del self._followers[first]
            first._wake()  # it reads next: a caller waiting for its own reply, not the I/O thread
        elif not self._watched:
            self._watched = True
            reactor().watch(self.sock, self._on_readable)

    def _read_as_caller(self, pending: Pending, timeout: float) -> bool:
        """Read and dispatch replies until ``pending`` has its own, or ``timeout``; whether it has."""
        until = time.monotonic() + timeout
        try:
            with self._read_lock:  # the I/O thread may be finishing a read it began before
                while not pending.delivered and self.lost is None:
                    left = until - time.monotonic()
                    if left <= 0 or not self._receive(left):
                        break
        finally:
            with self._lock:
                self._caller_reads = False
                self._hand_off()
        return pending.delivered

    def _on_readable(self) -> None:
        """The I/O thread: the socket has data and no caller reads it."""
        if self._caller_reads or not self._read_lock.acquire(blocking=False):
            return  # a caller took over meanwhile
        try:
            if not self._caller_reads and self.lost is None:
                self._receive(None)
        finally:
            self._read_lock.release()

    def _receive(self, timeout: float | None) -> bool:
        """Receive once and dispatch every complete reply; whether anything arrived.

        ``timeout``: wait up to that long (a caller); ``None``: take only what has
        arrived (the I/O thread). A caller on a plain socket waits inside ``recv``
        itself (``SO_RCVTIMEO``): one system call, one release of the GIL, per reply.
        """
        try:
            chunk = self._recv(timeout)
        except (BlockingIOError, InterruptedError):
            return False  # nothing within the timeout
        except OSError as exc:
            self._fail(ConnectionLostError(f"connection to the server failed: {exc}"))
            return False
        if chunk is None:
            return False
        if not chunk:
            self._fail(ConnectionLostError("the server closed the connection"))
            return False
        self._last_received = time.monotonic()
        self._buffer += chunk
        try:
            self._dispatch_frames()
        except ConnectionLostError as exc:
            self._fail(exc)
            return False
        if len(chunk) == READ_CHUNK or (self._tls and self.sock.pending()):  # type: ignore[attr-defined]
            self._receive(None)  # more is waiting: take it now
        return True

    def _recv(self, timeout: float | None) -> bytes | None:
        if self._tls:  # TLS may hold decrypted bytes the socket does not show
            pending = self.sock.pending()  # type: ignore[attr-defined]
            if not pending and timeout is not None and not self._poll.poll(max(timeout * 1000, 1)):
                return None
            return self.sock.recv(READ_CHUNK)
        if timeout is None:
            return self.sock.recv(READ_CHUNK, socket.MSG_DONTWAIT)
        self._set_recv_timeout(timeout)
        return self.sock.recv(READ_CHUNK)

    def _set_recv_timeout(self, seconds: float) -> None:
        micros = max(int(seconds * 1_000_000), 1_000)  # never 0: that would mean forever
        if abs(micros - self._recv_timeout) > 1_000:
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", *divmod(micros, 1_000_000))
            )
            self._recv_timeout = micros

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
                self.sock.shutdown(socket.SHUT_RDWR)

    def abandon(self, req_id: int) -> None:
        """Forget a request whose caller stopped waiting (its late reply is dropped)."""
        with self._lock:
            self._pending.pop(req_id, None)

    # -- replies ------------------------------------------------------------------

    def _dispatch_frames(self) -> None:
        """Dispatch every complete frame in the buffer, keeping a partial one.

        Many replies that arrive together are read in one ``recv`` and dispatched
        in one pass: each ``recv`` gives up the GIL, and in a process with many
        busy threads taking it back can cost a whole switch interval (5 ms).
        """
        buf = self._buffer
        offset = 0
        try:
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
        finally:
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
        if status != p.OK:
            detail = result if isinstance(result, dict) else {}
            result = ServerError(str(detail.get("kind")), str(detail.get("message")))
        with self._lock:
            pending = self._pending.pop(req_id, None)
            if pending is not None:
                self._deliver(pending, result, status == p.OK)
        return True

    def _deliver(self, pending: Pending, result: Any, ok: bool) -> None:
        """Hand a reply (or an error) to its caller; under ``_lock``."""
        if ok:
            pending.result = result
        else:
            pending.error = result
        pending.delivered = True
        self._followers.pop(pending, None)
        pending._wake()

    def _fail(self, error: ConnectionLostError) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = error
            waiting, self._pending = self._pending, {}
            if self._watched:
                self._watched = False
                reactor().unwatch(self.sock)
            for pending in waiting.values():
                self._deliver(pending, self.lost, False)

    def close(self) -> None:
        self._fail(ConnectionLostError("the store was closed", final=True))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with self._read_lock:  # no read in progress may meet a closed descriptor
            self.sock.close()
