"""Prometheus metrics of the embedded store server (the optional ``metrics`` extra).

``rdzv serve --metrics-port P`` (or ``?metrics_port=P`` on a hosting node's URL)
serves them over HTTP at ``/metrics``. Two kinds of figures:

* counted in the event loop as they happen: operations by type with their
  processing-time histogram (``op`` is one of the protocol's operations or
  ``other``), bytes in and out, authentication failures;
* read at scrape time, from a snapshot the event loop takes (the server's state
  lives in that thread): connections (``state`` ``authenticated`` or
  ``handshake``), waiters, leases, keys, and per run (``run`` label) what a
  :class:`RunObserver` reports.

Labels stay bounded: no label names a node or a connection, ``op`` has a fixed
set of values, and at most :data:`MAX_RUNS` runs (the most recently active)
are reported. Nothing secret is exported: no key, value or token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rdzv.errors import ConfigurationError
from rdzv.store.keyspace import KeySpace

if TYPE_CHECKING:
    from rdzv.store.tcp.server import StoreServer

__all__ = ["MAX_RUNS", "RunFigures", "RunObserver", "ServerMetrics"]

MAX_RUNS = 64
"""Most runs reported (label ``run``), the most recently active first."""
SNAPSHOT_TIMEOUT = 5.0
"""Seconds a scrape waits for the event loop's snapshot before reporting without it."""
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)


@dataclass(frozen=True)
class RunFigures:
    """One run's state, as a :class:`RunObserver` reads it from the keyspace."""

    run_id: str
    round: int
    members: int
    """Members of the current round whose lease is alive."""
    waiting: int
    """Nodes waiting for the next round (spares of a full round not counted)."""
    rounds_completed: int
    """Rounds this server saw complete."""
    members_lost: int
    """Members whose rank key vanished while this server watched (died or left)."""
    last_rendezvous: float | None
    """Wall-clock time (``time.time()``) the newest round completed, if seen."""


class RunObserver(Protocol):
    """What the rendezvous layer tells the store's metrics about runs (called in the loop)."""

    def changed(self, keys: KeySpace, changed: Sequence[str]) -> None:
        """``changed`` keys were just written or deleted."""

    def figures(self, keys: KeySpace) -> list[RunFigures]:
        """The runs to report, at most :data:`MAX_RUNS`."""


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError("metrics need prometheus-client: pip install 'rdzv[metrics]'") from exc
    return prometheus_client


class ServerMetrics:
    """The server's metrics registry, its HTTP endpoint, and the hooks the server calls."""

    def __init__(self, *, runs: RunObserver | None = None) -> None:
        prometheus = _prometheus()
        self.runs = runs
        """Per-run figures; set later by a node that hosts the server (``rdzv.rendezvous``)."""
        self._ops: frozenset[str] = frozenset()
        self._server: StoreServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: Any = None
        self.url: str | None = None
        """``http://HOST:PORT/metrics`` once served."""
        self.registry = prometheus.CollectorRegistry()
        self._latency = prometheus.Histogram(
            "rdzv_store_operation_seconds",
            "Server-side processing time of store operations, by operation.",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self, prometheus))

    def bind(self, server: StoreServer, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the server once its loop runs: where snapshots are taken."""
        self._server, self._loop = server, loop
        self._ops = frozenset(server.operations)

    def observe(self, op: str, seconds: float) -> None:
        self._latency.labels(op if op in self._ops else "other").observe(seconds)

    def changed(self, keys: KeySpace, changed: Sequence[str]) -> None:
        if self.runs is not None:
            self.runs.changed(keys, changed)

    # -- HTTP -------------------------------------------------------------------

    def serve_http(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; the bound address."""
        prometheus = _prometheus()
        try:
            self._http, _ = prometheus.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        address = self._http.server_address
        self.url = f"http://{address[0]}:{address[1]}/metrics"
        return str(address[0]), int(address[1])

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    # -- snapshots --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any] | None:
        """The server's state, read in its event loop; ``None`` if the loop did not answer."""
        server, loop = self._server, self._loop
        if server is None or loop is None or loop.is_closed():
            return None
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def take() -> None:
            try:
                future.set_result(self._take(server))
            except Exception as exc:  # handed to the scraping thread, which reports it
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(take)
            return future.result(SNAPSHOT_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            return None

    def _take(self, server: StoreServer) -> dict[str, Any]:
        authenticated = sum(1 for s in server.sessions if s.ready)
        return {
            "connections": {
                "authenticated": authenticated,
                "handshake": len(server.sessions) - authenticated,
            },
            "waiters": len(server.waiters),
            "leases": server.keys.lease_count,
            "keys": len(server.keys),
            "revision": server.keys.revision,
            "bytes_in": server.bytes_in,
            "bytes_out": server.bytes_out,
            "auth_failures": server.auth_failures,
            "stalled": server.stalled_total,
            "runs": self.runs.figures(server.keys)[:MAX_RUNS] if self.runs is not None else [],
        }


class _StateCollector:
    """Gauges and counters read from a snapshot at each scrape."""

    def __init__(self, metrics: ServerMetrics, prometheus: Any) -> None:
        self._metrics = metrics
        self._family = prometheus.metrics_core

    def describe(self) -> list[Any]:
        return []  # the families depend on the snapshot; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        snap = self._metrics.snapshot()
        if snap is None:
            return
        family = self._family
        connections = family.GaugeMetricFamily(
            "rdzv_store_connections", "Open client connections, by handshake state.", labels=["state"]
        )
        for state, count in snap["connections"].items():
            connections.add_metric([state], count)
        yield connections
        for name, text in (
            ("waiters", "Blocked wait requests."),
            ("leases", "Live leases."),
            ("keys", "Stored keys."),
            ("revision", "The store's newest revision."),
        ):
            yield family.GaugeMetricFamily(f"rdzv_store_{name}", text, value=snap[name])
        for name, text in (
            ("bytes_in", "Bytes received from clients."),
            ("bytes_out", "Bytes sent to clients."),
            ("auth_failures", "Connections refused for a missing or wrong token, or no handshake."),
            ("stalled_seconds", "Event-loop stall given back to the leases."),
        ):
            value = snap["stalled" if name == "stalled_seconds" else name]
            yield family.CounterMetricFamily(f"rdzv_store_{name}", text, value=value)
        yield from _run_families(family, snap["runs"])


def _run_families(family: Any, runs: list[RunFigures]) -> Iterator[Any]:
    gauges = {
        "round": family.GaugeMetricFamily("rdzv_run_round", "Current round number.", labels=["run"]),
        "members": family.GaugeMetricFamily("rdzv_run_members", "Live members of the round.", labels=["run"]),
        "waiting": family.GaugeMetricFamily(
            "rdzv_run_nodes_waiting", "Nodes waiting for the next round.", labels=["run"]
        ),
        "last": family.GaugeMetricFamily(
            "rdzv_run_last_rendezvous_timestamp_seconds", "When the newest round completed.", labels=["run"]
        ),
    }
    completed = family.CounterMetricFamily(
        "rdzv_run_rounds_completed", "Rounds completed while this server ran.", labels=["run"]
    )
    lost = family.CounterMetricFamily(
        "rdzv_run_members_lost", "Members lost (died or left) while this server ran.", labels=["run"]
    )
    for run in runs:
        gauges["round"].add_metric([run.run_id], run.round)
        gauges["members"].add_metric([run.run_id], run.members)
        gauges["waiting"].add_metric([run.run_id], run.waiting)
        if run.last_rendezvous is not None:
            gauges["last"].add_metric([run.run_id], run.last_rendezvous)
        completed.add_metric([run.run_id], run.rounds_completed)
        lost.add_metric([run.run_id], run.members_lost)
    yield from gauges.values()
    yield completed
    yield lost
