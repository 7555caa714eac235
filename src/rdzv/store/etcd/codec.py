"""The gateway's JSON encoding: base64 keys and values, int64 as strings, defaults omitted."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from rdzv.errors import StoreCorruptedError
from rdzv.store.base import Entry

__all__ = ["b64", "entry_of", "integer", "prefix_end", "unb64"]


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StoreCorruptedError(f"etcd sent invalid base64: {text[:40]!r}") from exc


def integer(obj: dict[str, Any], name: str) -> int:
    """An int64 field, which the gateway sends as a string and omits when zero."""
    value = obj.get(name)
    return 0 if value is None else int(value)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key after every key that starts with ``prefix`` (etcd's ``range_end``)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\0"  # every key
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def entry_of(kv: dict[str, Any], namespace: str) -> Entry:
    """Decode an etcd ``KeyValue`` into an :class:`Entry` with ``namespace`` removed."""
    raw_key = unb64(kv.get("key", ""))
    try:
        key = raw_key.decode()
    except UnicodeDecodeError as exc:
        raise StoreCorruptedError(f"etcd key is not UTF-8: {raw_key[:60]!r}", key=repr(raw_key)) from exc
    if not key.startswith(namespace):
        raise StoreCorruptedError(f"etcd returned key {key!r} outside namespace {namespace!r}", key=key)
    lease = integer(kv, "lease")
    return Entry(
        key=key[len(namespace) :],
        value=unb64(kv.get("value", "")),
        version=integer(kv, "mod_revision"),
        lease=lease or None,
    )
