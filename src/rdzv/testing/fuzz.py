"""Hostile traffic for fuzzing a TCP store server, and an honest client to run beside it.

Needs hypothesis (the ``test`` extra). Each :data:`attacks` example is one
connection's worth of bad behaviour; :func:`play` performs it against a real
server and returns what the server sent back, checking on the way that every
answer is a well-formed frame (with a valid MAC once authenticated)::

    @given(fuzz.attacks)
    def attack(example):
        fuzz.play(port, token, example, source=fuzz.fresh_source())

Used by ``tests/test_tcp_fuzz.py`` (short) and ``benchmarks/fuzz_tcp.py`` (long).
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st

from rdzv.store.base import Store
from rdzv.store.tcp import protocol as p
from rdzv.testing.wire import WireClient

__all__ = ["HonestClient", "attacks", "fresh_source", "play"]

OPS = ["get", "put", "put_many", "cas", "add", "delete", "list", "wait", "grant", "refresh", "revoke"]
OPS += ["lease_info", "stats", "ping"]
PING_ID = 2**62 + 1
EDGE_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1]
POST_AUTH = ("request", "message", "body", "mutated", "truncated", "oversize", "deep", "unsealed")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([i for i in EDGE_INTS if -(2**63) <= i < 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.binary(max_size=48),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
requests = st.tuples(
    st.integers(-(2**63), 2**64 - 1) | st.integers(1, 1000),
    st.sampled_from(OPS) | st.text(max_size=10),
    st.lists(values, max_size=5),
).map(list)
handshakes = st.fixed_dictionaries(
    {"cnonce": st.binary(max_size=40) | values},
    optional={"mac": st.binary(max_size=40) | values, "run": st.text(max_size=20) | values},
)

flips = st.lists(st.integers(0, 2**16), min_size=1, max_size=3)
"""Bytes of a frame to alter (taken modulo its length)."""

attacks = st.one_of(
    st.tuples(st.just("request"), requests),  # well framed, fuzzed content
    st.tuples(st.just("message"), values),  # any message where a request belongs
    st.tuples(st.just("body"), st.binary(max_size=300)),  # not msgpack (or truncated msgpack), sealed
    st.tuples(
        st.just("mutated"), st.tuples(requests, st.lists(st.integers(0, 2**16), min_size=1, max_size=3))
    ),
    st.tuples(st.just("truncated"), st.tuples(requests, st.integers(1, 40))),
    st.tuples(st.just("oversize"), st.integers(2**24 + 17, 2**32 - 1)),
    st.tuples(st.just("deep"), st.integers(1, 100_000)),
    st.tuples(st.just("unsealed"), requests),  # no MAC on an authenticated connection
    st.tuples(st.just("pre_auth_bytes"), st.binary(max_size=2000)),
    st.tuples(st.just("pre_auth_message"), values),
    st.tuples(st.just("handshake"), handshakes),
)

_sources = itertools.count()


def fresh_source() -> str:
    """Another loopback address for each call: unauthenticated attacks are not throttled as one peer."""
    n = next(_sources) % (250 * 250)
    return f"127.1.{n // 250}.{n % 250 + 1}"


def _check(frame: Any) -> None:
    if isinstance(frame, dict):
        return  # the hello, or the answer to a handshake
    if not (isinstance(frame, list) and len(frame) == 3 and frame[1] in (p.OK, p.ERROR)):
        raise AssertionError(f"the server sent a malformed frame: {frame!r:.300}")
    if frame[1] == p.ERROR and not (isinstance(frame[2], dict) and frame[2].get("kind")):
        raise AssertionError(f"an error frame without a kind: {frame!r:.300}")


def _until_ping_or_closed(raw: WireClient) -> list[Any]:
    raw.send([PING_ID, "ping", []])
    frames: list[Any] = []
    while True:
        try:
            frame = raw.receive()
        except ConnectionError:
            return frames
        _check(frame)
        frames.append(frame)
        if frame[:2] == [PING_ID, p.OK]:  # the ping answers the server uptime
            return frames


def _until_closed(raw: WireClient) -> list[Any]:
    raw.sock.shutdown(socket.SHUT_WR)  # the server sees the end: no waiting for its timeouts
    frames = raw.receive_until_closed()
    for frame in frames:
        _check(frame)
    return frames


def _post_auth(raw: WireClient, kind: str, payload: Any) -> list[Any]:
    if kind == "request":
        raw.send(payload)
        return _until_ping_or_closed(raw)
    if kind == "message":
        raw.send(payload)
    elif kind == "body":
        raw.send_body(payload)
    elif kind == "mutated":
        request, flips = payload
        body = bytearray(p.encode(request)[4:])
        for flip in flips:
            body[flip % len(body)] ^= 1 + flip % 255
        raw.send_body(bytes(body))
    elif kind == "truncated":
        request, cut = payload
        frame = p.encode(request, raw.send_mac)
        raw.send_raw(frame[: max(len(frame) - cut, 1)])
    elif kind == "oversize":
        raw.send_raw(p.HEADER.pack(payload) + b"\0" * 64)
    elif kind == "deep":
        raw.send_body(b"\x91" * payload + b"\xc0")
    elif kind == "unsealed":
        raw.send_raw(p.encode(payload))
    return _until_closed(raw)


def play(port: int, token: bytes, attack: tuple[str, Any], *, source: str | None = None) -> list[Any]:
    """Perform one attack on a new connection; return the frames the server sent (all checked)."""
    kind, payload = attack
    with WireClient(port, source=None if kind in POST_AUTH else source) as raw:
        if kind in POST_AUTH:
            answer = raw.handshake(token)
            if not (isinstance(answer, dict) and answer.get("ok")):
                raise AssertionError(f"the honest handshake of the fuzzer was refused: {answer!r:.300}")
            return _post_auth(raw, kind, payload)
        raw.read_hello()
        if kind == "pre_auth_bytes":
            raw.send_raw(payload)
        else:  # a message, or a (broken) handshake
            raw.send(payload)
        return _until_closed(raw)


def play_for(port: int, token: bytes, *, examples: int, seconds: float, seed: int | None = None) -> int:
    """Play up to ``examples`` generated attacks for at most ``seconds``; return how many were played."""
    played = 0
    stop_at = time.monotonic() + seconds

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(attacks)
    def attack(example: tuple[str, Any]) -> None:
        nonlocal played
        if time.monotonic() < stop_at:
            play(port, token, example, source=fresh_source())
            played += 1

    (attack if seed is None else with_seed(seed)(attack))()
    return played


def memory_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a live process in MiB, from ``/proc/PID/status`` (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


class HonestClient(threading.Thread):
    """Does honest work under ``legit/`` in a loop and records every operation that went wrong."""

    def __init__(self, store: Store) -> None:
        super().__init__(name="honest-client", daemon=True)
        self.store = store
        self.ops = 0
        self.failures: list[str] = []
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(30)

    def run(self) -> None:
        expected = 0
        while not self._stopping.is_set():
            try:
                version = self.store.put(f"legit/{self.ops % 50}", b"honest")
                entry = self.store.get(f"legit/{self.ops % 50}")
                expected += 1
                total = self.store.add("legit-counter", 1)
                seen = self.store.wait("legit/", version - 1, 5.0)
                if entry is None or entry.value != b"honest" or total != expected or seen is None:
                    self.failures.append(f"wrong result: {entry}, {total} != {expected}, {seen}")
            except Exception as exc:  # recorded: the test asserts there are none
                self.failures.append(repr(exc))
            self.ops += 4
