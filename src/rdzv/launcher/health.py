"""``--health-check CMD``: a node joins a round only when its check passes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

__all__ = ["HealthResult", "run_health_check"]

OUTPUT_CHARS = 400


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str


def run_health_check(command: str, timeout: float) -> HealthResult:
    """Run ``command`` through the shell; healthy means exit 0 within ``timeout`` seconds."""
    try:
        done = subprocess.run(
            command, shell=True, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return HealthResult(False, f"{command!r} did not finish within {timeout} s")
    except OSError as exc:
        return HealthResult(False, f"{command!r} could not run: {exc.strerror}")
    if done.returncode == 0:
        return HealthResult(True, "")
    said = (done.stderr or done.stdout).decode(errors="replace").strip()[-OUTPUT_CHARS:]
    detail = f": {said}" if said else ""
    return HealthResult(False, f"{command!r} exited with code {done.returncode}{detail}")
