"""The gateway's JSON encoding: base64, int64 strings, omitted defaults, prefix ranges."""

from __future__ import annotations

import pytest

from rdzv.errors import StoreCorruptedError
from rdzv.store.etcd.codec import b64, entry_of, integer, prefix_end


def test_prefix_end_is_the_first_key_after_the_prefix() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_omitted_int64_fields_read_as_zero_and_strings_as_ints() -> None:
    assert integer({}, "lease") == 0
    assert integer({"mod_revision": "9223372036854775807"}, "mod_revision") == 2**63 - 1


def test_entry_of_strips_the_namespace_and_fills_defaults() -> None:
    entry = entry_of({"key": b64("/ns/k"), "mod_revision": "7"}, "/ns/")
    assert (entry.key, entry.value, entry.version, entry.lease) == ("k", b"", 7, None)


def test_keys_that_are_not_utf8_are_reported_as_corruption() -> None:
    with pytest.raises(StoreCorruptedError, match="not UTF-8"):
        entry_of({"key": b64(b"/ns/\xff"), "mod_revision": "1"}, "/ns/")
