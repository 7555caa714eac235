"""``rdzv bench``: rendezvous latency, traffic, failure detection and memory against node count."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from rdzv.bench.harness import CONNECTIONS, BenchConfig, run_rdzv, run_torch
from rdzv.bench.recovery import run_recovery
from rdzv.bench.report import machine, plot, summarize, table
from rdzv.bench.stores import STORES
from rdzv.bench.torch_runner import torch_available

__all__ = ["bench"]


def _node_counts(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected a comma-separated list of numbers, got {value!r}") from exc
    if not counts or any(n < 2 for n in counts):
        raise click.BadParameter("every node count must be at least 2")
    return counts


def _progress(system: str, n: int, repeat: int, result: dict[str, Any]) -> None:
    latency = result.get("latency_s")
    shown = "FAILED" if latency is None else f"{latency * 1000:,.0f} ms"
    errors = "; ".join(result.get("errors") or [])[:200]
    click.echo(f"  {system:<5} N={n:<5} #{repeat + 1}: {shown} {errors}", err=True)


def _measure(
    counts: list[int], repeat: int, cfg: BenchConfig, vs_torch: bool
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]], dict[int, list[dict[str, Any]]]]:
    ours: dict[int, list[dict[str, Any]]] = {}
    theirs: dict[int, list[dict[str, Any]]] = {}
    torch_failed_at: int | None = None
    for n in counts:
        ours[n], theirs[n] = [], []
        for i in range(repeat):
            result = run_rdzv(n, cfg)
            result["load_average"] = list(os.getloadavg())
            ours[n].append(result)
            _progress("rdzv", n, i, result)
            if vs_torch and torch_failed_at is None:  # interleaved with ours, same N
                torch = run_torch(n, cfg)
                theirs[n].append(torch)
                _progress("torch", n, i, torch)
                if torch["latency_s"] is None:
                    torch_failed_at = n  # larger N would only time out again
    rows = [summarize(n, ours[n], theirs[n]) for n in counts]
    return rows, ours, theirs


def _recovery(
    counts: list[int], repeat: int, cfg: BenchConfig, about: dict[str, Any], json_path: Path | None
) -> None:
    """The recovery scenario: kill the hosting node, time until every survivor is in a round."""
    runs = []
    for n in counts:
        for i in range(repeat):
            result = run_recovery(n, cfg)
            runs.append(result)
            figures = ", ".join(
                f"{key[:-2]} {result[key]:.2f} s" if result.get(key) is not None else f"{key[:-2]} FAILED"
                for key in ("rebuilt_s", "noticed_s", "recovered_s")
            )
            errors = "; ".join(result.get("errors") or [])[:200]
            click.echo(
                f"recovery N={n:<5} #{i + 1}: {figures} (target: lease ttl + 2 = {result['target_s']:.1f} s) "
                f"{errors}"
            )
    if json_path is not None:
        document = {"machine": about, "config": {**cfg.__dict__, "nodes": counts}, "recovery": runs}
        json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    if any(r.get("errors") or r.get("recovered_s") is None for r in runs):
        sys.exit(1)


@click.command()
@click.option(
    "--scenario", type=click.Choice(["rendezvous", "recovery"]), default="rendezvous", show_default=True,
    help="rendezvous: latency, traffic, detection against N; recovery: SIGKILL the node hosting "
    "a tcp store with a second candidate host, time until every survivor is back in a round.",
)  # fmt: skip
@click.option("--store", type=click.Choice(STORES), default="tcp", show_default=True, help="Store backend.")
@click.option(
    "--nodes", default="8,32,128,256,1024,4096", show_default=True, callback=_node_counts,
    help="Node counts N to measure (min_nodes = max_nodes = N).",
)  # fmt: skip
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1), help="Runs per N.")
@click.option("--vs-torch", is_flag=True, help="Also run torch's c10d rendezvous, interleaved.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="PNG plot here.")
@click.option(
    "--connections", type=click.Choice(CONNECTIONS), default="per-node", show_default=True,
    help="per-node: each node opens, connects and authenticates its own store client after the "
    "release, as deployed nodes do; shared: the nodes of a worker process share one client.",
)  # fmt: skip
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1), help="Node processes.")
@click.option("--heartbeat-interval", default=2.0, show_default=True, type=click.FloatRange(min=0.05))
@click.option("--heartbeat-misses", default=3, show_default=True, type=click.IntRange(1))
@click.option("--join-timeout", default=60.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--torch-timeout", default=30.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--steady-seconds", default=4.0, show_default=True, type=click.FloatRange(min=0.1))
def bench(
    scenario: str,
    store: str,
    nodes: list[int],
    repeat: int,
    vs_torch: bool,
    connections: str,
    json_path: Path | None,
    plot_path: Path | None,
    workers: int,
    heartbeat_interval: float,
    heartbeat_misses: int,
    join_timeout: float,
    torch_timeout: float,
    steady_seconds: float,
) -> None:
    """Simulate N nodes on this machine and measure one rendezvous against N.

    Nodes are threads, N/W in each of W worker processes; each node opens its
    own store client after the release (--connections per-node) or they share
    one per process (shared); the store (tcp: a real `rdzv serve`) is fresh for
    each run. Per N: latency from release to the last next_rendezvous() return,
    the server's CPU time per node for that rendezvous (connect and handshake
    included), operations and payload bytes per node, heartbeat traffic, time for every
    survivor to notice a SIGKILLed member, the survivors' next round, and peak
    memory. Figures are medians over --repeat runs.
    """
    if vs_torch and not torch_available():
        raise click.UsageError("--vs-torch needs torch installed (pip install 'rdzv[torch]')")
    cfg = BenchConfig(
        store, workers, heartbeat_interval, heartbeat_misses, join_timeout, torch_timeout, steady_seconds,
        connections,
    )  # fmt: skip
    about = machine()
    if scenario == "recovery":
        if store != "tcp" or vs_torch:
            raise click.UsageError("--scenario recovery runs on the tcp store only, without --vs-torch")
        _recovery(nodes, repeat, cfg, about, json_path)
        return
    click.echo(
        f"rdzv bench: store {store}, N {','.join(map(str, nodes))}, {repeat} repeat(s), {workers} workers, "
        f"connections {connections}; "
        f"{about['cores']} cores, Python {about['python']}",
        err=True,
    )
    started = time.time()
    rows, ours, theirs = _measure(nodes, repeat, cfg, vs_torch)
    click.echo(table(rows))
    if json_path is not None:
        document = {
            "machine": about,
            "load_average_end": list(os.getloadavg()),
            "config": {**cfg.__dict__, "nodes": nodes, "repeat": repeat, "vs_torch": vs_torch},
            "started": started,
            "seconds": round(time.time() - started, 1),
            "summary": rows,
            "runs": {"rdzv": ours, "torch": theirs if vs_torch else {}},
        }
        json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    if plot_path is not None:
        title = f"rdzv bench, {store} store, {connections} connections, {about['cores']} cores"
        plot(rows, plot_path, f"{title}, Python {about['python']}")
    if any(row["failed_runs"] for row in rows):
        sys.exit(1)
