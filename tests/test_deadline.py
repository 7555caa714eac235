"""``rdzv.store.deadline``: a caller's deadline bounds every store call in its block."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdzv.errors import StoreTimeoutError
from rdzv.registry import open_store
from rdzv.store.base import Store
from rdzv.store.deadline import bounded, current_deadline, time_left
from rdzv.testing.faultproxy import FaultProxy, Mode
from rdzv.testing.servers import ServerProcess, serve_process


def test_blocks_nest_the_earliest_deadline_wins_and_each_thread_has_its_own() -> None:
    assert current_deadline() is None
    now = time.monotonic()
    with bounded(now + 10) as outer:
        assert outer == now + 10
        with bounded(now + 20) as inner:
            assert inner == now + 10
        with bounded(now + 5):
            assert current_deadline() == now + 5
            assert time_left(30) <= 5
            seen: list[float | None] = []
            thread = threading.Thread(target=lambda: seen.append(current_deadline()))
            thread.start()
            thread.join()
            assert seen == [None]
        assert current_deadline() == now + 10
    assert current_deadline() is None
    assert time_left(3) == 3


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with serve_process(token="deadline") as running:
        yield running


@pytest.fixture
def store(server: ServerProcess) -> Iterator[Store]:
    with open_store(server.url) as opened:  # 30 s per operation
        yield opened


def test_a_tcp_wait_ends_by_the_callers_deadline_not_its_own_timeout(store: Store) -> None:
    since = store.put("d/x", b"1")
    start = time.monotonic()
    with bounded(start + 0.5):
        assert store.wait("d/", since, 30) is None
    assert time.monotonic() - start < 2.0


def test_a_tcp_call_to_a_silent_server_ends_by_the_callers_deadline(server: ServerProcess) -> None:
    with FaultProxy() as proxy:
        link = proxy.link("client->server", (server.host, server.port))
        with open_store(f"tcp://127.0.0.1:{link.port}?token=deadline&is_host=0") as store:
            store.put("d/y", b"1")
            link.set_mode(Mode.BLACKHOLE)
            start = time.monotonic()
            with bounded(start + 0.5), pytest.raises(StoreTimeoutError):
                store.get("d/y")
            assert time.monotonic() - start < 2.0
            link.set_mode(Mode.REJECT)  # close() then fails fast


def test_a_file_wait_ends_by_the_callers_deadline(tmp_path: Path) -> None:
    with open_store(f"file://{tmp_path}") as store:
        since = store.put("x", b"1")
        start = time.monotonic()
        with bounded(start + 0.3):
            assert store.wait("", since, 30) is None
        assert time.monotonic() - start < 2.0
