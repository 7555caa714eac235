"""The fault-staging proxy of rdzv.testing.faultproxy, against a real echo server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from rdzv.testing.faultproxy import FaultProxy, Mode


@contextlib.contextmanager
def echo_server(tag: bytes) -> Iterator[tuple[str, int]]:
    """A loopback server that answers every chunk with ``tag + chunk``."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(4096):
                conn.sendall(tag + data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conns.append(conn)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()
    finally:
        listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(4096)


def test_link_forwards_both_ways_and_counts_connections() -> None:
    with echo_server(b"A:") as upstream, FaultProxy() as proxy:
        link = proxy.link("c->a", upstream)
        with socket.create_connection(link.address, timeout=5) as sock:
            assert roundtrip(sock, b"hi") == b"A:hi"
            assert link.accepted == 1
            assert link.open_connections() == 1


def test_blackholed_flow_stays_open_silently_while_a_new_connection_passes() -> None:
    with echo_server(b"A:") as upstream, FaultProxy() as proxy:
        link = proxy.link("c->a", upstream)
        with socket.create_connection(link.address, timeout=5) as old:
            assert roundtrip(old, b"1") == b"A:1"
            link.blackhole_flows()
            old.settimeout(0.3)
            old.sendall(b"2")  # no error: the bytes just vanish
            with pytest.raises(TimeoutError):
                old.recv(4096)
            with socket.create_connection(link.address, timeout=5) as fresh:
                assert roundtrip(fresh, b"3") == b"A:3"
            assert link.open_connections() == 1  # the blackholed one is still open


def test_blackhole_mode_swallows_new_connections_too() -> None:
    with echo_server(b"A:") as upstream, FaultProxy() as proxy:
        link = proxy.link("c->a", upstream, mode=Mode.BLACKHOLE)
        with socket.create_connection(link.address, timeout=5) as sock:
            sock.settimeout(0.3)
            sock.sendall(b"x")
            with pytest.raises(TimeoutError):
                sock.recv(4096)


def test_reset_flows_sends_rst_to_the_client() -> None:
    with echo_server(b"A:") as upstream, FaultProxy() as proxy:
        link = proxy.link("c->a", upstream)
        with socket.create_connection(link.address, timeout=5) as sock:
            assert roundtrip(sock, b"1") == b"A:1"
            link.reset_flows()
            with pytest.raises(ConnectionResetError):
                roundtrip(sock, b"2")


def test_reject_mode_resets_new_connections_and_forward_heals() -> None:
    with echo_server(b"A:") as upstream, FaultProxy() as proxy:
        link = proxy.link("c->a", upstream)
        link.set_mode(Mode.REJECT)
        with pytest.raises(ConnectionError), contextlib.ExitStack() as stack:  # at connect or later
            roundtrip(stack.enter_context(socket.create_connection(link.address, timeout=5)), b"1")
        link.set_mode(Mode.FORWARD)
        with socket.create_connection(link.address, timeout=5) as sock:
            assert roundtrip(sock, b"2") == b"A:2"


def test_retarget_moves_new_connections_to_another_upstream() -> None:
    with echo_server(b"A:") as a, echo_server(b"B:") as b, FaultProxy() as proxy:
        link = proxy.link("c->x", a)
        other = proxy.link("d->x", a)
        with socket.create_connection(link.address, timeout=5) as old:
            link.retarget(b)
            with socket.create_connection(link.address, timeout=5) as new:
                assert roundtrip(new, b"1") == b"B:1"
            assert roundtrip(old, b"2") == b"A:2"
        with socket.create_connection(other.address, timeout=5) as sock:
            assert roundtrip(sock, b"3") == b"A:3"
