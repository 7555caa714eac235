"""``make demo`` end to end: the real processes and server, as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("store", ["tcp", "file"])
def test_demo_reforms_after_a_node_is_killed(store: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rdzv.demo", "--store", store],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 1: world size 6" in result.stdout
    assert "round 2: world size 5" in result.stdout
    assert "run closed; every node exited" in result.stdout
    if store == "tcp":
        assert "gone (evicted)" in result.stdout
