"""Hostile or broken traffic closes only the offending connection; data and other clients survive."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from rdzv.errors import StoreError
from rdzv.registry import open_store
from rdzv.store.base import Store
from rdzv.store.tcp import protocol as p
from rdzv.store.tcp.client import TcpStore
from rdzv.store.tcp.hosting import HostedServer, bind_listener
from rdzv.testing.servers import ServerProcess, serve_process
from rdzv.testing.wire import WireClient

TOKEN = "garbage-test-token"
LIMITS = ["--max-connections", "8", "--max-frame", "65536", "--max-value", "1024"]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN, args=LIMITS) as running:
        yield running


@pytest.fixture
def good(server: ServerProcess) -> Iterator[Store]:
    with open_store(server.url + "&timeout=10") as store:
        for i in range(10):
            store.put(f"data/{i}", f"value-{i}".encode())
        yield store


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def _frames(data: bytes) -> list[Any]:
    frames = []
    while len(data) >= 4:
        (size,) = p.HEADER.unpack(data[:4])
        frames.append(p.decode(data[4 : 4 + size]))
        data = data[4 + size :]
    return frames


def _error_kind(data: bytes) -> str:
    last = _frames(data)[-1]
    assert last[:2] == [0, p.ERROR], last
    return str(last[2]["kind"])


def _authenticated(port: int) -> WireClient:
    raw = WireClient(port)
    assert raw.handshake(TOKEN.encode())["ok"]
    return raw


def _assert_intact(server: ServerProcess, good: Store) -> None:
    assert [e.value for e in good.list("data/")] == sorted(f"value-{i}".encode() for i in range(10))
    with open_store(server.url) as fresh:
        assert fresh.get("data/3").value == b"value-3"  # type: ignore[union-attr]
        fresh.put("after", b"ok")


def test_random_bytes_before_handshake_close_that_connection_only(server: ServerProcess, good: Store) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(random.Random(7).randbytes(4096))
        assert _error_kind(_read_until_closed(sock)) == p.KIND_PROTOCOL
    assert "closing connection from 127.0.0.1" in server.log_text()
    _assert_intact(server, good)


def test_undecodable_frame_after_auth_closes_that_connection(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as raw:
        raw.send_body(b"\xc1\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        assert raw.receive_until_closed()[-1][2]["kind"] == p.KIND_PROTOCOL
    _assert_intact(server, good)


def test_wrongly_shaped_request_closes_that_connection(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as raw:
        raw.send([1, "put"])  # not [id, op, args]
        assert raw.receive_until_closed()[-1][2]["kind"] == p.KIND_PROTOCOL
    _assert_intact(server, good)


def test_bad_arguments_get_an_error_reply_and_the_connection_stays(
    server: ServerProcess, good: Store
) -> None:
    with _authenticated(server.port) as raw:
        raw.send([1, "put", ["data/0"]])  # missing the value
        reply = raw.receive()
        assert reply[:2] == [1, p.ERROR]
        assert reply[2]["kind"] == p.KIND_PROTOCOL
        assert "argument 1 (value) is missing" in reply[2]["message"]
        raw.send([2, "get", ["data/0"]])
        assert raw.receive()[:2] == [2, p.OK]
    _assert_intact(server, good)


def test_huge_length_prefix_is_refused_without_reading_it(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as raw:
        raw.send_raw(p.HEADER.pack(0xFFFFFFFF) + b"x" * 100)
        assert raw.receive_until_closed()[-1][2]["kind"] == p.KIND_PROTOCOL
    assert "exceeds the limit of 65552 bytes" in server.log_text()
    _assert_intact(server, good)


def test_half_sent_frame_then_disconnect_loses_nothing(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as raw:
        frame = p.encode([1, "put", ["data/0", b"half", None]], raw.send_mac)
        raw.send_raw(frame[: len(frame) // 2])
    with _authenticated(server.port) as idle:
        idle.send_raw(frame[:3])  # a truncated header, left hanging while others work
        _assert_intact(server, good)


def test_oversized_value_is_refused_and_the_connection_stays_usable(good: Store) -> None:
    with pytest.raises(StoreError, match="value of 2048 bytes exceeds 1024"):
        good.put("big", b"x" * 2048)
    assert good.get("data/1").value == b"value-1"  # type: ignore[union-attr]


def test_authenticated_connections_beyond_the_limit_are_refused_and_others_keep_working(
    server: ServerProcess, good: Store
) -> None:
    flood = [WireClient(server.port) for _ in range(20)]
    try:
        answers = [raw.handshake(TOKEN.encode()) for raw in flood]
        good.put("during", b"flood")  # an admitted connection is unaffected
        admitted = sum(isinstance(a, dict) and a.get("ok") is True for a in answers)
        refused = sum(isinstance(a, list) and a[2]["kind"] == p.KIND_BUSY for a in answers)
        assert (admitted, refused) == (7, 13)  # 8 with `good`
    finally:
        for raw in flood:
            raw.close()
    assert "too many connections (limit 8)" in server.log_text()
    _assert_intact(server, good)


BAD_REQUESTS: list[tuple[list[Any], str, str]] = [
    (
        ["add", ["counter", 2**63 - 1]],
        p.KIND_LIMIT,
        "leaves the signed 64-bit range; nothing was changed",
    ),
    (["add", ["counter", 2**64 - 1]], p.KIND_PROTOCOL, "argument 1 (delta) is outside the signed 64-bit"),
    (["add", ["data/0", 1]], p.KIND_PROTOCOL, "the value at 'data/0' is not an integer"),
    (["wait", ["data/", 0, float("nan")]], p.KIND_PROTOCOL, "finite, non-negative number of seconds"),
    (["wait", ["data/", 0, float("inf")]], p.KIND_PROTOCOL, "finite, non-negative number of seconds"),
    (["wait", ["data/", 0, -1.0]], p.KIND_PROTOCOL, "finite, non-negative number of seconds, got -1.0"),
    (["wait", ["data/", 2**64 - 1, 1.0]], p.KIND_PROTOCOL, "argument 1 (since) is outside"),
    (["grant", [float("nan")]], p.KIND_PROTOCOL, "finite, non-negative"),
    (["cas", ["counter", b"x", 2**64 - 1, None]], p.KIND_PROTOCOL, "(expected_version) is outside"),
    (["refresh", [True]], p.KIND_PROTOCOL, "argument 0 (lease) is missing or of the wrong type"),
    (["launch_missiles", []], p.KIND_PROTOCOL, "unknown operation 'launch_missiles'; known: add, cas"),
]


def test_each_bad_request_gets_an_error_reply_and_changes_nothing(server: ServerProcess, good: Store) -> None:
    good.put("counter", str(2**63 - 100).encode())
    with _authenticated(server.port) as raw:
        for i, (request, kind, says) in enumerate(BAD_REQUESTS):
            raw.send([2 * i + 1, *request])
            reply = raw.receive()
            assert reply[:2] == [2 * i + 1, p.ERROR], request
            assert reply[2]["kind"] == kind, request
            assert says in reply[2]["message"], request
            raw.send([2 * i + 2, "add", ["counter", 1]])  # the connection goes on, the key still works
            assert raw.receive() == [2 * i + 2, p.OK, 2**63 - 99 + i]
    assert "Traceback" not in server.log_text()
    _assert_intact(server, good)


def test_an_overflowing_add_through_the_client_is_an_error_not_a_broken_key(good: Store) -> None:
    good.put("big", str(2**63 - 1).encode())
    with pytest.raises(StoreError, match="leaves the signed 64-bit range"):
        good.add("big", 1)
    assert good.add("big", -1) == 2**63 - 2


def test_a_reply_that_cannot_be_encoded_fails_only_its_own_request() -> None:
    """A server bug staged in a real server (in a thread): one handler returns what msgpack cannot encode."""
    listener = bind_listener("127.0.0.1", 0)
    assert listener is not None
    hosted = HostedServer(listener, token=TOKEN.encode())
    hosted.server._handlers["ping"] = lambda session, req_id, args: 2**70
    store = TcpStore("127.0.0.1", hosted.address[1], token=TOKEN, is_host="0", timeout=5)
    try:
        store.put("before", b"1")
        with pytest.raises(StoreError, match="the reply could not be encoded"):
            store._call("ping", [])
        assert store.get("before").value == b"1"  # type: ignore[union-attr]  # same connection, still fine
        assert store.server_stats()["internal_errors"] == 1
    finally:
        store.close()
        hosted.close()
