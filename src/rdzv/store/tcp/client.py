"""``tcp://HOST:PORT``: the embedded TCP store, served by ``rdzv serve`` or by a node.

URL options (query parameters or keyword options to ``open_store``):

``token``      shared secret (default: the ``RDZV_TOKEN`` environment variable)
``timeout``    seconds each operation may take, reconnects included (default 30); a caller's
               deadline (:func:`rdzv.store.deadline.bounded`) shortens it
``probe``      seconds a request may wait with nothing received before the client pings
               the server; silent ``2 * probe`` more and the connection is replaced (default 2)
``is_host``    ``auto`` (default): host the server in this process when HOST is an
               address of this machine and the port is free; ``1``: always host
               (error if the port cannot be bound); ``0``: never host
``tls``        ``1`` to connect with TLS; ``ca`` names the CA file to trust
``tls_cert``, ``tls_key``  certificate and key when this process hosts with TLS
``insecure``   ``1`` lets a hosting node listen on a non-loopback address without a token,
               and a client without a token use a non-loopback server that has none
``metrics_port``  a hosting node serves Prometheus metrics on HOST:PORT ``/metrics``
               (``0``: a free port; needs ``rdzv[metrics]``); ignored by nodes that do not host

``tcp://H1:P1,H2:P2,...`` lists candidate hosts in order: when the server of one
is gone, clients move to the next live one, and a node that can bind it starts
serving there (see ``candidates.py``). A server that comes back without its
state (a restart, a failover) is adopted: ``generation`` goes up and the one
call that spanned the change raises ``StoreStateLostError``.

A ``TcpStore`` is thread-safe: its threads share one connection, their requests
pipelined. Every error reaches the caller as ``StoreUnavailableError``,
``StoreTimeoutError``, ``StoreStateLostError``, ``StoreError`` or
``AuthenticationError`` (see ``_call``). A refused connection (nothing listens)
fails at once: waiting for the store to come back is the caller's retry policy.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rdzv.errors import (
    AuthenticationError,
    ConfigurationError,
    StoreError,
    StoreStateLostError,
    StoreTimeoutError,
    StoreUnavailableError,
)
from rdzv.store.base import Capabilities, CasResult, Entry, LeaseInfo, Listing, Store
from rdzv.store.deadline import current_deadline
from rdzv.store.tcp.auth import parse_run_token
from rdzv.store.tcp.candidates import FAILOVER_STEP, PROBE_TIMEOUT, parse_hosts, serving
from rdzv.store.tcp.connection import Connection, ConnectionLostError, ServerError
from rdzv.store.tcp.hosting import HostedServer, bind_listener, is_local_address, is_loopback
from rdzv.store.tcp.metrics import ServerMetrics

__all__ = ["TcpStore"]

log = logging.getLogger("rdzv.store.tcp.client")

OPTIONS = (
    "token", "timeout", "probe", "is_host", "tls", "ca", "tls_cert", "tls_key", "insecure", "metrics_port",
)  # fmt: skip
BATCH = 4096
"""Most items in one ``put_many`` request (a few hundred KiB for rank records)."""
RECONNECT_WINDOW = 2.0
"""After a connection is lost, how long to try to reach the same server again."""
WAIT_MARGIN = 0.1
"""A ``wait`` cut short by the caller's deadline ends this much earlier, so its reply is in time."""
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def _flag(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigurationError(f"option {name}={value!r} must be 1 or 0")


def _seconds(options: dict[str, Any], name: str, default: float) -> float:
    try:
        return float(options.get(name, default))
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number of seconds, got {options[name]!r}") from exc


def _port(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"metrics_port must be a port number (0-65535), got {value!r}") from exc
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics_port must be a port number (0-65535), got {port}")
    return port


def _entry(key: str, raw: Any) -> Entry | None:
    if raw is None:
        return None
    value, version, lease = raw
    return Entry(key, value, version, lease)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from certificate and key files, or ``None`` if neither is given."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigurationError("TLS needs both a certificate and a key (tls_cert and tls_key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load TLS certificate {cert!r} / key {key!r}: {exc}") from exc
    return context


class TcpStore(Store):
    """A client of the embedded store server, hosting it first when this node should."""

    capabilities = Capabilities(push_wait=True, leases=True, multi_host=True)

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        probe: float = 2.0,
        is_host: str = "auto",
        tls: bool = False,
        ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        insecure: bool = False,
        fallbacks: Sequence[tuple[str, int]] = (),
        metrics_port: int | None = None,
    ) -> None:
        if is_host not in ("auto", "1", "0"):
            raise ConfigurationError(f"is_host must be auto, 1 or 0, got {is_host!r}")
        for name, value in (("timeout", timeout), ("probe", probe)):
            if not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value}")
        self.probe = probe
        self._candidates = [(host, port), *fallbacks]
        self.url = "tcp://" + ",".join(_netloc(h, p) for h, p in self._candidates)
        self.address = (host, port)
        """The candidate this client talks to (or last talked to)."""
        self._active = 0
        self._generation = 0
        self._lost_at: float | None = None
        """When the connection was lost (failover hosts take their turns from then on)."""
        if fallbacks:
            self.capabilities = replace(TcpStore.capabilities, failover=True)
        self.timeout = timeout
        token = token if token is not None else os.environ.get("RDZV_TOKEN") or None
        self._token = token.encode() if token else None
        self._client_tls = self._client_context(ca) if tls else None
        self._insecure = insecure
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._server_id: str | None = None
        self._closed = False
        self.hosted: HostedServer | None = None
        self.metrics_address: tuple[str, int] | None = None
        """Where a hosting store serves its metrics (``metrics_port``)."""
        run_token = self._token is not None and parse_run_token(self._token) is not None
        if run_token and is_host == "1":
            raise ConfigurationError(
                "a per-run token (rdzv token) cannot host a store: it is not a server secret"
            )
        self._may_host = is_host != "0" and not run_token
        self._server_tls = server_tls(tls_cert, tls_key)
        self._insecure = insecure
        auto = is_host == "auto" and port and not run_token and is_local_address(host)
        # A job that failed over to a later candidate keeps it when the first host comes back.
        if is_host == "1" or (auto and not any(serving(c) for c in fallbacks)):
            self._host(host, port, is_host == "1", self._server_tls, insecure, metrics_port)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> TcpStore:
        """Registry factory for ``tcp://HOST:PORT?token=...&timeout=...&is_host=...``.

        Query parameters are read here too, so the factory works without the
        registry; keyword ``options`` override them.
        """
        parts = urlsplit(url)
        if "," in parts.netloc:
            hosts = parse_hosts(parts.netloc, url)
            first = url.replace(parts.netloc, _netloc(*hosts[0]), 1)
            return cls.from_url(first, **{**options, "fallbacks": hosts[1:]})
        options = {**dict(parse_qsl(parts.query, keep_blank_values=True)), **options}
        fallbacks = options.pop("fallbacks", ())
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown tcp:// option(s) {', '.join(unknown)}; valid options: {', '.join(OPTIONS)}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"invalid port in store URL {url!r}") from exc
        if not parts.hostname or port is None:
            raise ConfigurationError(f"store URL {url!r} must be tcp://HOST:PORT")
        return cls(
            parts.hostname,
            port,
            token=options.get("token"),
            timeout=_seconds(options, "timeout", 30.0),
            probe=_seconds(options, "probe", 2.0),
            is_host=str(options.get("is_host", "auto")).lower(),
            tls=_flag("tls", options.get("tls", False)),
            ca=options.get("ca") or None,
            tls_cert=options.get("tls_cert") or None,
            tls_key=options.get("tls_key") or None,
            insecure=_flag("insecure", options.get("insecure", False)),
            fallbacks=fallbacks,
            metrics_port=_port(options.get("metrics_port")),
        )

    @staticmethod
    def _client_context(ca: str | None) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load CA file {ca!r}: {exc}") from exc

    def _host(
        self,
        host: str,
        port: int,
        forced: bool,
        tls: ssl.SSLContext | None,
        insecure: bool,
        metrics_port: int | None,
    ) -> None:
        if self._token is None and not insecure and not is_loopback(host):
            raise ConfigurationError(
                f"refusing to host the store on non-loopback {host} without a token; "
                "set token=/RDZV_TOKEN, or insecure=1 to accept anyone who reaches the port"
            )
        try:
            sock = bind_listener(host, port)
        except OSError as exc:
            raise StoreUnavailableError(f"cannot listen on {host}:{port}: {exc}", url=self.url) from exc
        if sock is None:
            if forced:
                raise StoreUnavailableError(f"is_host=1 but {host}:{port} is already in use", url=self.url)
            return
        metrics = None
        if metrics_port is not None:
            metrics = ServerMetrics()
            try:
                self.metrics_address = metrics.serve_http(host, metrics_port)
            except ConfigurationError:
                sock.close()
                raise
        try:
            self.hosted = HostedServer(sock, token=self._token, tls=tls, metrics=metrics)
        except BaseException:
            if metrics is not None:
                metrics.close()
            raise
        if port == 0:  # is_host=1 with port 0: an ephemeral port, now known
            self.address = self._candidates[0] = (host, self.hosted.address[1])
            self.url = "tcp://" + ",".join(_netloc(h, p) for h, p in self._candidates)

    @property
    def generation(self) -> int:
        return self._generation

    def state_age(self) -> float | None:
        # ``ping`` answers the server's uptime to any client, a per-run token's too (``stats`` would not).
        uptime = self._call("ping", [])
        return float(uptime) if isinstance(uptime, (int, float)) else None

    # -- the one error edge -------------------------------------------------------

    def _call(self, op: str, args: list[Any], *, retry: bool = True, wait: float = 0.0, key: str = "") -> Any:
        """Send one request and return its result, translating every failure.

        ``retry``: the request may be sent again after a lost connection (it is
        idempotent). ``wait``: seconds the server may legitimately hold it (a
        ``wait`` request, whose last argument is resent as the time still left).
        The call ends by the caller's deadline, if one is in force.
        """
        start = time.monotonic()
        deadline, wait_until = self._deadlines(start, wait)
        generation = self._generation
        while True:
            conn = self._connection(deadline, key)
            if self._generation != generation:
                raise StoreStateLostError(
                    f"{op} on {self.url}: the store server changed (restarted or failed over) "
                    "and lost its state",
                    url=self.url,
                    key=key,
                )
            if wait:
                args[-1] = max(wait_until - time.monotonic(), 0.0)
            try:
                req_id, pending = conn.send(op, args)
            except ConnectionLostError:
                continue  # never sent: safe to retry on a new connection
            if not conn.await_reply(pending, deadline):
                conn.abandon(req_id)
                raise StoreTimeoutError(f"{op} got no reply from {self.url} in time", url=self.url, key=key)
            error = pending.error
            if error is None:
                return pending.result
            if isinstance(error, ServerError) and error.kind == "forbidden":
                raise AuthenticationError(f"{op} refused by {self.url}: {error}", url=self.url) from error
            if isinstance(error, ServerError):
                raise StoreError(f"{op} refused by {self.url}: {error}", url=self.url, key=key) from error
            if not retry or (isinstance(error, ConnectionLostError) and error.final):
                maybe = "" if retry else " (the request was sent: it may have been applied)"
                raise StoreUnavailableError(
                    f"{op} on {self.url} failed{maybe}: {error}", url=self.url, key=key
                ) from error

    def _deadlines(self, start: float, wait: float) -> tuple[float, float]:
        """When the call must end (its own timeout or the caller's deadline), and when a ``wait`` does."""
        deadline, wait_until = start + self.timeout + wait, start + wait
        bound = current_deadline()
        if bound is not None and bound < deadline:
            deadline = bound
            wait_until = min(wait_until, bound - min(WAIT_MARGIN, max(bound - start, 0.0) / 4))
        return deadline, wait_until

    def _connection(self, deadline: float, key: str = "") -> Connection:
        with self._lock:
            if self._closed:
                raise StoreUnavailableError(f"the store {self.url} is closed", url=self.url)
            conn = self._conn
            if conn is not None and conn.lost is None:
                return conn
            if conn is not None:
                conn.close()
                self._conn = None
                if conn.lost is not None and conn.lost.final and len(self._candidates) == 1:
                    raise StoreUnavailableError(f"{self.url}: {conn.lost}", url=self.url) from conn.lost
                deadline = min(deadline, time.monotonic() + RECONNECT_WINDOW)
            if deadline <= time.monotonic():
                raise StoreTimeoutError(f"no time left to reconnect to {self.url}", url=self.url, key=key)
            self._conn = self._connect(deadline)
            return self._conn

    def _connect(self, deadline: float) -> Connection:
        """Connect to the first candidate that answers, hosting a later one when it is our turn.

        When every candidate refuses (nothing listens), fail at once: waiting for a
        server to come back is the caller's retry policy, bounded by its deadline.
        """
        delay = 0.02
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        while True:
            refused = 0
            for index in range(len(self._candidates)):
                try:
                    return self._adopt(self._open(index, deadline), index)
                except (OSError, ConnectionLostError) as exc:
                    failure: Exception = exc
                    refused += isinstance(exc, ConnectionRefusedError)
                if self._failover_host(index, self._lost_at):
                    return self._adopt(self._open(index, deadline), index)
            if refused == len(self._candidates):
                # Nobody listens: say so now. Callers retry against their own deadline
                # (a rendezvous does), rather than each call spending its whole timeout here.
                raise StoreUnavailableError(
                    f"cannot reach the store at {self.url}: connection refused (nothing listens there)",
                    url=self.url,
                ) from failure
            if time.monotonic() + delay >= deadline:
                raise StoreUnavailableError(
                    f"cannot reach the store at {self.url}: {failure}", url=self.url
                ) from failure
            time.sleep(delay)  # backoff between connection attempts, not synchronisation
            delay = min(delay * 2, 0.5)

    def _open(self, index: int, deadline: float) -> Connection:
        timeout = max(deadline - time.monotonic(), 0.01)
        if len(self._candidates) > 1:
            timeout = min(timeout, PROBE_TIMEOUT)
        address = self._candidates[index]
        try:
            return Connection(
                address,
                token=self._token,
                tls=self._client_tls,
                timeout=timeout,
                url=self.url,
                probe=self.probe,
                allow_unauthenticated=self._insecure or is_loopback(address[0]),
            )
        except ssl.SSLError as exc:
            raise StoreUnavailableError(f"TLS with {self.url} failed: {exc}", url=self.url) from exc

    def _adopt(self, conn: Connection, index: int) -> Connection:
        if self._server_id is not None and conn.server_id != self._server_id:
            # A restarted server, or another candidate: it starts empty. Callers
            # learn it from ``generation`` (and the call that spanned it fails).
            self._generation += 1
            host, port = self._candidates[index]
            log.warning("rdzv: the store at %s:%d is a new server; its state is rebuilt", host, port)
        self._server_id, self._lost_at = conn.server_id, None
        self._active, self.address = index, self._candidates[index]
        return conn

    def _failover_host(self, index: int, lost_at: float) -> bool:
        """Serve candidate ``index`` if this node can bind it and nearer ones had their turn."""
        if not self._may_host or self.hosted is not None or self._server_id is None:
            return False
        if index <= self._active or time.monotonic() - lost_at < FAILOVER_STEP * (index - self._active - 1):
            return False
        host, port = self._candidates[index]
        if not is_local_address(host):
            return False
        self._host(host, port, False, self._server_tls, self._insecure, None)  # metrics: first host only
        if self.hosted is not None:
            log.warning("rdzv: the store moved to %s:%d, served by this node", host, port)
        return self.hosted is not None

    # -- Store ----------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return _entry(key, self._call("get", [key], key=key))

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        version: int = self._call("put", [key, bytes(value), lease], key=key)
        return version

    def put_many(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        """One request per :data:`BATCH` items, each applied all-or-none by the server."""
        versions: list[int] = []
        for start in range(0, len(items), BATCH):
            chunk = [[key, bytes(value), lease] for key, value, lease in items[start : start + BATCH]]
            versions += self._call("put_many", [chunk], key=str(chunk[0][0]))
        return versions

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        ok, current = self._call("cas", [key, bytes(value), expected_version, lease], retry=False, key=key)
        return CasResult(bool(ok), _entry(key, current))

    def add(self, key: str, delta: int) -> int:
        total: int = self._call("add", [key, delta], retry=False, key=key)
        return total

    def delete(self, key: str) -> bool:
        return bool(self._call("delete", [key], retry=False, key=key))

    def list(self, prefix: str) -> Listing:
        raw, revision = self._call("list", [prefix], key=prefix)
        return Listing(tuple(Entry(k, v, ver, lease) for k, v, ver, lease in raw), revision)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        revision: int | None = self._call(
            "wait", [prefix, since, max(timeout, 0.0)], wait=timeout, key=prefix
        )
        return revision

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ConfigurationError(f"lease ttl must be positive, got {ttl}")
        lease: int = self._call("grant", [float(ttl)], retry=False)
        return lease

    def refresh(self, lease: int) -> bool:
        return bool(self._call("refresh", [lease]))

    def revoke(self, lease: int) -> None:
        self._call("revoke", [lease])

    def lease_info(self, lease: int) -> LeaseInfo | None:
        raw = self._call("lease_info", [lease])
        return None if raw is None else LeaseInfo(float(raw[0]), float(raw[1]))

    def server_stats(self) -> dict[str, Any]:
        """Connections, keys, leases, waiters, ops total and ops/s of the server, and the
        seconds its event loop was stalled (given back to the leases)."""
        stats: dict[str, Any] = self._call("stats", [])
        return stats

    def close(self) -> None:
        """Close the connection; a hosting store also stops its server. Idempotent."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self.hosted is not None:
            self.hosted.close()
            self.hosted = None
