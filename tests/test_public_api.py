"""``__all__`` says exactly what each public module exports (checked as httpx does)."""

from __future__ import annotations

import inspect
from types import ModuleType

import rdzv
import rdzv.errors
import rdzv.registry


def public_names(module: ModuleType) -> set[str]:
    """Names a user sees on ``module``: not private, not submodules, not ``from __future__``."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }


def test_rdzv_all_matches_the_names_it_actually_exports() -> None:
    assert set(rdzv.__all__) == public_names(rdzv) | {"__version__"}
    assert len(rdzv.__all__) == len(set(rdzv.__all__))
    for name in rdzv.__all__:
        assert hasattr(rdzv, name), name


def test_rdzv_reexports_every_error() -> None:
    assert set(rdzv.errors.__all__) <= set(rdzv.__all__)


def test_errors_all_covers_every_exception_class_in_the_module() -> None:
    defined = {
        name
        for name, value in vars(rdzv.errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == rdzv.errors.__name__
    }
    assert set(rdzv.errors.__all__) == defined
    assert len(rdzv.errors.__all__) == len(defined)


def test_every_error_ends_in_error_and_derives_from_rdzv_error() -> None:
    for name in rdzv.errors.__all__:
        cls = getattr(rdzv.errors, name)
        assert name.endswith("Error"), name
        assert issubclass(cls, rdzv.errors.RdzvError), name


def test_registry_all_names_its_public_interface() -> None:
    expected = {"BackendInfo", "HandlerInfo", "StoreFactory", "available", "open_store"}
    expected |= {"register", "torchrun_handlers", "unregister"}
    assert set(rdzv.registry.__all__) == expected
    for name in rdzv.registry.__all__:
        assert hasattr(rdzv.registry, name), name
