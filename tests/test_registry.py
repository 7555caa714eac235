"""The store registry in this process: register/unregister, scheme names, factory errors.

Out-of-tree plugins installed with pip are tested in ``test_plugins_installed.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rdzv import registry
from rdzv.cli.main import main
from rdzv.errors import ConfigurationError, PluginError, UnknownBackendError
from rdzv.store import Capabilities, Store
from rdzv.store.memory import MemoryStore


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an empty cache and leaves nothing registered behind."""
    monkeypatch.setattr(registry, "_resolved", {})


def open_memory(url: str, *, shared: str = "") -> MemoryStore:
    """A well-formed factory with one option, for ``register``."""
    return MemoryStore(shared)


def test_registered_factory_opens_its_scheme_and_unregister_removes_it() -> None:
    registry.register("mine", open_memory)
    store = registry.open_store("mine://anything")
    assert isinstance(store, MemoryStore)
    info = {b.scheme: b for b in registry.available()}["mine"]
    assert (info.origin, info.target) == ("registered", f"{__name__}:open_memory")
    registry.unregister("mine")
    with pytest.raises(UnknownBackendError):
        registry.open_store("mine://anything")


def test_query_parameters_and_keywords_reach_the_factory_and_keywords_win() -> None:
    seen: list[dict[str, str]] = []

    def factory(url: str, **options: str) -> Store:
        seen.append(options)
        return MemoryStore()

    registry.register("opts", factory)
    registry.open_store("opts://h?a=1&b=2", b="3", c=None)
    assert seen == [{"a": "1", "b": "3"}]


def test_register_overrides_a_builtin_and_unregister_restores_it() -> None:
    class Marked(MemoryStore):
        pass

    registry.register("memory", lambda url, **options: Marked())
    assert isinstance(registry.open_store("memory://x"), Marked)
    registry.unregister("memory")
    store = registry.open_store("memory://x")
    assert type(store) is MemoryStore


def test_unregister_of_a_scheme_never_registered_leaves_the_builtin_in_place() -> None:
    registry.open_store("memory://x")
    registry.unregister("memory")
    registry.unregister("never-registered")
    assert type(registry.open_store("memory://x")) is MemoryStore


def test_schemes_are_case_insensitive() -> None:
    registry.register("MiXed", open_memory)
    assert isinstance(registry.open_store("MIXED://x"), MemoryStore)
    registry.unregister("mixed")
    with pytest.raises(UnknownBackendError):
        registry.open_store("mixed://x")


@pytest.mark.parametrize("scheme", ["", "1abc", "+x", "a b", "a_b", "a/b", "a:b", "caf\u00e9", "x\u00b2"])
def test_register_rejects_scheme_names_that_a_url_cannot_carry(scheme: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid scheme"):
        registry.register(scheme, open_memory)


@pytest.mark.parametrize("scheme", ["a", "etcd+https", "x-y", "v1.2"])
def test_register_accepts_rfc3986_scheme_names(scheme: str) -> None:
    registry.register(scheme, open_memory)
    assert isinstance(registry.open_store(f"{scheme}://x"), MemoryStore)


def test_register_rejects_a_factory_that_is_not_callable() -> None:
    with pytest.raises(ConfigurationError, match="not callable"):
        registry.register("x", "rdzv_plugin:open_store")  # type: ignore[arg-type]


def test_register_takes_capabilities_from_the_factory_or_the_argument() -> None:
    registry.register("cls", MemoryStore.from_url)
    caps = Capabilities(leases=False)
    registry.register("given", open_memory, capabilities=caps)
    listed = {b.scheme: b.capabilities for b in registry.available()}
    assert listed["cls"] == MemoryStore.capabilities
    assert listed["given"] == caps


def test_bad_option_for_a_registered_factory_names_the_option_and_those_accepted() -> None:
    registry.register("mine", open_memory)
    with pytest.raises(ConfigurationError) as caught:
        registry.open_store("mine://x?colour=red")
    message = str(caught.value)
    assert not isinstance(caught.value, PluginError)
    assert "'mine'" in message
    assert "colour" in message
    assert "it accepts: shared" in message
    assert isinstance(caught.value.__cause__, TypeError)


def test_type_error_raised_inside_a_factory_is_not_reported_as_a_bad_option() -> None:
    def buggy(url: str, **options: str) -> Store:
        return len(42)  # type: ignore[arg-type, return-value]

    registry.register("buggy", buggy)
    with pytest.raises(TypeError, match="has no len"):
        registry.open_store("buggy://x?any=1")


def test_factory_that_cannot_take_a_url_is_a_plugin_error() -> None:
    registry.register("nourl", lambda: MemoryStore())
    with pytest.raises(PluginError, match=r"cannot be called as FACTORY\(url, \*\*options\)"):
        registry.open_store("nourl://x")


def test_factory_returning_something_other_than_a_store_is_a_plugin_error_naming_it() -> None:
    registry.register("junk", lambda url: ["not", "a", "store"])
    with pytest.raises(PluginError) as caught:
        registry.open_store("junk://x")
    assert "returned ['not', 'a', 'store'] (a builtins.list)" in str(caught.value)
    assert caught.value.scheme == "junk"


def test_unknown_scheme_lists_the_schemes_that_exist() -> None:
    registry.register("mine", open_memory)
    with pytest.raises(UnknownBackendError) as caught:
        registry.open_store("nosuch://x")
    assert isinstance(caught.value, LookupError)
    assert caught.value.scheme == "nosuch"
    assert {"memory", "tcp", "file", "etcd", "mine"} <= set(caught.value.known)
    assert "memory, mine" in str(caught.value)


@pytest.mark.parametrize("url", ["memory:x", "/tmp/store", "1x://y"])
def test_url_without_a_valid_scheme_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="scheme"):
        registry.open_store(url)


def _fake_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scheme: str, source: str) -> None:
    """Point the built-in ``scheme`` at a module whose body is ``source``."""
    module = f"rdzv_fake_{scheme.replace('+', '_')}_backend"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setitem(registry._BUILT_INS, scheme, f"{module}:open_store")


def test_etcd_without_httpx_hints_at_the_etcd_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)  # makes `import httpx` fail
    _fake_backend(monkeypatch, tmp_path, "etcd", "import httpx\n")
    with pytest.raises(ConfigurationError) as caught:
        registry.open_store("etcd://localhost:2379")
    assert not isinstance(caught.value, PluginError)
    assert "pip install 'rdzv[etcd]'" in str(caught.value)
    assert isinstance(caught.value.__cause__, ImportError)


@pytest.mark.parametrize("scheme", ["tcp", "file", "memory"])
def test_builtin_other_than_etcd_that_fails_to_import_gets_no_extra_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scheme: str
) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    _fake_backend(monkeypatch, tmp_path, scheme, "import httpx\n")
    with pytest.raises(PluginError) as caught:
        registry.open_store(f"{scheme}://x")
    assert "pip install" not in str(caught.value)
    assert f"built-in store backend {scheme!r}" in str(caught.value)
    assert caught.value.distribution == "rdzv"
    assert isinstance(caught.value.__cause__, ImportError)


def test_etcd_whose_own_module_fails_to_import_gets_no_extra_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_backend(monkeypatch, tmp_path, "etcd", "import rdzv_no_such_module_anywhere\n")
    with pytest.raises(PluginError) as caught:
        registry.open_store("etcd://localhost:2379")
    assert "pip install" not in str(caught.value)
    assert "rdzv_no_such_module_anywhere" in str(caught.value)


def test_available_lists_a_backend_that_cannot_load_with_its_error_instead_of_raising(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_backend(monkeypatch, tmp_path, "file", "raise RuntimeError('disk on fire')\n")
    listed = {b.scheme: b for b in registry.available()}
    assert listed["file"].error is not None
    assert "RuntimeError: disk on fire" in listed["file"].error
    assert listed["memory"].error is None


def test_backends_command_lists_registered_backends_with_capabilities() -> None:
    registry.register("mine", MemoryStore.from_url)
    result = CliRunner().invoke(main, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    stores: list[dict[str, Any]] = json.loads(result.output)["stores"]
    mine = next(s for s in stores if s["scheme"] == "mine")
    assert mine["origin"] == "registered"
    assert mine["capabilities"]["push_wait"] is True
    text = CliRunner().invoke(main, ["backends"]).output
    assert "mine://" in text
    assert "push_wait, leases" in text


def test_listing_backends_and_torchrun_handlers_does_not_import_torch() -> None:
    """Run where torch is installed (this venv), in a fresh interpreter."""
    code = (
        "import sys\n"
        "from rdzv.cli.main import main\n"
        "from rdzv.registry import torchrun_handlers\n"
        "torchrun_handlers()\n"
        "try:\n"
        "    main(['backends', '--json'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
