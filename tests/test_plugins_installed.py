"""Real out-of-tree plugins, built and pip-installed into a throwaway venv.

The packages under ``tests/plugins/`` are installed with rdzv into a fresh venv
(never into the venv running these tests, whose other tests must not see broken
plugins); every check runs in a subprocess of that venv's Python or its ``rdzv``
command. ``rdzv-plugin-clash`` goes to a separate ``--target`` directory that
only the clash test puts on ``PYTHONPATH``. A poisoned ``torch`` package, put on
the path where torch must not be imported, fails loudly if anything imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
INSTALLED = [
    "rdzv-plugin-good",
    "rdzv-plugin-broken",
    "rdzv-plugin-garbage",
    "rdzv-plugin-notcallable",
    "torch-testbackend",
]
SET_UP_SECONDS = 240.0
RUN_SECONDS = 60.0

POISON_TORCH = 'raise RuntimeError("torch was imported, but listing handlers must not import it")\n'


@dataclass(frozen=True)
class PluginVenv:
    """A venv holding rdzv and the test plugins, driven through subprocesses."""

    root: Path
    python: Path
    rdzv: Path
    clash_site: Path
    poison_site: Path

    def env(self, extra_path: Sequence[Path]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in extra_path)
        return env

    def python_json(self, code: str, *extra_path: Path) -> Any:
        """Run ``code`` (which prints one JSON document) in the venv's Python."""
        done = self._run([str(self.python), "-c", textwrap.dedent(code)], extra_path)
        return json.loads(done.stdout)

    def cli(self, *args: str, extra_path: Sequence[Path] = ()) -> str:
        return self._run([str(self.rdzv), *args], extra_path).stdout

    def _run(self, argv: list[str], extra_path: Sequence[Path]) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RUN_SECONDS, env=self.env(extra_path), cwd=self.root
        )
        assert done.returncode == 0, f"{argv[:2]} failed:\n{done.stdout}\n{done.stderr}"
        return done


def _setup_step(argv: list[str], deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        pytest.fail(f"plugin venv set-up ran out of its {SET_UP_SECONDS:.0f} s before: {' '.join(argv)}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=remaining)
    if done.returncode != 0:
        pytest.fail(f"plugin venv set-up failed: {' '.join(argv)}\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginVenv]:
    deadline = time.monotonic() + SET_UP_SECONDS
    root = tmp_path_factory.mktemp("plugin-venv")
    try:
        home = root / "venv"
        _setup_step([sys.executable, "-m", "venv", str(home)], deadline)
        python = home / "bin" / "python"
        # The configured local indexes serve these; pinning to this venv's versions keeps it offline.
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input", "-q", "install"]
        pins = [f"{name}=={metadata.version(name)}" for name in ("click", "msgpack")]
        _setup_step([*pip, "hatchling", *pins], deadline)
        packages = [str(REPO), *(str(PLUGINS / name) for name in INSTALLED)]
        _setup_step([*pip, "--no-deps", "--no-build-isolation", *packages], deadline)
        clash_site = root / "clash-site"
        clash = str(PLUGINS / "rdzv-plugin-clash")
        _setup_step([*pip, "--no-deps", "--no-build-isolation", "--target", str(clash_site), clash], deadline)
        poison_site = root / "poison-site"
        (poison_site / "torch").mkdir(parents=True)
        (poison_site / "torch" / "__init__.py").write_text(POISON_TORCH)
        yield PluginVenv(root, python, home / "bin" / "rdzv", clash_site, poison_site)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def open_and_report(url: str) -> str:
    """Code that opens ``url`` and prints what was raised, as JSON."""
    return f"""
        import json
        import rdzv
        try:
            rdzv.open_store({url!r})
        except rdzv.RdzvError as exc:
            cause = exc.__cause__
            print(json.dumps({{
                "type": type(exc).__name__,
                "message": str(exc),
                "scheme": getattr(exc, "scheme", None),
                "distribution": getattr(exc, "distribution", None),
                "known": getattr(exc, "known", None),
                "cause": None if cause is None else type(cause).__name__,
                "cause_message": None if cause is None else str(cause),
            }}))
        else:
            raise SystemExit("opening {url} did not raise")
    """


def test_good_plugin_opens_lazily_and_importing_rdzv_imports_no_plugin(venv: PluginVenv) -> None:
    report = venv.python_json("""
        import json
        import sys

        def loaded():
            return sorted(m for m in sys.modules if m.startswith(("rdzv_plugin", "testbackend", "torch")))

        import rdzv
        after_import = loaded()
        rdzv.open_store("memory://")
        after_memory = loaded()
        store = rdzv.open_store("goodmem://shared")
        store.put("k", b"v")
        other = rdzv.open_store("goodmem://shared")
        print(json.dumps({
            "after_import": after_import,
            "after_memory": after_memory,
            "after_goodmem": loaded(),
            "is_store": isinstance(store, rdzv.Store),
            "type": type(store).__name__,
            "url": store.url,
            "shared_value": other.get("k").value.decode(),
        }))
    """)
    assert report["after_import"] == []
    assert report["after_memory"] == []
    assert report["after_goodmem"] == ["rdzv_plugin_good"]
    assert report["is_store"]
    assert report["type"] == "GoodMemStore"
    assert report["url"] == "goodmem://shared"
    assert report["shared_value"] == "v"


def test_plugin_that_fails_to_import_names_scheme_distribution_and_chains_the_cause(
    venv: PluginVenv,
) -> None:
    report = venv.python_json(open_and_report("broken://x"))
    assert report["type"] == "PluginError"
    assert "store plugin 'broken' (rdzv_plugin_broken:open_store)" in report["message"]
    assert "from rdzv-plugin-broken 0.1.0" in report["message"]
    assert "failed to import: ImportError:" in report["message"]
    assert "no_such_client" in report["message"]
    assert (report["scheme"], report["distribution"]) == ("broken", "rdzv-plugin-broken")
    assert report["cause"] == "ImportError"
    assert "no_such_client" in report["cause_message"]


def test_plugin_whose_factory_returns_garbage_names_what_it_returned(venv: PluginVenv) -> None:
    report = venv.python_json(open_and_report("garbage://x?k=v"))
    assert report["type"] == "PluginError"
    assert "from rdzv-plugin-garbage 0.1.0" in report["message"]
    assert "returned {'url': 'garbage://x?k=v', 'k': 'v'} (a builtins.dict)" in report["message"]
    assert "not an rdzv.store.Store" in report["message"]
    assert report["distribution"] == "rdzv-plugin-garbage"


def test_plugin_whose_target_is_not_callable_says_so(venv: PluginVenv) -> None:
    report = venv.python_json(open_and_report("notcallable://x"))
    assert report["type"] == "PluginError"
    assert "from rdzv-plugin-notcallable 0.1.0 is not callable" in report["message"]
    assert "'this is not a factory' (a str)" in report["message"]
    assert report["distribution"] == "rdzv-plugin-notcallable"


def test_two_distributions_claiming_one_scheme_is_an_error_naming_both(venv: PluginVenv) -> None:
    report = venv.python_json(open_and_report("goodmem://x"), venv.clash_site)
    assert report["type"] == "PluginError"
    assert "'goodmem' is claimed by several packages" in report["message"]
    assert "rdzv-plugin-good 0.1.0" in report["message"]
    assert "rdzv-plugin-clash 0.1.0" in report["message"]
    listing = json.loads(venv.cli("backends", "--json", extra_path=[venv.clash_site]))
    goodmem = next(s for s in listing["stores"] if s["scheme"] == "goodmem")
    assert goodmem["origin"] == "conflict"
    assert "rdzv-plugin-clash 0.1.0" in goodmem["error"]


def test_unknown_scheme_lists_builtin_and_plugin_schemes(venv: PluginVenv) -> None:
    report = venv.python_json(open_and_report("nosuch://x"))
    assert report["type"] == "UnknownBackendError"
    assert {"memory", "tcp", "goodmem", "broken", "garbage", "notcallable"} <= set(report["known"])
    assert "broken, etcd" in report["message"]


def test_backends_json_lists_plugins_their_problems_and_torchrun_handlers_without_torch(
    venv: PluginVenv,
) -> None:
    listing = json.loads(venv.cli("backends", "--json", extra_path=[venv.poison_site]))
    stores = {s["scheme"]: s for s in listing["stores"]}
    good = stores["goodmem"]
    assert good["origin"] == "rdzv-plugin-good 0.1.0"
    assert good["target"] == "rdzv_plugin_good:open_store"
    assert good["error"] is None
    assert good["capabilities"]["push_wait"] is True
    assert good["capabilities"]["multi_process"] is False
    assert "no_such_client" in stores["broken"]["error"]
    assert "is not callable" in stores["notcallable"]["error"]
    assert stores["memory"]["origin"] == "built in"
    assert [h["name"] for h in listing["torchrun_handlers"]] == ["rdzv", "testbackend"]
    assert [h for h in listing["torchrun_handlers"] if h["name"] != "rdzv"] == [
        {
            "name": "testbackend",
            "distribution": "torch-testbackend",
            "version": "0.1.0",
            "target": "testbackend:test_handler",
        }
    ]


def test_backends_table_shows_origins_capabilities_reasons_and_handlers(venv: PluginVenv) -> None:
    lines = venv.cli("backends", extra_path=[venv.poison_site]).splitlines()
    goodmem = next(line for line in lines if line.strip().startswith("goodmem://"))
    assert "rdzv-plugin-good 0.1.0" in goodmem
    assert "push_wait, leases" in goodmem
    broken = next(line for line in lines if line.strip().startswith("broken://"))
    assert "unusable:" in broken
    assert "no_such_client" in broken
    handler = next(line for line in lines if line.strip().startswith("testbackend"))
    assert handler.split() == ["testbackend", "torch-testbackend", "0.1.0", "testbackend:test_handler"]


def test_reading_torchrun_handlers_imports_neither_torch_nor_the_handler(venv: PluginVenv) -> None:
    report = venv.python_json(
        """
        import json
        import sys
        from dataclasses import asdict
        from rdzv.registry import torchrun_handlers

        handlers = torchrun_handlers()
        print(json.dumps({
            "handlers": [asdict(h) for h in handlers],
            "imported": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "testbackend")),
        }))
        """,
        venv.poison_site,
    )
    # rdzv's own handler (for torchrun --rdzv-backend=rdzv) is listed next to the plugin's.
    assert [h["name"] for h in report["handlers"]] == ["rdzv", "testbackend"]
    assert report["imported"] == []


def test_the_poisoned_torch_used_above_fails_loudly_when_imported(venv: PluginVenv) -> None:
    """Guards the torch checks above: on their path, ``import torch`` cannot pass silently."""
    done = subprocess.run(
        [str(venv.python), "-c", "import torch"],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        env=venv.env([venv.poison_site]),
    )
    assert done.returncode != 0
    assert "torch was imported" in done.stderr
