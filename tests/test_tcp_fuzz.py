"""Hypothesis against a real ``rdzv serve`` while an honest client works beside it.

Every attack (see ``rdzv.testing.fuzz``) gets well-formed frames back; the
server logs no traceback and counts no internal error; the honest client sees
no failed operation; and the server's memory returns to where it started.
A longer run: ``benchmarks/fuzz_tcp.py``.
"""

from __future__ import annotations

from rdzv.store.tcp.client import TcpStore
from rdzv.testing import fuzz
from rdzv.testing.servers import serve_process

TOKEN = "fuzz-token-c4"
EXAMPLES = 400
TIME_BUDGET = 20.0
"""Seconds of fuzzing at most (a loaded machine plays fewer examples)."""


def test_fuzzed_frames_never_crash_leak_or_disturb_an_honest_client() -> None:
    with serve_process(token=TOKEN, args=["--log-level", "warning"]) as server:
        admin = TcpStore.from_url(server.url)
        honest = fuzz.HonestClient(TcpStore.from_url(server.url))
        honest.start()
        try:
            for attack in [("request", [1, "ping", []]), ("deep", 10), ("pre_auth_bytes", b"x")]:
                fuzz.play(server.port, TOKEN.encode(), attack, source=fuzz.fresh_source())  # warm up
            before = fuzz.memory_mib(server.process.pid)
            played = fuzz.play_for(server.port, TOKEN.encode(), examples=EXAMPLES, seconds=TIME_BUDGET)
            honest.stop()
            for entry in admin.list("").entries:  # what fuzzed puts stored is not a leak
                admin.delete(entry.key)
            stats = admin.server_stats()
            after = fuzz.memory_mib(server.process.pid)
        finally:
            honest.stop()
            honest.store.close()
            admin.close()
        log = server.log_text()
    print(f"{played} attacks, honest ops {honest.ops}, server RSS {before:.1f} -> {after:.1f} MiB")
    assert played >= 50
    assert honest.failures == []
    assert honest.ops > 0
    assert "Traceback" not in log
    assert stats["internal_errors"] == 0
    assert after - before < 8
