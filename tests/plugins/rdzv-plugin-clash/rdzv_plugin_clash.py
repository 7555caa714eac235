"""A second distribution claiming the ``goodmem`` scheme."""

from __future__ import annotations

from rdzv.store.memory import MemoryStore


def open_store(url: str, **options: str) -> MemoryStore:
    """Never reached: the clash is reported before either plugin is imported."""
    return MemoryStore()
