"""Real ``rdzv serve`` processes for tests and benchmarks.

::

    with serve_process(token="t") as server:
        store = open_store(server.url)

The server listens on a port it picks itself (``--port 0``) and reports it on
stdout; nothing is guessed and nothing polls. Its log goes to a file readable
with :meth:`ServerProcess.log_text`. Leaving the block stops it (SIGTERM, then
SIGKILL if it does not exit in time).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

__all__ = ["ServerProcess", "serve_process", "start_server"]

_LISTENING = re.compile(r"^rdzv serve: listening on (?P<host>\S+):(?P<port>\d+)$")
_METRICS = re.compile(r"^rdzv serve: metrics on (?P<url>http://\S+)$")


@dataclass
class ServerProcess:
    """A running ``rdzv serve`` subprocess."""

    process: subprocess.Popen[str]
    host: str
    port: int
    token: str | None
    _log: IO[str] = field(repr=False)
    metrics_url: str | None = None
    """``http://HOST:PORT/metrics`` when started with ``--metrics-port``."""

    @property
    def url(self) -> str:
        """A ``tcp://`` URL for clients (``is_host=0``: never host it themselves)."""
        query = f"?token={self.token}&is_host=0" if self.token else "?is_host=0"
        return f"tcp://{self.host}:{self.port}{query}"

    def log_text(self) -> str:
        """Everything the server logged so far."""
        self._log.flush()
        with open(self._log.name, encoding="utf-8", errors="replace") as log:
            return log.read()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server (as if its machine died)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _read_port(process: subprocess.Popen[str], timeout: float) -> tuple[str, int]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"rdzv serve did not report its port within {timeout} s")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"rdzv serve exited with status {process.wait(timeout)} before listening")
            match = _LISTENING.match(line.strip())
            if match:
                return match["host"], int(match["port"])


def _read_metrics_url(process: subprocess.Popen[str]) -> str:
    """The line right after the listening line (``rdzv serve`` prints it at once)."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    match = _METRICS.match(line)
    if not match:
        raise RuntimeError(f"rdzv serve did not report its metrics address (said {line!r})")
    return match["url"]


def start_server(
    *,
    token: str | None = "test-token",
    host: str = "127.0.0.1",
    port: int = 0,
    args: Sequence[str] = (),
    timeout: float = 20.0,
) -> ServerProcess:
    """Start ``rdzv serve`` on ``port`` (0: one it picks) and return once it listens."""
    command = [sys.executable, "-m", "rdzv", "serve", "--host", host, "--port", str(port), *args]
    env = {k: v for k, v in os.environ.items() if k != "RDZV_TOKEN"}
    if token is not None:
        env["RDZV_TOKEN"] = token  # through the environment: not visible in `ps`
    log = tempfile.NamedTemporaryFile("w+", prefix="rdzv-serve-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, bufsize=1)
    server = ServerProcess(process, host, 0, token, log)
    try:
        server.host, server.port = _read_port(process, timeout)
        if "--metrics-port" in args:
            server.metrics_url = _read_metrics_url(process)
    except BaseException:
        server.kill()
        server.stop()
        raise
    return server


@contextlib.contextmanager
def serve_process(**kwargs: object) -> Iterator[ServerProcess]:
    """``start_server(**kwargs)`` as a context manager that always stops it."""
    server = start_server(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
