"""Node processes for the recovery tests (``recovery_worker.py``), and reading their events."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("recovery_worker.py")
PATIENCE = 60.0
Event = dict[str, Any]


class Node:
    """One ``recovery_worker.py`` process; a thread files its events in order."""

    def __init__(
        self, url: str, run_id: str, node_id: str, low: int, high: int, *,
        heartbeat: float = 0.5, join_timeout: float = 60.0, guard: bool = True,
    ) -> None:  # fmt: skip
        self.node_id = node_id
        args = [url, run_id, str(low), str(high), str(heartbeat), node_id, str(join_timeout), str(int(guard))]
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.events: list[Event] = []
        self._news: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._news.put(json.loads(line))
        self._news.put(None)

    def next_event(self, match: Callable[[Event], bool], deadline: float) -> Event:
        """The first event from now on that ``match`` accepts (all are kept in ``events``)."""
        while True:
            try:
                event = self._news.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(f"node {self.node_id}: no matching event; saw {self.events}") from None
            if event is None:
                raise AssertionError(f"node {self.node_id} exited ({self.proc.wait(5)}); saw {self.events}")
            self.events.append(event)
            if match(event):
                return event

    def drain(self) -> list[Event]:
        """Events that arrived so far, appended to ``events``."""
        while True:
            try:
                event = self._news.get_nowait()
            except queue.Empty:
                return self.events
            if event is not None:
                self.events.append(event)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def placed(round_: int | None = None) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "placed" and (round_ is None or e["round"] == round_)


def event(kind: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == kind


def each(nodes: list[Node], match: Callable[[Event], bool], patience: float = PATIENCE) -> list[Event]:
    deadline = time.monotonic() + patience
    return [node.next_event(match, deadline) for node in nodes]


@contextmanager
def node_group(url: str, run_id: str, count: int, low: int, high: int, **kwargs: Any) -> Iterator[list[Node]]:
    nodes = [Node(url, run_id, f"n{i}", low, high, **kwargs) for i in range(count)]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.kill()
