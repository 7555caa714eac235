"""A worker's output: to the console with its rank in front, to its log file, and a tail kept.

One thread per stream copies lines as they come; the console and each file are
written under a lock so that lines of different workers never interleave.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import IO, BinaryIO

__all__ = ["Console", "StreamPump"]

TAIL_LINES = 20


class Console:
    """Where workers' lines go on this node: the agent's stdout and stderr, shared and locked."""

    def __init__(self, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self._lock = threading.Lock()

    def write(self, stream: BinaryIO, data: bytes) -> None:
        """Write a line; a console that went away (a closed pipe) drops it rather than stall workers."""
        with self._lock, contextlib.suppress(OSError, ValueError):
            stream.write(data)
            stream.flush()


class StreamPump:
    """Copies one pipe, line by line, until it closes."""

    def __init__(
        self,
        pipe: IO[bytes],
        *,
        console: Console | None,
        sink: BinaryIO | None,
        prefix: bytes,
        log: BinaryIO | None,
        log_lock: threading.Lock,
        keep_tail: bool,
    ) -> None:
        self._pipe = pipe
        self._console = console
        self._sink = sink
        self._prefix = prefix
        self._log = log
        self._log_lock = log_lock
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES if keep_tail else 0)
        self._thread = threading.Thread(target=self._copy, daemon=True, name="rdzv-worker-output")
        self._thread.start()

    def _copy(self) -> None:
        try:
            for line in iter(self._pipe.readline, b""):
                self._take(line if line.endswith(b"\n") else line + b"\n")
        except (OSError, ValueError):
            pass  # the pipe or a sink went away: nothing left to copy
        finally:
            self._pipe.close()

    def _take(self, line: bytes) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.write(line)
                self._log.flush()
        if self._console is not None and self._sink is not None:
            self._console.write(self._sink, self._prefix + line)
        if self.tail.maxlen:
            self.tail.append(line.decode(errors="replace").rstrip("\n"))

    def join(self, timeout: float) -> None:
        """Wait for the rest of the output (a grandchild holding the pipe may keep it open)."""
        self._thread.join(timeout)
