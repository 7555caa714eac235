"""`make demo` installs the base package only; `make test` installs the pinned CPU torch and extras."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _planned_installs(target: str, venv: Path, *settings: str) -> list[str]:
    """The pip commands ``make TARGET`` would run on a fresh virtualenv (dry run, nothing installed)."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}", *settings],
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


def test_make_test_installs_torch_pinned_exactly_and_the_test_extras(tmp_path: Path) -> None:
    installs = "\n".join(_planned_installs("test", tmp_path / "venv"))
    assert '"torch==2.13.0"' in installs
    assert "--extra-index-url" not in installs  # only the indexes pip is configured with
    assert ".[test," in installs


def test_torch_index_adds_the_cpu_index_for_the_pinned_torch(tmp_path: Path) -> None:
    cpu = "https://download.pytorch.org/whl/cpu"
    installs = _planned_installs("test", tmp_path / "venv", f"TORCH_INDEX={cpu}")
    assert any(f"--extra-index-url {cpu}" in line and '"torch==2.13.0"' in line for line in installs)
