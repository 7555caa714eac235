"""The embedded store server: asyncio over one :class:`~rdzv.store.keyspace.KeySpace`.

All state lives in the event loop's thread, so no locks are needed. Leases
expire by this server's monotonic clock, on a timer set for the next deadline;
time in which the event loop itself was stalled (the process stopped, a long
GC pause, a starved host) is given back to every lease before anything expires,
since no client could be heard meanwhile (see :meth:`StoreServer._catch_up`).
A blocked ``wait`` is a registered :class:`~rdzv.store.tcp.waiters.Waiter`
answered when a matching key changes (no traffic while it waits).
Run it with ``rdzv serve`` or inside a node (``rdzv.store.tcp.hosting``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rdzv.store.base import Entry
from rdzv.store.keyspace import KeySpace, LeaseNotFoundError
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.admission import Admission, LogLimiter
from rdzv.store.tcp.scope import check_scope, lease_args
from rdzv.store.tcp.session import DEFERRED, HANDSHAKE_TIMEOUT, RequestRejectedError, Session
from rdzv.store.tcp.waiters import Waiter, WaiterIndex

if TYPE_CHECKING:
    from rdzv.store.tcp.metrics import ServerMetrics

__all__ = ["StoreServer", "new_event_loop"]

log = logging.getLogger("rdzv.store.tcp.server")

MAX_WAIT = 7 * 24 * 3600.0
TICK = 0.25
"""Period of the loop's lag probe; a gap between ticks beyond two periods is a stall."""
MAX_WAITERS_PER_CONNECTION = 65_536
LOG_INTERVAL = 10.0
"""Seconds between warnings about one peer address (the rest are counted)."""
Handler = Callable[[Session, int, list[Any]], Any]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is importable, a plain asyncio loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _entry(entry: Entry | None) -> list[Any] | None:
    return None if entry is None else [entry.value, entry.version, entry.lease]


def _arg(args: list[Any], i: int, kind: type | tuple[type, ...], name: str) -> Any:
    """Argument ``i``, checked: its type, and a signed 64-bit range for integers."""
    if len(args) <= i or not isinstance(args[i], kind) or (isinstance(args[i], bool) and kind is int):
        raise RequestRejectedError(p.KIND_PROTOCOL, f"argument {i} ({name}) is missing or of the wrong type")
    value = args[i]
    if isinstance(value, int) and not p.INT64_MIN <= value <= p.INT64_MAX:
        raise RequestRejectedError(
            p.KIND_PROTOCOL, f"argument {i} ({name}) is outside the signed 64-bit range: {value}"
        )
    return value


def _seconds(args: list[Any], i: int, name: str) -> float:
    """A duration argument: a finite, non-negative number of seconds."""
    value = float(_arg(args, i, (int, float), name))
    if not math.isfinite(value) or value < 0:
        raise RequestRejectedError(
            p.KIND_PROTOCOL,
            f"argument {i} ({name}) must be a finite, non-negative number of seconds, got {value}",
        )
    return value


class StoreServer:
    """Keys, leases and waiters, served to many :class:`Session` connections."""

    def __init__(
        self,
        *,
        token: bytes | None,
        limits: p.Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: ServerMetrics | None = None,
    ) -> None:
        self.token = token
        self.metrics = metrics
        """Prometheus metrics (``rdzv.store.tcp.metrics``), when they are served."""
        self.bytes_in = 0
        self.bytes_out = 0
        self.auth_failures = 0
        self.limits = limits or p.Limits()
        self.server_id = os.urandom(8).hex()
        self.keys = KeySpace()
        self.waiters = WaiterIndex()
        self.sessions: set[Session] = set()
        self.admission: Admission[Session] = Admission(
            self.limits.max_unauthenticated, self.limits.max_unauthenticated_per_peer
        )
        self.log_limiter = LogLimiter(log, LOG_INTERVAL, self._call_later)
        self._lease_scope: dict[int, str] = {}
        """The run that granted each lease granted under a run token."""
        self._clock = clock
        self._started = clock()
        self._server: asyncio.AbstractServer | None = None
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._expiry_at = 0.0
        self._tick: asyncio.TimerHandle | None = None
        self._last_tick = clock()
        self.stalled_total = 0.0
        """Seconds of event-loop stall given back to the leases so far."""
        self.ops_total = 0
        self.internal_errors = 0
        """Requests or connections that failed on a server bug (each answered with an error)."""
        self._window = (clock(), 0)
        self._rate = 0.0
        self._handlers: dict[str, Handler] = {
            "get": self._get,
            "put": self._put,
            "put_many": self._put_many,
            "cas": self._cas,
            "add": self._add,
            "delete": self._delete,
            "list": self._list,
            "wait": self._wait,
            "grant": self._grant,
            "refresh": self._refresh,
            "revoke": self._revoke,
            "lease_info": self._lease_info,
            "stats": lambda s, i, a: self.stats(),
            "ping": lambda s, i, a: self.uptime(),
        }

    @property
    def operations(self) -> list[str]:
        """The operations this server answers (the values of the metrics' ``op`` label)."""
        return list(self._handlers)

    # -- lifecycle ------------------------------------------------------------

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Listen (on ``sock`` if given, else ``host:port``); return the bound address."""
        loop = asyncio.get_running_loop()
        tls_timeout = HANDSHAKE_TIMEOUT if tls else None  # a TLS handshake is not yet a Session
        if sock is not None:
            self._server = await loop.create_server(
                lambda: Session(self), sock=sock, ssl=tls, backlog=4096, ssl_handshake_timeout=tls_timeout
            )
        else:
            self._server = await loop.create_server(
                lambda: Session(self),
                host,
                port,
                ssl=tls,
                backlog=4096,
                reuse_address=True,
                ssl_handshake_timeout=tls_timeout,
            )
        self._last_tick = self._clock()
        self._tick = loop.call_later(TICK, self._on_tick)
        if self.metrics is not None:
            self.metrics.bind(self, loop)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def aclose(self) -> None:
        """Stop listening, tell every client we are shutting down, close everything."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.fail(p.KIND_SHUTDOWN, "the store server is shutting down")
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def now(self) -> float:
        return self._clock()

    def _call_later(self, delay: float, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, callback)

    def admit(self, session: Session) -> None:
        """A new connection, pending until it authenticates; may close older pending ones."""
        self.sessions.add(session)
        for crowded in self.admission.enter(session.host, session):
            crowded.fail(
                p.KIND_BUSY,
                f"too many connections waiting to authenticate (limit {self.admission.budget}, "
                f"{self.admission.per_peer} per address): the oldest is closed",
            )

    def authenticated(self, session: Session) -> bool:
        """Move ``session`` out of the pending budget; refuse it if the server is full."""
        self.admission.leave(session.host, session)
        if len(self.sessions) - len(self.admission) > self.limits.max_connections:
            session.fail(p.KIND_BUSY, f"too many connections (limit {self.limits.max_connections})")
            return False
        return True

    def forget(self, session: Session) -> None:
        """Release a closed connection's slot and waiters (and their timers) at once. Idempotent."""
        self.sessions.discard(session)
        self.admission.leave(session.host, session)
        for waiter in session.waiters:
            self.waiters.remove(waiter)
            waiter.done = True
            if waiter.timer is not None:
                waiter.timer.cancel()
        session.waiters.clear()

    # -- dispatch -------------------------------------------------------------

    def dispatch(self, session: Session, req_id: int, op: str, args: list[Any]) -> Any:
        handler = self._handlers.get(op)
        if handler is None:
            raise RequestRejectedError(
                p.KIND_PROTOCOL, f"unknown operation {op[:64]!r}; known: {', '.join(sorted(self._handlers))}"
            )
        self._count_op()
        self._expire()
        if session.scope is not None:
            self._check_scope(session.scope, op, args)
        if self.metrics is None:
            result = handler(session, req_id, args)
        else:
            started = time.perf_counter()
            try:
                result = handler(session, req_id, args)
            finally:
                self.metrics.observe(op, time.perf_counter() - started)
        if op == "grant" and session.scope is not None:
            self._lease_scope[result] = session.scope
        return result

    def _check_scope(self, scope: str, op: str, args: list[Any]) -> None:
        """Refuse what a run-token connection may not touch: other keys, other runs' leases, stats."""
        problem = check_scope(scope, op, args)
        if problem is None:
            for lease in lease_args(op, args):
                owner = self._lease_scope.get(lease)
                if owner != scope and (owner is not None or self.keys.lease_info(lease, self._clock())):
                    problem = f"lease {lease} was not granted to this run"
        if problem is not None:
            raise RequestRejectedError(
                p.KIND_FORBIDDEN, f"{op} refused: {problem}; this token is for the keys under {scope!r} only"
            )

    def _count_op(self) -> None:
        self.ops_total += 1
        start, count = self._window
        now = self._clock()
        if now - start >= 1.0:
            self._rate = (self.ops_total - count) / (now - start)
            self._window = (now, self.ops_total)

    def uptime(self) -> float:
        """Seconds this server (and so its state) has existed; ``ping`` answers it to any client."""
        return round(self._clock() - self._started, 3)

    def stats(self) -> dict[str, Any]:
        start, count = self._window
        elapsed = self._clock() - start
        rate = self._rate if elapsed < 2.0 else (self.ops_total - count) / elapsed
        return {
            "server_id": self.server_id,
            "uptime": self.uptime(),
            "connections": len(self.sessions),
            "unauthenticated": len(self.admission),
            "keys": len(self.keys),
            "leases": self.keys.lease_count,
            "waiters": len(self.waiters),
            "revision": self.keys.revision,
            "ops_total": self.ops_total,
            "ops_per_second": round(rate, 1),
            "stalled_seconds": round(self.stalled_total, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "auth_failures": self.auth_failures,
            "internal_errors": self.internal_errors,
        }

    # -- key operations ----------------------------------------------------------

    def _key(self, args: list[Any], i: int = 0) -> str:
        key: str = _arg(args, i, str, "key")
        if len(key.encode()) > self.limits.max_key:
            raise RequestRejectedError(
                p.KIND_LIMIT, f"key of {len(key.encode())} bytes exceeds {self.limits.max_key}"
            )
        return key

    def _value(self, args: list[Any], i: int) -> bytes:
        value: bytes = _arg(args, i, bytes, "value")
        if len(value) > self.limits.max_value:
            raise RequestRejectedError(
                p.KIND_LIMIT, f"value of {len(value)} bytes exceeds {self.limits.max_value}"
            )
        return value

    def _lease(self, args: list[Any], i: int) -> int | None:
        if len(args) > i and args[i] is None:
            return None
        lease: int = _arg(args, i, int, "lease")
        return lease

    def _room_for(self, key: str) -> None:
        if len(self.keys) >= self.limits.max_keys and self.keys.get(key) is None:
            raise RequestRejectedError(
                p.KIND_LIMIT, f"the store holds its limit of {self.limits.max_keys} keys"
            )

    def _get(self, session: Session, req_id: int, args: list[Any]) -> Any:
        return _entry(self.keys.get(self._key(args)))

    def _put(self, session: Session, req_id: int, args: list[Any]) -> Any:
        key, value, lease = self._key(args), self._value(args, 1), self._lease(args, 2)
        self._room_for(key)
        try:
            version = self.keys.put(key, value, lease)
        except LeaseNotFoundError as exc:
            raise RequestRejectedError(p.KIND_LEASE, str(exc)) from exc
        self._changed([key])
        return version

    def _put_many(self, session: Session, req_id: int, args: list[Any]) -> Any:
        """``[[key, value, lease], ...]``: checked whole, then applied whole (one revision each)."""
        raw: list[Any] = _arg(args, 0, list, "items")
        items = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 3:
                raise RequestRejectedError(p.KIND_PROTOCOL, "put_many items must be [key, value, lease]")
            items.append((self._key(item), self._value(item, 1), self._lease(item, 2)))
        now = self._clock()
        for key, _, lease in items:
            self._room_for(key)
            if lease is not None and self.keys.lease_info(lease, now) is None:
                raise RequestRejectedError(p.KIND_LEASE, str(LeaseNotFoundError(lease)))
        versions = [self.keys.put(key, value, lease) for key, value, lease in items]
        self._changed([key for key, _, _ in items])
        return versions

    def _cas(self, session: Session, req_id: int, args: list[Any]) -> Any:
        key, value, lease = self._key(args), self._value(args, 1), self._lease(args, 3)
        expected: int = _arg(args, 2, int, "expected_version")
        self._room_for(key)
        try:
            result = self.keys.compare_and_set(key, value, expected, lease)
        except LeaseNotFoundError as exc:
            raise RequestRejectedError(p.KIND_LEASE, str(exc)) from exc
        if result.succeeded:
            self._changed([key])
        return [result.succeeded, _entry(result.current)]

    def _add(self, session: Session, req_id: int, args: list[Any]) -> Any:
        key = self._key(args)
        delta: int = _arg(args, 1, int, "delta")
        self._room_for(key)
        current = self.keys.get(key)
        try:
            total = (int(current.value) if current else 0) + delta
        except ValueError as exc:
            raise RequestRejectedError(p.KIND_PROTOCOL, f"the value at {key!r} is not an integer") from exc
        if not p.INT64_MIN <= total <= p.INT64_MAX:
            raise RequestRejectedError(
                p.KIND_LIMIT, f"adding {delta} to {key!r} leaves the signed 64-bit range; nothing was changed"
            )
        self.keys.add(key, delta)
        self._changed([key])
        return total

    def _delete(self, session: Session, req_id: int, args: list[Any]) -> Any:
        key = self._key(args)
        existed = self.keys.delete(key)
        if existed:
            self._changed([key])
        return existed

    def _list(self, session: Session, req_id: int, args: list[Any]) -> Any:
        listing = self.keys.list(_arg(args, 0, str, "prefix"))
        return [[[e.key, e.value, e.version, e.lease] for e in listing], listing.revision]

    def _wait(self, session: Session, req_id: int, args: list[Any]) -> Any:
        prefix: str = _arg(args, 0, str, "prefix")
        since: int = _arg(args, 1, int, "since")
        timeout = _seconds(args, 2, "timeout")
        revision = self.keys.changed_since(prefix, since)
        if revision is not None or timeout <= 0:
            return revision
        if len(session.waiters) >= MAX_WAITERS_PER_CONNECTION:
            raise RequestRejectedError(
                p.KIND_LIMIT, f"a connection may hold {MAX_WAITERS_PER_CONNECTION} blocked waits at most"
            )
        loop = asyncio.get_running_loop()

        def done(result: int | None) -> None:
            timer.cancel()
            session.waiters.discard(waiter)
            session.reply(req_id, result)

        waiter = Waiter(prefix, since, done)
        timer = waiter.timer = loop.call_later(min(timeout, MAX_WAIT), self._wait_timed_out, waiter)
        session.waiters.add(waiter)
        self.waiters.add(waiter)
        return DEFERRED

    def _wait_timed_out(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)
        waiter.finish(None)

    def _changed(self, keys: Sequence[str]) -> None:
        if self.metrics is not None:
            self.metrics.changed(self.keys, keys)
        if keys and len(self.waiters):
            self.waiters.wake(keys, self.keys.revision)

    # -- leases -------------------------------------------------------------------

    def _grant(self, session: Session, req_id: int, args: list[Any]) -> Any:
        ttl = _seconds(args, 0, "ttl")
        if not 0 < ttl <= MAX_WAIT:
            raise RequestRejectedError(
                p.KIND_LEASE, f"lease ttl must be in (0, {MAX_WAIT}] seconds, got {ttl}"
            )
        lease = self.keys.grant(ttl, self._clock())
        self._schedule_expiry()
        if len(self._lease_scope) > 2 * self.keys.lease_count + 1024:  # drop expired or revoked ones
            now = self._clock()
            self._lease_scope = {
                n: run for n, run in self._lease_scope.items() if self.keys.lease_info(n, now) is not None
            }
        return lease

    def _refresh(self, session: Session, req_id: int, args: list[Any]) -> Any:
        alive = self.keys.refresh(_arg(args, 0, int, "lease"), self._clock())
        self._schedule_expiry()
        return alive

    def _lease_info(self, session: Session, req_id: int, args: list[Any]) -> Any:
        info = self.keys.lease_info(_arg(args, 0, int, "lease"), self._clock())
        return None if info is None else [info.ttl, info.remaining]

    def _revoke(self, session: Session, req_id: int, args: list[Any]) -> Any:
        self._changed(self.keys.revoke(_arg(args, 0, int, "lease")))
        return None

    def _on_tick(self) -> None:
        self._catch_up()
        self._tick = asyncio.get_running_loop().call_later(TICK, self._on_tick)

    def _catch_up(self) -> None:
        """Extend every lease by the time the loop was stalled since the last tick.

        A tick due every ``TICK`` seconds that comes much later means nothing ran:
        no refresh could be read, so no lease may lose that time. Called before any
        expiry, so a stall is compensated before it could evict anyone; a node that
        stopped while the loop ran on is evicted as usual.
        """
        now = self._clock()
        lag = now - self._last_tick - TICK
        self._last_tick = max(now, self._last_tick)
        if lag <= TICK or self._tick is None:
            return
        log.warning("the event loop stalled for %.2f s: leases extended by as much", lag)
        self.stalled_total += lag
        self.keys.extend_leases(lag)
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        self._schedule_expiry()

    def _expire(self) -> None:
        self._catch_up()
        deleted = self.keys.expire(self._clock())
        if deleted:
            log.debug("lease expiry deleted %d keys", len(deleted))
            self._changed(deleted)

    def _schedule_expiry(self) -> None:
        deadline = self.keys.next_expiry()
        if deadline is None:
            return
        if self._expiry_timer is not None:
            if self._expiry_at <= deadline:
                return
            self._expiry_timer.cancel()
        loop = asyncio.get_running_loop()
        self._expiry_at = deadline
        self._expiry_timer = loop.call_later(max(deadline - self._clock(), 0.0), self._on_expiry_timer)

    def _on_expiry_timer(self) -> None:
        self._expiry_timer = None
        self._expire()
        self._schedule_expiry()
