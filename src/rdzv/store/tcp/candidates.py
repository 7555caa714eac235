"""Candidate hosts of ``tcp://H1:P1,H2:P2,...``: parsing, and who serves after a failure.

The candidates are tried in order. A node hosts the first candidate at start
(``is_host=auto``, as with one host) unless a later candidate already serves:
a job that failed over keeps its new host when the first one comes back. After
losing the server of candidate ``i``, a client scans the candidates in order
and connects to the first that answers; a node that can bind a later candidate
``j > i`` starts serving it, the candidate right after ``i`` at once and each
further one ``FAILOVER_STEP`` seconds later, so that the nearest live candidate
wins. The new server starts empty; the nodes rebuild it
(``rdzv.rendezvous.recovery``). No replication, no consensus: the split-brain
guard keeps two hosts that serve at once from both running the job.
"""

from __future__ import annotations

import socket

from rdzv.errors import ConfigurationError

__all__ = ["FAILOVER_STEP", "PROBE_TIMEOUT", "parse_hosts", "serving"]

FAILOVER_STEP = 1.0
"""Seconds a further candidate waits for a nearer one before it starts serving."""
PROBE_TIMEOUT = 1.0
"""Longest connect attempt to one candidate when there are several (a dead host may not answer)."""


def parse_hosts(netloc: str, url: str) -> list[tuple[str, int]]:
    """``H1:P1,[V6]:P2`` -> ``[(H1, P1), (V6, P2)]``; names the bad part of ``url``."""
    hosts: list[tuple[str, int]] = []
    for part in netloc.split(","):
        part = part.strip()
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigurationError(
                f"store URL {url!r}: {part!r} is not HOST:PORT; "
                "expected tcp://HOST:PORT or candidates tcp://H1:P1,H2:P2"
            )
        hosts.append((host, int(port)))
    return hosts


def serving(address: tuple[str, int]) -> bool:
    """Whether something accepts connections at ``address`` (a short probe)."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT):
            return True
    except OSError:
        return False
