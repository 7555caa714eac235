"""``Store.wait`` as an etcd streaming watch that survives disconnects and compaction.

The watch starts at revision ``since + 1``, so every change after ``since`` is
delivered even if it happened before the watch was created. When the stream
breaks (the member died or restarted) it is re-created on the next endpoint
from the same revision, since nothing was seen yet. When that revision has been
compacted away, the change history is gone: the watch reports the compaction
revision as a change, and callers re-read.

A member without a leader (the cluster lost its quorum) cancels the watch and
refuses new ones (the gateway asks it to: ``hasleader``). A wait that has had
no working stream for the store's ``timeout`` raises ``StoreTimeoutError``
then, rather than report "nothing changed" at its end: members of a run learn
of the outage instead of believing their round is quiet.
"""

from __future__ import annotations

import json
import time
from typing import NoReturn

import httpx

from rdzv.errors import AuthenticationError, StoreError, StoreTimeoutError
from rdzv.store.deadline import time_left
from rdzv.store.etcd.codec import b64, integer, prefix_end
from rdzv.store.etcd.gateway import EtcdServerError, Failures, Gateway, Json, retryable

__all__ = ["watch_for_change"]

_AUTH_REASONS = ("permission denied", "invalid auth token", "user name is empty")


class _StreamLostError(Exception):
    """The stream must be re-created, on the next endpoint."""


class _Health:
    """Since when the wait has had no working watch stream (``None``: it has one)."""

    def __init__(self) -> None:
        self.broken_since: float | None = None

    def broken(self, gateway: Gateway, full_prefix: str, why: BaseException) -> None:
        now = time.monotonic()
        self.broken_since = self.broken_since or now
        if now - self.broken_since >= gateway.config.timeout:
            raise _outage(gateway, full_prefix, why)


def _outage(gateway: Gateway, full_prefix: str, why: BaseException | None) -> StoreTimeoutError:
    error = StoreTimeoutError(
        f"etcd {gateway.url} could not keep a watch for {gateway.config.timeout:g} s "
        f"(no leader or lost quorum?): {why}",
        url=gateway.url,
        key=full_prefix,
    )
    error.__cause__ = why
    return error


def watch_for_change(gateway: Gateway, full_prefix: str, since: int, timeout: float) -> int | None:
    """The first revision after ``since`` that changed a key under ``full_prefix``, or ``None``."""
    deadline = time.monotonic() + time_left(timeout)
    raw = full_prefix.encode()
    body = {
        "create_request": {
            "key": b64(raw or b"\0"),
            "range_end": b64(prefix_end(raw)),
            "start_revision": str(since + 1),
        }
    }
    failures = Failures()
    health = _Health()
    reached = False
    for endpoint in gateway.endpoints(deadline):
        try:
            with gateway.stream(endpoint, "/v3/watch", body, deadline) as response:
                reached = True
                revision = _follow(gateway, response, since, health)
                if revision is not None:
                    return revision
        except httpx.ReadTimeout:
            if health.broken_since is None:
                return None  # reads may wait until the deadline: it has passed
            raise _outage(gateway, full_prefix, failures.last) from failures.last
        except httpx.TransportError as exc:
            gateway.note_failure(endpoint, exc, failures)
            reached |= not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            health.broken(gateway, full_prefix, exc)
        except _StreamLostError as exc:
            gateway.note_failure(endpoint, exc, failures)
            health.broken(gateway, full_prefix, exc)
    if not reached and failures.last is not None:
        raise gateway.exhausted(failures, full_prefix)
    if health.broken_since is not None:
        raise _outage(gateway, full_prefix, failures.last)
    return None


def _follow(gateway: Gateway, response: httpx.Response, since: int, health: _Health) -> int | None:
    """Read watch responses until a change; ``None`` when the server ended the stream."""
    if response.status_code != 200:
        response.read()
        _raise_or_reconnect(gateway, gateway.server_error(response))
    for line in response.iter_lines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"etcd {gateway.url} sent a watch message that is not JSON: {line[:200]!r}"
            ) from exc
        revision = _interpret(gateway, message, since)
        if message.get("result", {}).get("created"):
            health.broken_since = None  # a working stream again
        if revision is not None:
            return revision
    raise _StreamLostError("the watch stream ended")


def _interpret(gateway: Gateway, message: Json, since: int) -> int | None:
    if "error" in message:
        error = message["error"]
        text = str(error.get("message", error)) if isinstance(error, dict) else str(error)
        code = int(error.get("grpc_code") or error.get("code") or 2) if isinstance(error, dict) else 2
        _raise_or_reconnect(
            gateway, EtcdServerError(f"etcd {gateway.url}: {text}", code=code, url=gateway.url)
        )
    result: Json = message.get("result", {})
    compacted = integer(result, "compact_revision")
    if compacted:
        return max(compacted, since + 1)  # history is gone: report a change, callers re-read
    if result.get("canceled"):
        reason = str(result.get("cancel_reason", "no reason given"))
        if any(text in reason for text in _AUTH_REASONS):
            if "invalid auth token" in reason and gateway.config.user:
                gateway.drop_token()
                raise _StreamLostError(reason)
            raise AuthenticationError(f"etcd {gateway.url} refused the watch: {reason}", url=gateway.url)
        raise _StreamLostError(f"etcd cancelled the watch: {reason}")
    revisions = [integer(event.get("kv", {}), "mod_revision") for event in result.get("events", ())]
    newest = max(revisions, default=0)
    return newest if newest > since else None


def _raise_or_reconnect(gateway: Gateway, error: EtcdServerError) -> NoReturn:
    if retryable(error):
        raise _StreamLostError(str(error))
    raise gateway.translate(error)
