"""The store contract on the TCP store: a real ``rdzv serve`` process, and a node-hosted server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rdzv.store.tcp.client import TcpStore
from rdzv.testing.contract import StoreContract
from rdzv.testing.servers import serve_process


class TestServeProcessContract(StoreContract):
    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        with serve_process(token="contract-token") as server:
            yield server.url


class TestHostedContract(StoreContract):
    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        with TcpStore("127.0.0.1", 0, token="hosted-token", is_host="1") as host:
            assert host.hosted is not None
            # is_host=auto: these handles find the port taken and connect as clients
            yield f"{host.url}?token=hosted-token"
