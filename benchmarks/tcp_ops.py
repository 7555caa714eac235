"""Operations per second of the embedded TCP store, from 1 and from 16 client processes.

Run: .venv/bin/python benchmarks/tcp_ops.py [--seconds 3] [--clients 1 16] [--mac-cost]

Starts a real ``rdzv serve`` on loopback; each client is a separate process
with one ``TcpStore`` doing one synchronous operation after another (no
pipelining across calls). Clients start together on a store-pushed signal.
Report the machine with the figures: they depend on cores and load.

``--mac-cost`` measures what the per-frame MACs cost instead: one client
alternates bursts of operations between a server with a token (every frame
MACed) and one without (no MACs), so that a machine's changing load falls on
both alike; it reports ops/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from rdzv.registry import open_store
from rdzv.testing.servers import serve_process

OPS = ("get", "put", "compare_and_set")


def worker(url: str, op: str, seconds: float, name: str) -> None:
    store = open_store(url)
    key = f"bench/{name}"
    version = store.put(key, b"x" * 64)
    since = store.put(f"ready/{name}", b"1")
    store.wait("go/", since, 60)
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            if op == "get":
                store.get(key)
            elif op == "put":
                store.put(key, b"y" * 64)
            else:
                result = store.compare_and_set(key, b"z" * 64, version)
                assert result.succeeded and result.current is not None
                version = result.current.version
        count += 50
    print(count, flush=True)
    store.close()


def run(url: str, op: str, clients: int, seconds: float) -> float:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, op, str(seconds), f"{op}-{clients}-{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    with open_store(url) as control:
        since = 0
        while len(control.list(f"ready/{op}-{clients}-")) < clients:
            since = control.wait(f"ready/{op}-{clients}-", since, 60) or since
        control.put("go/now", str(time.time()).encode())
        counts = [int(p.communicate(timeout=seconds + 60)[0]) for p in procs]
        control.delete("go/now")
        for key in control.list("ready/"):
            control.delete(key.key)
    return sum(counts) / seconds


def mac_cost(seconds: float, burst: int = 50) -> None:
    """Alternate bursts on an authenticated and an open server; compare their median ops/s.

    The median over bursts, not the total: a burst that another process's load
    slowed down counts as one outlier rather than as lost time.
    """
    with (
        serve_process(token="bench", args=["--log-level", "warning"]) as macs,
        serve_process(token=None, args=["--log-level", "warning"]) as plain,
    ):
        stores = {"with MACs": open_store(macs.url), "without": open_store(plain.url)}
        for op in OPS[:2]:
            for store in stores.values():
                store.put("bench/k", b"x" * 64)
            rates: dict[str, list[float]] = {name: [] for name in stores}
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for name, store in stores.items():
                    started = time.perf_counter()
                    for _ in range(burst):
                        store.get("bench/k") if op == "get" else store.put("bench/k", b"y" * 64)
                    rates[name].append(burst / (time.perf_counter() - started))
            with_macs, without = (statistics.median(rates[name]) for name in stores)
            print(
                f"{op:<5} with MACs {with_macs:>8,.0f} ops/s   without {without:>8,.0f} ops/s"
                f"   ratio {with_macs / without:.3f}   ({len(rates['without'])} bursts of {burst} each)",
                flush=True,
            )
        for store in stores.values():
            store.close()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--mac-cost", action="store_true", help="compare ops/s with and without frame MACs")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}")
    if args.mac_cost:
        mac_cost(args.seconds)
        return
    with serve_process(token="bench", args=["--log-level", "warning"]) as server:
        print(f"{'operation':<16}" + "".join(f"{n:>3} client(s) ops/s  " for n in args.clients))
        for op in OPS:
            rates = [run(server.url, op, n, args.seconds) for n in args.clients]
            print(f"{op:<16}" + "".join(f"{r:>20,.0f}  " for r in rates), flush=True)


if __name__ == "__main__":
    main()
