"""Hostile or broken traffic closes only the offending connection; data and other clients survive."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from rdzv.errors import StoreError
from rdzv.registry import open_store
from rdzv.store.base import Store
from rdzv.store.tcp import protocol as p
from rdzv.testing.servers import ServerProcess, serve_process

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


def _authenticated(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    (size,) = p.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))
    hello = p.decode(sock.recv(size, socket.MSG_WAITALL))
    cnonce = os.urandom(32)
    sock.sendall(p.encode({"mac": p.client_mac(TOKEN.encode(), hello["nonce"], cnonce), "cnonce": cnonce}))
    (size,) = p.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))
    assert p.decode(sock.recv(size, socket.MSG_WAITALL))["ok"]
    return sock


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
    with _authenticated(server.port) as sock:
        sock.sendall(p.HEADER.pack(5) + b"\xc1\xc1\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        assert _error_kind(_read_until_closed(sock)) == p.KIND_PROTOCOL
    _assert_intact(server, good)


def test_wrongly_shaped_request_closes_that_connection(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as sock:
        sock.sendall(p.encode([1, "put", ["data/0"]]))  # missing the value
        assert _error_kind(_read_until_closed(sock)) == p.KIND_PROTOCOL
    _assert_intact(server, good)


def test_huge_length_prefix_is_refused_without_reading_it(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as sock:
        sock.sendall(p.HEADER.pack(0xFFFFFFFF) + b"x" * 100)
        assert _error_kind(_read_until_closed(sock)) == p.KIND_PROTOCOL
    assert "exceeds the limit of 65536 bytes" in server.log_text()
    _assert_intact(server, good)


def test_half_sent_frame_then_disconnect_loses_nothing(server: ServerProcess, good: Store) -> None:
    with _authenticated(server.port) as sock:
        frame = p.encode([1, "put", ["data/0", b"half", None]])
        sock.sendall(frame[: len(frame) // 2])
    with _authenticated(server.port) as idle:
        idle.sendall(frame[:3])  # a truncated header, left hanging while others work
        _assert_intact(server, good)


def test_oversized_value_is_refused_and_the_connection_stays_usable(good: Store) -> None:
    with pytest.raises(StoreError, match="value of 2048 bytes exceeds 1024"):
        good.put("big", b"x" * 2048)
    assert good.get("data/1").value == b"value-1"  # type: ignore[union-attr]


def test_connections_beyond_the_limit_are_refused_and_others_keep_working(
    server: ServerProcess, good: Store
) -> None:
    flood = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    try:
        good.put("during", b"flood")  # an admitted connection is unaffected
        refused = 0
        for sock in flood[8:]:
            data = _read_until_closed(sock)
            refused += _error_kind(data) == p.KIND_BUSY
        assert refused == 12
    finally:
        for sock in flood:
            sock.close()
    assert "too many connections (limit 8)" in server.log_text()
    _assert_intact(server, good)
