"""The store each benchmark run talks to, started fresh for the run and stopped after it.

``tcp`` is a real ``rdzv serve`` subprocess on a free loopback port with a
random token; ``etcd`` a one-member etcd (``rdzv.testing.etcd``); ``file`` a
fresh temporary directory; ``memory`` a named in-process store (its nodes then
run in the harness process); ``torch`` a ``TCPStore`` server subprocess for
torch's c10d rendezvous.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rdzv.errors import ConfigurationError, StoreUnavailableError

__all__ = ["STORES", "StoreHost", "cpu_seconds_of", "peak_rss_of", "start_store", "start_torch_store"]

STORES = ("tcp", "etcd", "file", "memory")


@dataclass
class StoreHost:
    """A store for one run: where to reach it, which process serves it, how to stop it."""

    kind: str
    url: str
    pid: int | None
    """The serving process, measured for peak memory; ``None`` when there is none."""
    stop: Callable[[], None]

    @property
    def in_process(self) -> bool:
        """Nodes must run in the harness process (the memory store)."""
        return self.kind == "memory"

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else cpu_seconds_of(self.pid)

    def peak_rss_mib(self) -> float | None:
        return None if self.pid is None else peak_rss_of(self.pid)


def peak_rss_of(pid: int) -> float | None:
    """Peak resident memory of a live process in MiB, from ``/proc`` (Linux)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds_of(pid: int) -> float | None:
    """CPU time a live process has used so far: the nanosecond run time of its threads from
    ``/proc/PID/task/*/schedstat`` (Linux), else user plus system time in clock ticks."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        total = 0
        for task in tasks:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
                total += int(schedstat.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_store(kind: str, nodes: int = 0) -> StoreHost:
    """A fresh, empty store of ``kind`` (one of :data:`STORES`) for ``nodes`` nodes.

    The tcp server's handshake budgets are raised to ``nodes``: every simulated
    node connects from 127.0.0.1 at the same moment, where deployed nodes come
    from as many addresses (the per-address cap is meant for a flood from one).
    """
    if kind == "tcp":
        from rdzv.testing.servers import start_server

        budget = str(max(nodes + 16, 256))
        args = ["--log-level", "warning", "--max-unauthenticated", budget]
        server = start_server(
            token=secrets.token_hex(16), args=[*args, "--max-unauthenticated-per-peer", budget]
        )
        return StoreHost(kind, server.url, server.process.pid, lambda: _stop_server(server.stop))
    if kind == "etcd":
        from rdzv.testing.etcd import EtcdCluster  # needs httpx (the etcd extra) and an etcd binary

        cluster = EtcdCluster(1).start()
        process = cluster.members[0].process
        pid = process.pid if process is not None else None
        return StoreHost(kind, cluster.url(f"bench-{uuid.uuid4().hex[:8]}"), pid, cluster.close)
    if kind == "file":
        path = tempfile.mkdtemp(prefix="rdzv-bench-")
        return StoreHost(kind, f"file://{path}", None, lambda: shutil.rmtree(path, ignore_errors=True))
    if kind == "memory":
        return StoreHost(kind, f"memory://bench-{uuid.uuid4().hex}", None, lambda: None)
    raise ConfigurationError(f"unknown benchmark store {kind!r}; choose from {', '.join(STORES)}")


def _stop_server(stop: Callable[[], int]) -> None:
    stop()


def start_torch_store() -> StoreHost:
    """A torch ``TCPStore`` server in its own process; its URL is ``HOST:PORT``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rdzv.bench.torch_runner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.isdigit():
        process.kill()
        process.wait()
        raise StoreUnavailableError(f"torch TCPStore server did not start (said {line!r})")

    def stop() -> None:
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    return StoreHost("torch", f"127.0.0.1:{line}", process.pid, stop)
