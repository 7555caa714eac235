"""A store plugin whose entry point names a constant instead of a factory."""

from __future__ import annotations

open_store = "this is not a factory"
