"""Summaries of benchmark runs: the machine, medians per N, the table, JSON and a plot."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rdzv.errors import ConfigurationError

__all__ = ["machine", "plot", "summarize", "table"]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    memory = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "versions": {name: _version(name) for name in ("rdzv", "msgpack", "uvloop", "torch")},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _values(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if r.get(key) is not None]


def _median(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = _values(runs, key)
    return statistics.median(values) if values else None


def _max(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = _values(runs, key)
    return max(values) if values else None


def summarize(n: int, ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median (and max) over repeats of every figure for one N."""
    summary: dict[str, Any] = {"n": n, "repeats": len(ours)}
    for key in ("latency_s", "detect_s", "rejoin_s"):
        summary[key] = {"median": _median(ours, key), "max": _max(ours, key)}
    for key in (
        "ops_per_node",
        "ops_per_node_max",
        "bytes_per_node",
        "bytes_per_node_max",
        "heartbeat_ops_per_node_s",
        "heartbeat_bytes_per_node_s",
        "heartbeat_bytes_per_node_interval",
        "detect_bound_s",
        "server_cpu_ms_per_node",
    ):
        summary[key] = _median(ours, key)
    summary["server_peak_mib"] = _max(ours, "server_peak_mib")
    summary["worker_peak_mib"] = _max(ours, "worker_peak_mib")
    summary["failed_runs"] = sum(1 for r in ours if r.get("latency_s") is None or r.get("errors"))
    if theirs:
        median = _median(theirs, "latency_s")
        summary["torch"] = {
            "latency_s": {"median": median, "max": _max(theirs, "latency_s")},
            "timeouts": sum(1 for r in theirs if r.get("timed_out")),
            "runs": len(theirs),
            "server_peak_mib": _max(theirs, "server_peak_mib"),
            "worker_peak_mib": _max(theirs, "worker_peak_mib"),
        }
        ours_median = summary["latency_s"]["median"]
        summary["torch_over_rdzv"] = median / ours_median if median and ours_median else None
    return summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _torch_cells(row: dict[str, Any]) -> list[str]:
    torch = row.get("torch")
    if torch is None:
        return ["-", "-"]
    if torch["latency_s"]["median"] is None:
        return ["timeout" if torch["timeouts"] else "failed", "-"]
    return [_ms(torch["latency_s"]["median"]), _num(row.get("torch_over_rdzv"), 1) + "x"]


HEADER = (
    "N", "ms med", "ms max", "torch ms", "torch/rdzv", "srv CPU ms/node", "ops/node", "B/node", "B/node max",
    "hb B/node/int", "hb ops/node/s", "detect ms", "bound ms", "rejoin ms", "server MiB", "worker MiB",
)  # fmt: skip


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table, one row per N."""
    lines = [list(HEADER)]
    for row in rows:
        lines.append(
            [
                str(row["n"]),
                _ms(row["latency_s"]["median"]),
                _ms(row["latency_s"]["max"]),
                *_torch_cells(row),
                _num(row.get("server_cpu_ms_per_node"), 3),
                _num(row["ops_per_node"], 1),
                _num(row["bytes_per_node"]),
                _num(row["bytes_per_node_max"]),
                _num(row["heartbeat_bytes_per_node_interval"], 1),
                _num(row["heartbeat_ops_per_node_s"], 2),
                _ms(row["detect_s"]["median"]),
                _ms(row["detect_bound_s"]),
                _ms(row["rejoin_s"]["median"]),
                _num(row["server_peak_mib"]),
                _num(row["worker_peak_mib"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def plot(
    rows: Sequence[dict[str, Any]],
    path: Path,
    title: str,
    *,
    label: str = "rdzv",
    others: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
) -> None:
    """Latency against N, log-log: rdzv (``label``), other rdzv runs, and torch c10d where measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigurationError("--plot needs matplotlib: pip install 'rdzv[plot]'") from exc
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ours = [(r["n"], r["latency_s"]["median"]) for r in rows if r["latency_s"]["median"] is not None]
    theirs = [
        (r["n"], r["torch"]["latency_s"]["median"])
        for r in rows
        if r.get("torch") and r["torch"]["latency_s"]["median"] is not None
    ]
    series = [(ours, label, "o")]
    for name, other in others:
        series.append(
            ([(r["n"], r["latency_s"]["median"]) for r in other if r["latency_s"]["median"]], name, "^")
        )
    series.append((theirs, "torch c10d", "s"))
    for points, name, marker in series:
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("nodes (min = max = N)")
    ax.set_ylabel("release to last next_rendezvous() return (s, median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
