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

from rdzv.store.tcp.client import TcpStore
from rdzv.testing import fuzz
from rdzv.testing.servers import serve_process

TOKEN = "fuzz-benchmark-token"


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
        before = fuzz.memory_mib(server.process.pid)
        started = time.monotonic()
        played = fuzz.play_for(
            server.port, TOKEN.encode(), examples=args.examples, seconds=args.seconds, seed=args.seed
        )
        elapsed = time.monotonic() - started
        honest.stop()
        for entry in admin.list("").entries:
            admin.delete(entry.key)
        stats = admin.server_stats()
        after = fuzz.memory_mib(server.process.pid)
        peak = fuzz.memory_mib(server.process.pid, "VmHWM")
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
