"""The tree's layers: lower layers never import higher ones, and no two modules import each other."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Top-level part of rdzv -> its layer; a module may import only from its own layer or below.
LAYERS = {
    "errors": 0,
    "core": 1,
    "store": 1,
    "retry": 1,
    "registry": 2,
    "testing": 3,
    "rendezvous": 3,
    "rdzv": 4,  # the package's own __init__: the public API
    "bench": 5,
    "demo": 5,
    "launcher": 5,
    "torchrun": 5,
    "jax": 5,
    "cli": 6,
    "__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """Statements run at import time: the body, and ``if``/``try`` blocks other than ``TYPE_CHECKING``."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)


def rdzv_imports(path: Path, *, import_time_only: bool = False) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    for node in module_level(tree) if import_time_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        yield from (name for name in names if name == "rdzv" or name.startswith("rdzv."))


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "rdzv"


def all_modules(*, import_time_only: bool = False) -> dict[str, set[str]]:
    return {
        module_name(path): set(rdzv_imports(path, import_time_only=import_time_only))
        for path in (SRC / "rdzv").rglob("*.py")
    }


def test_every_part_of_the_tree_has_a_layer() -> None:
    unknown = {part_of(module) for module in all_modules()} - LAYERS.keys()
    assert not unknown, f"give these a layer in LAYERS: {sorted(unknown)}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in all_modules().items()
        for target in targets
        if LAYERS[part_of(target)] > LAYERS[part_of(module)]
    ]
    assert not upward, upward


def test_no_two_modules_import_each_other_at_import_time() -> None:
    modules = all_modules(import_time_only=True)
    mutual = sorted(
        f"{a} <-> {b}"
        for a, targets in modules.items()
        for b in targets
        if a < b and a in modules.get(b, set())
    )
    assert not mutual, mutual
