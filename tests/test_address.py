"""Where a node says it can be reached: its host by route, its coordinator port held until used."""

from __future__ import annotations

import socket

import pytest

from rdzv.errors import ConfigurationError
from rdzv.rendezvous.address import PortReservation, route_host, split_addr, store_host


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://10.1.2.3:29400?token=x", ("10.1.2.3", 29400)),
        ("etcd://user:pw@h1:2379,h2:2379/prefix", ("h1", 2379)),
        ("tcp://[fd00::1]:29400", ("fd00::1", 29400)),
        ("file:///shared/rdzv", None),
        ("memory://x", None),
    ],
)
def test_store_host_is_the_first_host_a_url_names(url: str, expected: tuple[str, int] | None) -> None:
    assert store_host(url) == expected


def test_route_to_a_loopback_store_is_loopback() -> None:
    assert route_host("tcp://127.0.0.1:29400") == "127.0.0.1"


def test_route_without_a_store_host_is_still_an_address() -> None:
    assert route_host("file:///shared/rdzv")


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("h", ("h", None)), ("h:80", ("h", 80)), ("[::1]:80", ("::1", 80)), ("fd00::1", ("fd00::1", None))],
)
def test_split_addr(addr: str, expected: tuple[str, int | None]) -> None:
    assert split_addr(addr) == expected


def test_split_addr_names_a_bad_port() -> None:
    with pytest.raises(ConfigurationError, match="PORT in 1-65535"):
        split_addr("h:99999")


def test_a_held_port_refuses_others_admits_reuseaddr_servers_and_frees_on_release() -> None:
    held = PortReservation()
    port = held.take()
    assert held.take() == port
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("", port))
    with socket.socket() as server:  # torch's TCPStore and asyncio servers set SO_REUSEADDR
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("", port))
        server.listen()
    held.release()
    with socket.socket() as after:
        after.bind(("", port))
