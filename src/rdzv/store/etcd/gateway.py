"""The one edge between rdzv and etcd's v3 HTTP/JSON gateway.

Every request goes through :class:`Gateway`, which owns the single
``httpx.Client`` (thread-safe), fails over between endpoints within a
deadline, authenticates, and translates foreign failures:

* no endpoint could be connected to until the deadline -> ``StoreUnavailableError``
* an endpoint answered 503/504 (no leader, lost quorum, request timed out) or an
  attempt timed out, and the deadline passed -> ``StoreTimeoutError``
* wrong credentials, invalid token, missing permission, failed TLS handshake
  -> ``AuthenticationError``
* any other gRPC error status -> :class:`EtcdServerError` (a ``StoreError``)
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from rdzv.errors import AuthenticationError, StoreError, StoreTimeoutError, StoreUnavailableError
from rdzv.store.deadline import time_left
from rdzv.store.etcd.config import EtcdConfig

__all__ = ["EtcdServerError", "Failures", "Gateway", "Json", "Reply", "retryable"]

Json = dict[str, Any]

# gRPC status codes the gateway reports in its error bodies.
NOT_FOUND = 5
PERMISSION_DENIED = 7
UNAVAILABLE = 14
DEADLINE_EXCEEDED = 4
UNAUTHENTICATED = 16
_RETRYABLE_CODES = {UNAVAILABLE, DEADLINE_EXCEEDED}
_AUTH_MESSAGES = ("user name is empty", "authentication failed", "invalid auth token", "permission denied")
_CONNECT_TIMEOUT = 2.0
_MIN_ATTEMPT = 1.0
_ATTEMPTS = 5  # one attempt may use 1/5 of the timeout (at least _MIN_ATTEMPT) before failing over


class EtcdServerError(StoreError):
    """etcd refused a request; ``code`` is the gRPC status code it reported."""

    def __init__(self, message: str, *, code: int, url: str | None = None, key: str | None = None) -> None:
        self.code = code
        super().__init__(message, url=url, key=key)


@dataclass(frozen=True)
class Reply:
    """A decoded answer; ``uncertain`` when an earlier attempt may have been applied."""

    data: Json
    uncertain: bool


@dataclass
class Failures:
    """What went wrong on the attempts of one call, to choose the final error."""

    timed_out: bool = False
    uncertain: bool = False
    last: BaseException | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, endpoint: str, exc: BaseException, *, timed_out: bool, sent: bool) -> None:
        self.timed_out |= timed_out
        self.uncertain |= sent
        self.last = exc
        self.notes.append(f"{endpoint}: {exc or type(exc).__name__}")


class Gateway:
    """Endpoints, failover, authentication and error translation for one store handle."""

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.url = config.display_url
        self._client = httpx.Client(
            verify=_ssl_context(config) if config.tls else True,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )
        self._lock = threading.Lock()
        self._preferred = 0
        self._token: str | None = None
        self._closed = False

    # -- unary calls --------------------------------------------------------

    def call(self, path: str, body: Json, *, key: str | None = None, deadline: float | None = None) -> Reply:
        """POST ``body`` to ``path`` on the first endpoint that answers, within the deadline."""
        deadline = self.deadline() if deadline is None else deadline
        failures = Failures()
        reauthenticated = False
        for endpoint in self.endpoints(deadline):
            try:
                response = self._client.post(
                    endpoint + path,
                    json=body,
                    headers=self.headers(deadline),
                    timeout=self.attempt_timeout(deadline),
                )
            except httpx.TransportError as exc:
                self.note_failure(endpoint, exc, failures)
                continue
            if response.status_code == 200:
                return Reply(_decode(response, self.url), failures.uncertain)
            error = self.server_error(response, key)
            if retryable(error):
                failures.add(endpoint, error, timed_out=True, sent=True)
                self._demote(endpoint)
                continue
            if error.code == UNAUTHENTICATED and self.config.user and not reauthenticated:
                reauthenticated = True  # the token expired: log in again once
                self.drop_token()
                continue
            raise self.translate(error)
        raise self.exhausted(failures, key)

    def server_error(self, response: httpx.Response, key: str | None = None) -> EtcdServerError:
        """Decode a gateway error body (``{"error", "code", "message"}``)."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if isinstance(body.get("error"), dict):  # errors inside a stream
            body = body["error"]
        message = str(body.get("message") or body.get("error") or response.text or response.reason_phrase)
        code = int(body.get("code") or body.get("grpc_code") or _code_of_status(response.status_code))
        return EtcdServerError(f"etcd {self.url}: {message}", code=code, url=self.url, key=key)

    def translate(self, error: EtcdServerError) -> StoreError | AuthenticationError:
        """Map an etcd error to rdzv's tree (auth failures leave the ``StoreError`` branch)."""
        text = str(error)
        if error.code in (UNAUTHENTICATED, PERMISSION_DENIED) or any(m in text for m in _AUTH_MESSAGES):
            auth = AuthenticationError(text, url=self.url)
            auth.__cause__ = error
            return auth
        return error

    def exhausted(self, failures: Failures, key: str | None) -> StoreError:
        """The error for a call whose deadline passed without an answer."""
        detail = (
            "; ".join(failures.notes[-len(self.config.endpoints) :]) or "deadline passed before any attempt"
        )
        error: StoreError
        if failures.timed_out:
            error = StoreTimeoutError(
                f"etcd {self.url} did not answer within {self.config.timeout:g} s "
                f"(no leader or lost quorum?): {detail}",
                url=self.url,
                key=key,
            )
        else:
            error = StoreUnavailableError(f"etcd {self.url} is unreachable: {detail}", url=self.url, key=key)
        error.__cause__ = failures.last
        return error

    # -- pieces shared with streaming watches -------------------------------

    def deadline(self) -> float:
        """When a call must end: after the store's timeout, or the caller's deadline if sooner."""
        return time.monotonic() + time_left(self.config.timeout)

    def endpoints(self, deadline: float) -> Iterator[str]:
        """Endpoints to try, the preferred first, round after round with backoff, until ``deadline``."""
        endpoints = self.config.endpoints
        rounds = 0
        while True:
            start = self._preferred
            for offset in range(len(endpoints)):
                if self._closed:
                    raise StoreUnavailableError(f"etcd store {self.url} is closed", url=self.url)
                if time.monotonic() >= deadline:
                    return
                yield endpoints[(start + offset) % len(endpoints)]
            rounds += 1
            pause = min(0.05 * 2**rounds, 0.5, deadline - time.monotonic())
            if pause <= 0:
                return
            time.sleep(pause)  # retry backoff between rounds over all endpoints

    def attempt_timeout(self, deadline: float, *, whole: bool = False) -> httpx.Timeout:
        """One attempt may use part of the time left, so that another endpoint gets a turn."""
        left = max(deadline - time.monotonic(), 0.001)
        attempt = left if whole else min(left, max(_MIN_ATTEMPT, self.config.timeout / _ATTEMPTS))
        return httpx.Timeout(attempt, connect=min(attempt, _CONNECT_TIMEOUT))

    def headers(self, deadline: float) -> dict[str, str]:
        # Ask the member to refuse at once (503) rather than queue while it has no leader.
        headers = {"Grpc-Metadata-Hasleader": "true"}
        if self.config.user:
            headers["Authorization"] = self._ensure_token(deadline)
        return headers

    def stream(
        self, endpoint: str, path: str, body: Json, deadline: float
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """Open a streaming POST whose reads may wait until ``deadline``."""
        return self._client.stream(
            "POST",
            endpoint + path,
            json=body,
            headers=self.headers(deadline),
            timeout=self.attempt_timeout(deadline, whole=True),
        )

    def note_failure(self, endpoint: str, exc: BaseException, failures: Failures) -> None:
        """Record a failed attempt on ``endpoint`` and prefer the next endpoint.

        A failed TLS handshake (untrusted server, client certificate refused) is
        not retried: it raises ``AuthenticationError`` at once.
        """
        tls_error = _tls_failure(exc)
        if tls_error is not None:
            raise AuthenticationError(
                f"etcd {self.url}: TLS with {endpoint} failed: {tls_error}", url=self.url
            ) from exc
        connect = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        timed_out = isinstance(exc, httpx.TimeoutException) and not connect
        failures.add(endpoint, exc, timed_out=timed_out, sent=not connect)
        self._demote(endpoint)

    def close(self) -> None:
        self._closed = True
        self._client.close()

    # -- internals ----------------------------------------------------------

    def _demote(self, endpoint: str) -> None:
        with self._lock:
            endpoints = self.config.endpoints
            if endpoints[self._preferred] == endpoint:
                self._preferred = (self._preferred + 1) % len(endpoints)

    def drop_token(self) -> None:
        """Forget the auth token (it expired); the next request logs in again."""
        with self._lock:
            self._token = None

    def _ensure_token(self, deadline: float) -> str:
        with self._lock:
            if self._token is not None:
                return self._token
        body = {"name": self.config.user, "password": self.config.password}
        failures = Failures()
        for endpoint in self.endpoints(deadline):
            try:
                response = self._client.post(
                    endpoint + "/v3/auth/authenticate", json=body, timeout=self.attempt_timeout(deadline)
                )
            except httpx.TransportError as exc:
                self.note_failure(endpoint, exc, failures)
                continue
            if response.status_code == 200:
                token = str(_decode(response, self.url).get("token", ""))
                if not token:
                    raise AuthenticationError(
                        f"etcd {self.url} gave no token: is authentication enabled on the cluster?",
                        url=self.url,
                    )
                with self._lock:
                    self._token = token
                return token
            error = self.server_error(response)
            if retryable(error):
                failures.add(endpoint, error, timed_out=True, sent=True)
                self._demote(endpoint)
                continue
            raise AuthenticationError(
                f"etcd {self.url} refused user {self.config.user!r}: {error}", url=self.url
            ) from error
        raise self.exhausted(failures, None)


def retryable(error: EtcdServerError) -> bool:
    """Whether another endpoint, or the same one a moment later, may succeed (no leader, quorum lost)."""
    return error.code in _RETRYABLE_CODES


def _decode(response: httpx.Response, url: str) -> Json:
    try:
        data = response.json()
    except (ValueError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"etcd {url} sent a body that is not JSON: {response.text[:200]!r}", url=url
        ) from exc
    if not isinstance(data, dict):
        raise StoreError(f"etcd {url} sent unexpected JSON: {str(data)[:200]}", url=url)
    return data


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx error, if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _code_of_status(status: int) -> int:
    return {401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: NOT_FOUND, 503: UNAVAILABLE, 504: 4}.get(
        status, 2
    )


def _ssl_context(config: EtcdConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca)
    if config.cert and config.key:
        context.load_cert_chain(config.cert, config.key)
    return context
