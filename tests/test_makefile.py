"""`make demo` installs the base package only; `make test` installs the pinned CPU torch and extras."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _planned_installs(target: str, venv: Path) -> list[str]:
    """The pip commands ``make TARGET`` would run on a fresh virtualenv (dry run, nothing installed)."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if " pip install" in line]


def test_make_demo_installs_the_base_package_without_torch_or_extras(tmp_path: Path) -> None:
    installs = _planned_installs("demo", tmp_path / "venv")
    assert any(line.endswith("-e .") for line in installs), installs
    assert not [line for line in installs if "torch" in line or ".[" in line], installs


def test_make_test_installs_torch_pinned_exactly_from_the_cpu_index(tmp_path: Path) -> None:
    installs = "\n".join(_planned_installs("test", tmp_path / "venv"))
    assert '"torch==2.13.0"' in installs
    assert "whl/cpu" in installs
    assert ".[test," in installs
