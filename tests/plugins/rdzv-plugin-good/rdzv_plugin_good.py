"""``goodmem://NAME``: a working out-of-tree store plugin (rdzv's memory store, renamed)."""

from __future__ import annotations

from urllib.parse import urlsplit

from rdzv.errors import ConfigurationError
from rdzv.store import Capabilities
from rdzv.store.memory import MemoryStore


class GoodMemStore(MemoryStore):
    """The memory store under the ``goodmem`` scheme, with its own capabilities."""

    capabilities = Capabilities(push_wait=True, leases=True, multi_process=False)


def open_store(url: str, **options: str) -> GoodMemStore:
    """The factory the entry point names: ``(url, **options) -> Store``."""
    if options:
        raise ConfigurationError(f"goodmem:// accepts no options, got: {', '.join(sorted(options))}")
    parts = urlsplit(url)
    store = GoodMemStore(parts.netloc + parts.path)
    store.url = url
    return store


open_store.capabilities = GoodMemStore.capabilities  # type: ignore[attr-defined]
