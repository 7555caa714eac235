"""A long fuzzing run of the TCP store: hostile frames against a real ``rdzv serve``.

Run: .venv/bin/python benchmarks/fuzz_tcp.py [--examples 20000] [--seconds 300] [--seed N]

The same attacks as ``tests/test_tcp_fuzz.py`` (``rdzv.testing.fuzz``), many
more of them, while an honest client works beside them. Reports attacks
played, honest operations and failures, tracebacks in the server log, the
server's internal-error count, and its RSS before fuzzing, at its peak and
after. Exits 1 if anything went wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from hypothesis import HealthCheck, given, seed, settings

from rdzv.store.tcp.client import TcpStore
from rdzv.testing import fuzz
from rdzv.testing.servers import serve_process

TOKEN = "fuzz-benchmark-token"


def memory_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def fuzz_for(port: int, examples: int, seconds: float, seed_value: int) -> int:
    played = 0
    stop_at = time.monotonic() + seconds

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz.attacks)
    def attack(example: tuple[str, Any]) -> None:
        nonlocal played
        if time.monotonic() < stop_at:
            fuzz.play(port, TOKEN.encode(), example, source=fuzz.fresh_source())
            played += 1

    attack()
    return played


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    with serve_process(token=TOKEN, args=["--log-level", "warning"]) as server:
        admin = TcpStore.from_url(server.url)
        honest = fuzz.HonestClient(TcpStore.from_url(server.url))
        honest.start()
        fuzz.play(server.port, TOKEN.encode(), ("request", [1, "ping", []]))
        before = memory_mib(server.process.pid, "VmRSS")
        started = time.monotonic()
        played = fuzz_for(server.port, args.examples, args.seconds, args.seed)
        elapsed = time.monotonic() - started
        honest.stop()
        for entry in admin.list("").entries:
            admin.delete(entry.key)
        stats = admin.server_stats()
        after = memory_mib(server.process.pid, "VmRSS")
        peak = memory_mib(server.process.pid, "VmHWM")
        honest.store.close()
        admin.close()
        tracebacks = server.log_text().count("Traceback")
    report = {
        "seed": args.seed,
        "attacks": played,
        "attacks_per_second": round(played / elapsed, 1),
        "honest_ops": honest.ops,
        "honest_failures": len(honest.failures),
        "tracebacks": tracebacks,
        "internal_errors": stats["internal_errors"],
        "rss_mib": {"before": round(before, 1), "peak": round(peak, 1), "after": round(after, 1)},
    }
    print(json.dumps(report, indent=2))
    for failure in honest.failures[:10]:
        print("honest failure:", failure, file=sys.stderr)
    bad = honest.failures or tracebacks or stats["internal_errors"] or after - before > 8
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
