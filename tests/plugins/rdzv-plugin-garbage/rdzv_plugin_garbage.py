"""A store plugin whose factory returns something that is not a store."""

from __future__ import annotations


def open_store(url: str, **options: str) -> dict[str, str]:
    """Returns a dict where an ``rdzv.store.Store`` is due."""
    return {"url": url, **options}
