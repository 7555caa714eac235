"""``file://`` shared by real processes: counters, CAS races, crashed lease holders, waiters."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rdzv.store.file.store import FileStore

WORKER = Path(__file__).with_name("file_store_worker.py")
PATIENCE = 20.0

pytestmark = pytest.mark.timeout(60)


class Worker:
    """A worker process whose stdout lines are read by a thread into a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def message(self, timeout: float = PATIENCE) -> dict[str, Any]:
        line = self._lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(f"worker {self.proc.args} exited with {self.proc.wait(PATIENCE)}")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PATIENCE)
        self._reader.join(PATIENCE)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(*args: str) -> Worker:
        started.append(Worker(*args))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}?poll=0.05&create=1"


def _start_together(workers: list[Worker]) -> None:
    for worker in workers:
        assert worker.message() == {"ready": True}
    for worker in workers:
        worker.send("go")


def test_adds_from_eight_processes_lose_no_increment(spawn: Callable[..., Worker], url: str) -> None:
    workers = [spawn("add", url, "25") for _ in range(8)]
    _start_together(workers)
    for worker in workers:
        assert worker.message() == {"done": True}
    with FileStore.from_url(url) as store:
        assert store.add("counter", 0) == 200


def test_cas_race_between_eight_processes_has_exactly_one_winner(
    spawn: Callable[..., Worker], url: str
) -> None:
    workers = [spawn("cas", url) for _ in range(8)]
    _start_together(workers)
    won = {worker.proc.pid: worker.message()["won"] for worker in workers}
    assert sorted(won.values()) == [False] * 7 + [True]
    with FileStore.from_url(url) as store:
        entry = store.get("race")
        assert entry is not None
        assert won[int(entry.value)] is True


def test_lease_of_a_sigkilled_holder_expires_and_its_keys_vanish(
    spawn: Callable[..., Worker], url: str
) -> None:
    ttl = 1.5  # generous: the holder must keep refreshing on a loaded machine
    holder = spawn("hold", url, str(ttl))
    since = holder.message()["revision"]
    with FileStore.from_url(url) as observer:
        assert observer.get("held/key") is not None
        # While the holder refreshes, nothing changes for longer than the ttl.
        assert observer.wait("held/", since, ttl + 0.5) is None
        assert observer.get("held/key") is not None
        holder.proc.send_signal(signal.SIGKILL)
        holder.proc.wait(PATIENCE)
        killed_at = time.monotonic()
        assert observer.wait("held/", since, PATIENCE) is not None
        assert observer.get("held/key") is None
        assert time.monotonic() - killed_at < ttl + 5.0  # slack for a loaded machine; not a hang


def test_waiter_in_one_process_is_woken_by_a_put_in_another(spawn: Callable[..., Worker], url: str) -> None:
    with FileStore.from_url(url) as store:
        since = store.put("w/old", b"x")
        waiter = spawn("wait", url, "w/", str(since))
        assert waiter.message() == {"waiting": True}
        revision = store.put("w/new", b"y")
        assert waiter.message() == {"revision": revision}


@pytest.mark.slow
def test_eight_processes_rendezvous_over_file_in_one_round(spawn: Callable[..., Worker], url: str) -> None:
    nodes = [spawn("rendezvous", url, "job-1", "8") for _ in range(8)]
    places = [node.message(timeout=50) for node in nodes]
    assert sorted(place["rank"] for place in places) == list(range(8))
    assert {(place["world_size"], place["round"]) for place in places} == {(8, places[0]["round"])}
    _start_together(nodes)
    for node in nodes:
        assert node.proc.wait(PATIENCE) == 0
