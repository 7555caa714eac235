"""Candidate hosts in a tcp:// URL: parsing, and who hosts at start."""

from __future__ import annotations

import pytest

from rdzv.errors import ConfigurationError
from rdzv.registry import open_store
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.net import free_port

TOKEN = "failover-token"


def test_candidates_parse_in_order_and_mark_the_store_as_one_that_may_fail_over() -> None:
    store = TcpStore.from_url("tcp://127.0.0.1:7001,[::1]:7002, h3:7003?is_host=0&timeout=1")
    assert store.url == "tcp://127.0.0.1:7001,[::1]:7002,h3:7003"
    assert store.address == ("127.0.0.1", 7001)
    assert store.capabilities.failover
    assert not TcpStore.from_url("tcp://127.0.0.1:7001?is_host=0").capabilities.failover


@pytest.mark.parametrize("url", ["tcp://h1:1,:2", "tcp://h1:1,h2", "tcp://h1:1,h2:http", "tcp://h1:1,"])
def test_a_bad_candidate_is_a_configuration_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not HOST:PORT"):
        TcpStore.from_url(url)


def test_a_node_starting_while_a_later_candidate_serves_joins_it_instead_of_hosting_the_first() -> None:
    first, second = free_port(), free_port("127.0.0.2")
    with TcpStore("127.0.0.2", second, token=TOKEN, is_host="1") as serving:
        serving.put("k", b"on the second host")
        url = f"tcp://127.0.0.1:{first},127.0.0.2:{second}?token={TOKEN}"
        with open_store(url) as late:
            assert isinstance(late, TcpStore)
            assert late.hosted is None
            entry = late.get("k")
            assert entry is not None
            assert entry.value == b"on the second host"
            assert late.address == ("127.0.0.2", second)


def test_with_no_later_candidate_serving_the_node_at_the_first_hosts() -> None:
    url = f"tcp://127.0.0.1:{free_port()},127.0.0.2:{free_port('127.0.0.2')}?token={TOKEN}"
    with open_store(url) as first, open_store(url) as other:
        assert isinstance(first, TcpStore)
        assert isinstance(other, TcpStore)
        assert first.hosted is not None
        assert other.hosted is None
        other.put("k", b"v")
        assert first.get("k") is not None
