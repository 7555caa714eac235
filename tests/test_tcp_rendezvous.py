"""Sixteen node processes rendezvous over a real ``rdzv serve`` on loopback."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdzv.rendezvous.node import Change, Rendezvous
from rdzv.testing.servers import ServerProcess, serve_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

NODE = Path(__file__).parent / "programs" / "rdzv_node.py"
NODES = 16
HEARTBEAT = 0.5
MISSES = 3  # rdzv_node.py uses heartbeat_misses=3
LAST_CALL = 3.0
PATIENCE = 45.0
TOKEN = "sixteen-nodes"


class Node:
    """One node process; a thread turns its stdout into timestamped events."""

    def __init__(self, url: str, node_id: str, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        self.node_id = node_id
        args = [url, "job", node_id, str(NODES - 1), str(NODES), str(HEARTBEAT), str(LAST_CALL)]
        self.proc = subprocess.Popen([sys.executable, str(NODE), *args], stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, args=(events,), daemon=True)
        self._reader.start()

    def _read(self, events: queue.Queue[tuple[str, dict[str, Any]]]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            events.put((self.node_id, json.loads(line)))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Events:
    """Events from every node, taken by kind; events of other kinds wait their turn."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._held: list[tuple[str, dict[str, Any]]] = []

    def take(self, kind: str, count: int) -> dict[str, dict[str, Any]]:
        """The next ``count`` events of ``kind``, by node."""
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + PATIENCE
        held, self._held = self._held, []
        while len(seen) < count:
            if held:
                node_id, event = held.pop(0)
            else:
                node_id, event = self.queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            if event["event"] == kind and node_id not in seen:
                seen[node_id] = event
            else:
                self._held.append((node_id, event))
        self._held.extend(held)
        return seen


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    with serve_process(token=TOKEN) as running:
        yield running


def test_sixteen_processes_form_a_round_survive_a_kill_and_close(server: ServerProcess) -> None:
    url = f"tcp://127.0.0.1:{server.port}?token={TOKEN}"
    events = Events()
    nodes = {f"node{i:02d}": Node(url, f"node{i:02d}", events.queue) for i in range(NODES)}
    try:
        first = events.take("round", NODES)
        assert sorted(e["rank"] for e in first.values()) == list(range(NODES))
        assert {e["world"] for e in first.values()} == {NODES}

        victim = next(n for n, e in first.items() if e["rank"] == 5)
        nodes[victim].stop()
        killed_at = time.monotonic()
        lost = events.take("change", NODES - 1)
        assert {e["change"] for e in lost.values()} == {Change.MEMBER_LOST}
        slowest = max(e["t"] for e in lost.values()) - killed_at
        # Generous slack for a loaded 2-core machine: the point is eviction by lease, not a hang.
        assert slowest < HEARTBEAT * MISSES + 5.0, f"eviction took {slowest:.2f} s"

        second = events.take("round", NODES - 1)
        assert victim not in second
        assert sorted(e["rank"] for e in second.values()) == list(range(NODES - 1))
        assert {e["round"] for e in second.values()} == {first[victim]["round"] + 1}

        with Rendezvous(url, "job", NODES - 1, NODES) as closer:
            closer.set_closed()
        events.take("closed", NODES - 1)
        for node_id, node in nodes.items():
            if node_id != victim:
                assert node.proc.wait(PATIENCE) == 0
    finally:
        for node in nodes.values():
            node.stop()
