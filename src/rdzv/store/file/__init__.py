"""``file://``: a store in a shared directory: ``store`` (the protocol), ``disk`` (records), ``txn``."""

from rdzv.store.file.store import FileStore

__all__ = ["FileStore"]
