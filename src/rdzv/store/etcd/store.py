"""``etcd://`` and ``etcd+https://``: the store protocol on etcd v3 primitives.

* versions are etcd ``mod_revision`` values (store-wide, strictly increasing);
* ``compare_and_set`` is one txn comparing ``mod_revision`` (``create_revision``
  for version 0) whose failure branch reads the current value;
* ``add`` is a compare-and-set loop; ``list`` is a prefix range;
* leases are etcd leases (ttl rounded up to whole seconds, at least 1), judged
  by the etcd leader's clock; ``refresh`` is one keep-alive;
* ``wait`` is a streaming watch (see :mod:`rdzv.store.etcd.watch`).

All keys live under the URL's path, e.g. ``etcd://host/jobs/a`` stores ``k`` at
``/jobs/a/k``.
"""

from __future__ import annotations

import math
from typing import Any

from rdzv.errors import ConfigurationError, StoreCorruptedError
from rdzv.store.base import Capabilities, CasResult, Entry, LeaseInfo, Listing, Store
from rdzv.store.etcd.codec import b64, entry_of, integer, prefix_end
from rdzv.store.etcd.config import EtcdConfig, parse_url
from rdzv.store.etcd.gateway import NOT_FOUND, EtcdServerError, Gateway, Json
from rdzv.store.etcd.watch import watch_for_change

__all__ = ["EtcdStore"]


class EtcdStore(Store):
    """A store in an etcd v3 cluster, reached through its HTTP/JSON gateway. Thread-safe."""

    capabilities = Capabilities(push_wait=True, leases=True, high_availability=True, multi_host=True)

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self.url = config.display_url
        self._namespace = config.prefix
        self._gateway = Gateway(config)

    @classmethod
    def from_url(cls, url: str, **options: str) -> EtcdStore:
        """Registry factory for ``etcd://`` and ``etcd+https://`` URLs (see ``rdzv.store.etcd.config``)."""
        return cls(parse_url(url, **{name: str(value) for name, value in options.items()}))

    # -- keys -----------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        data = self._call("/v3/kv/range", {"key": self._key(key)}, key)
        kvs = data.get("kvs", ())
        return entry_of(kvs[0], self._namespace) if kvs else None

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        data = self._call("/v3/kv/put", self._put_request(key, value, lease), key)
        return integer(data.get("header", {}), "revision")

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        reply = self._gateway.call(
            "/v3/kv/txn", self._cas_request(key, value, expected_version, lease), key=key
        )
        result = self._cas_result(key, value, lease, reply.data)
        if result.succeeded or not reply.uncertain:
            return result
        # An earlier attempt may have been applied before its answer was lost: if the
        # key now holds exactly what we wrote, with our lease, that write was ours.
        current = result.current
        if (
            current
            and current.version > expected_version
            and (current.value, current.lease) == (value, lease)
        ):
            return CasResult(True, current)
        return result

    def add(self, key: str, delta: int) -> int:
        current = self.get(key)
        while True:
            base = _counter(current, key)
            total = base + delta
            lease = current.lease if current else None
            version = current.version if current else 0
            reply = self._gateway.call(
                "/v3/kv/txn", self._cas_request(key, str(total).encode(), version, lease), key=key
            )
            result = self._cas_result(key, str(total).encode(), lease, reply.data)
            if result.succeeded:
                return total
            current = result.current

    def delete(self, key: str) -> bool:
        data = self._call("/v3/kv/deleterange", {"key": self._key(key)}, key)
        return integer(data, "deleted") > 0

    def list(self, prefix: str) -> Listing:
        full = (self._namespace + prefix).encode()
        request = {"key": b64(full or b"\0"), "range_end": b64(prefix_end(full))}
        data = self._call("/v3/kv/range", request, prefix)
        entries = sorted((entry_of(kv, self._namespace) for kv in data.get("kvs", ())), key=lambda e: e.key)
        return Listing(tuple(entries), integer(data.get("header", {}), "revision"))

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        if timeout <= 0:
            return self._changed_since(prefix, since)
        return watch_for_change(self._gateway, self._namespace + prefix, since, timeout)

    def count_at(self, prefix: str, revision: int) -> int | None:
        try:
            query = {**self._count_query(prefix), "revision": str(revision)}
            data = self._call("/v3/kv/range", query, prefix)
        except EtcdServerError as exc:
            if "compacted" in str(exc):
                return None  # history is gone
            raise
        return integer(data, "count")

    def _count_query(self, prefix: str) -> Json:
        full = (self._namespace + prefix).encode()
        return {"key": b64(full or b"\0"), "range_end": b64(prefix_end(full)), "count_only": True}

    def _changed_since(self, prefix: str, since: int) -> int | None:
        """Did anything under ``prefix`` change after ``since``? Answered now, without a watch.

        A put after ``since`` shows as a key with a newer ``mod_revision``; if
        there is none, the keys now are a subset of those at ``since``, so a
        deletion shows as fewer keys than at revision ``since``.
        """
        query = self._count_query(prefix)
        # etcd's count ignores min_mod_revision (the filter prunes returned keys), so ask for one key.
        newer_query: Json = {**query, "count_only": False, "keys_only": True, "limit": "1"}
        newer = self._call("/v3/kv/range", {**newer_query, "min_mod_revision": str(since + 1)}, prefix)
        revision = integer(newer.get("header", {}), "revision")
        if newer.get("kvs"):
            return revision
        if since <= 0:
            return None
        now = integer(self._call("/v3/kv/range", query, prefix), "count")
        then = self.count_at(prefix, since)
        # No history (compacted): report a change, callers re-read.
        return revision if then is None or then > now else None

    # -- leases -----------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise ConfigurationError(f"lease ttl must be positive, got {ttl}")
        data = self._call("/v3/lease/grant", {"TTL": str(max(1, math.ceil(ttl)))}, None)
        lease = integer(data, "ID")
        if not lease:
            raise StoreCorruptedError(f"etcd {self.url} granted a lease without an ID: {data}", url=self.url)
        return lease

    def refresh(self, lease: int) -> bool:
        data = self._call("/v3/lease/keepalive", {"ID": str(lease)}, None)
        # An expired or unknown lease is answered with 200 and no TTL.
        return integer(data.get("result", data), "TTL") > 0

    def lease_info(self, lease: int) -> LeaseInfo | None:
        data = self._call("/v3/lease/timetolive", {"ID": str(lease)}, None)
        remaining, granted = integer(data, "TTL"), integer(data, "grantedTTL")
        # Whole seconds, by the leader's clock; an expired or unknown lease has TTL -1.
        return LeaseInfo(float(granted), float(remaining)) if remaining >= 0 and granted > 0 else None

    def revoke(self, lease: int) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)}, None)
        except EtcdServerError as exc:
            if exc.code != NOT_FOUND:
                raise

    def close(self) -> None:
        self._gateway.close()

    # -- internals ----------------------------------------------------------

    def _call(self, path: str, body: Json, key: str | None) -> Json:
        return self._gateway.call(path, body, key=key).data

    def _key(self, key: str) -> str:
        return b64(self._namespace + key)

    def _put_request(self, key: str, value: bytes, lease: int | None) -> Json:
        request: Json = {"key": self._key(key), "value": b64(value)}
        if lease is not None:
            request["lease"] = str(lease)
        return request

    def _cas_request(self, key: str, value: bytes, expected_version: int, lease: int | None) -> Json:
        compare: dict[str, Any] = {"key": self._key(key), "result": "EQUAL"}
        if expected_version == 0:
            compare.update(target="CREATE", create_revision="0")
        else:
            compare.update(target="MOD", mod_revision=str(expected_version))
        return {
            "compare": [compare],
            "success": [{"request_put": self._put_request(key, value, lease)}],
            "failure": [{"request_range": {"key": self._key(key)}}],
        }

    def _cas_result(self, key: str, value: bytes, lease: int | None, data: Json) -> CasResult:
        if data.get("succeeded"):
            revision = integer(data.get("header", {}), "revision")
            return CasResult(True, Entry(key, value, revision, lease))
        responses = data.get("responses") or [{}]
        kvs = responses[0].get("response_range", {}).get("kvs", ())
        return CasResult(False, entry_of(kvs[0], self._namespace) if kvs else None)


def _counter(entry: Entry | None, key: str) -> int:
    if entry is None:
        return 0
    try:
        return int(entry.value)
    except ValueError as exc:
        raise StoreCorruptedError(
            f"counter {key!r} holds {entry.value[:40]!r}, not an integer", key=key
        ) from exc
