"""No starvation: floods of unauthenticated connections and brute-force logins, from other addresses.

The hostile client runs as its own process on other loopback addresses
(127.0.0.2 and up: other peers as far as the server can tell) while honest
clients connect from 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rdzv.registry import open_store
from rdzv.store.tcp.admission import Admission, LogLimiter
from rdzv.store.tcp.client import TcpStore
from rdzv.testing.servers import ServerProcess, serve_process

TOKEN = "admission-token-5a"
HOSTILE = Path(__file__).parent / "programs" / "hostile_client.py"


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    limits = [
        "--max-connections",
        "32",
        "--max-unauthenticated",
        "64",
        "--max-unauthenticated-per-peer",
        "16",
    ]
    with serve_process(token=TOKEN, args=limits) as running:
        yield running


def _hostile(*args: object) -> subprocess.Popen[str]:
    command = [sys.executable, str(HOSTILE), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen[str], *, stop: bool = False) -> dict[str, float]:
    if stop:
        process.terminate()  # it reports what it managed and exits
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    result: dict[str, float] = json.loads(out)
    return result


def _in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_new_clients_are_served_during_a_flood_of_unauthenticated_connections(server: ServerProcess) -> None:
    sources = [f"127.0.0.{i}" for i in range(2, 10)]
    flood = _hostile("slots", server.port, 60, 400, *sources)
    try:
        probe = TcpStore.from_url(server.url + "&timeout=10")
        try:  # until the flood fills the budget
            deadline = time.monotonic() + 10
            while probe.server_stats()["unauthenticated"] < 64 and time.monotonic() < deadline:
                time.sleep(0.05)  # polling a counter of another process: no event to wait on
            assert probe.server_stats()["unauthenticated"] == 64
        finally:
            probe.close()

        def new_client(i: int) -> None:  # within --max-connections 32
            with open_store(server.url + "&timeout=10") as store:
                store.put(f"served/{i}", b"yes")

        started = time.monotonic()
        errors = _in_threads(16, new_client)
        took = time.monotonic() - started
    finally:
        stats = _result(flood, stop=True)
    assert errors == []
    with open_store(server.url) as check:
        assert len(check.list("served/")) == 16
    assert stats["closed_by_server"] > 0  # the flood filled the budget (above) and was pushed back
    print(f"16/16 new clients served in {took:.2f} s during a flood ({stats})")


def test_a_brute_force_loop_is_throttled_and_logged_once_per_interval(server: ServerProcess) -> None:
    attacker = _hostile("brute", server.port, 3, "127.0.0.3")
    with open_store(server.url + "&timeout=5") as honest:  # another address: not slowed down
        started = time.monotonic()
        for i in range(20):
            honest.put(f"honest/{i}", b"1")
        assert time.monotonic() - started < 15  # not throttled (a throttled handshake waits seconds)
    result = _result(attacker)
    assert result["refused"] == result["attempts"]
    assert result["per_second"] < 10  # unthrottled, one process managed thousands per second
    lines = [line for line in server.log_text().splitlines() if "127.0.0.3" in line]
    assert "authentication failed" in lines[0]
    assert all("more in the last 10 s" in line for line in lines[1:]), lines  # one per 10 s at most
    print(f"brute force throttled to {result['per_second']:.1f} attempts/s ({result})")


def test_log_limiter_sums_up_each_interval_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    timers: list[Callable[[], None]] = []
    limiter = LogLimiter(logging.getLogger("test.limiter"), 10.0, lambda _, fire: timers.append(fire))
    with caplog.at_level(logging.WARNING, "test.limiter"):
        for i in range(500):
            limiter.warning("10.0.0.9", f"attempt {i} failed")
        timers.pop(0)()  # the interval ends while attempts go on
        limiter.warning("10.0.0.9", "attempt 500 failed")
        timers.pop(0)()
        timers.pop(0)()  # a quiet interval: nothing to say, and the window closes
    assert [r.getMessage() for r in caplog.records] == [
        "attempt 0 failed",
        "10.0.0.9: 499 more in the last 10 s (last: attempt 499 failed)",
        "10.0.0.9: 1 more in the last 10 s (last: attempt 500 failed)",
    ]
    assert timers == []


def test_admission_closes_the_oldest_of_the_most_crowded_address() -> None:
    admission: Admission[str] = Admission(budget=3, per_peer=3)
    assert admission.enter("a", "a1") == []
    assert admission.enter("a", "a2") == []
    assert admission.enter("a", "a3") == []
    assert admission.enter("a", "a4") == ["a1"]  # per-address cap
    assert admission.enter("b", "b1") == ["a2"]  # budget: the crowded address pays, not b
    admission.leave("b", "b1")  # authenticated: no longer counted
    assert len(admission) == 2


def test_failed_authentications_space_out_an_address_with_growing_delays() -> None:
    admission: Admission[str] = Admission(budget=4, per_peer=3)
    now = 100.0
    assert admission.hello_delay("x", now) == 0.0
    delays = []
    for _ in range(8):
        admission.failed("x", now)
        delays.append(admission.hello_delay("x", now))
        now += delays[-1]
        assert admission.hello_delay("x", now) == 0.0
        admission.hello_sent("x", now)
        assert admission.hello_delay("x", now) == delays[-1]  # the next handshake waits its turn
    assert delays == sorted(delays)
    assert delays[0] > 0
    assert delays[-1] == 2.0
    assert admission.hello_delay("y", now) == 0.0  # other addresses are not slowed
    assert admission.hello_delay("x", now + 61) == 0.0  # forgiven after a quiet minute
