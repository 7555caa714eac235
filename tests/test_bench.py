"""Smoke run of ``rdzv bench``: it completes and writes valid JSON (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rdzv.bench.counting import CountingStore
from rdzv.errors import StoreUnavailableError
from rdzv.store.memory import MemoryStore


@pytest.mark.parametrize(
    ("store", "connections"), [("memory", "per-node"), ("tcp", "per-node"), ("tcp", "shared")]
)
def test_bench_smoke_run_completes_and_writes_json(store: str, connections: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "rdzv", "bench", "--store", store, "--nodes", "4,8", "--repeat", "1"]
    command += ["--connections", connections]
    command += ["--json", str(out), "--steady-seconds", "0.3", "--heartbeat-interval", "0.3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["machine"]["cores"] >= 1
    assert [row["n"] for row in document["summary"]] == [4, 8]
    for row in document["summary"]:
        assert row["latency_s"]["median"] is not None
        assert row["detect_s"]["median"] is not None
        assert row["rejoin_s"]["median"] is not None
        if store == "tcp":  # the serving process is measured: connect and handshake cost CPU
            assert row["server_cpu_ms_per_node"] > 0
    assert document["config"]["connections"] == connections
    assert "srv CPU ms/node" in result.stdout


def test_counting_store_tallies_operations_and_payload_bytes() -> None:
    store = CountingStore(MemoryStore())
    store.put("k", b"12345")
    store.get("k")
    store.get("absent")
    tally = store.tally()
    assert tally.ops == {"put": 1, "get": 2}
    assert tally.bytes == (1 + 5 + 16) + (1 + 5 + 16) + (6 + 8)
    assert (store.tally() - tally).total_ops == 0


def test_cut_counting_store_fails_every_call_without_reaching_the_store() -> None:
    inner = MemoryStore()
    store = CountingStore(inner)
    lease = store.grant(10)
    store.cut()
    with pytest.raises(StoreUnavailableError):
        store.refresh(lease)
    assert store.tally().ops == {"grant": 1}


def test_bench_recovery_scenario_times_every_survivor_back_in_a_round(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    command = [sys.executable, "-m", "rdzv", "bench", "--scenario", "recovery", "--nodes", "6"]
    command += ["--repeat", "1", "--json", str(out), "--heartbeat-interval", "0.3", "--workers", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=100, check=False)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(out.read_text())["recovery"]
    assert run["errors"] == []
    assert 0 < run["rebuilt_s"] <= run["noticed_s"] <= run["recovered_s"]
    assert "recovery N=6" in result.stdout
