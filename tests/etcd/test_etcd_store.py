"""The etcd backend on one real etcd member: the store contract and etcd specifics."""

from __future__ import annotations

import time
import uuid

import pytest

from rdzv.errors import StoreUnavailableError
from rdzv.registry import open_store
from rdzv.store.etcd import EtcdStore
from rdzv.testing.contract import StoreContract
from rdzv.testing.etcd import EtcdCluster
from rdzv.testing.net import free_port

pytestmark = pytest.mark.etcd


def _fresh(etcd: EtcdCluster) -> str:
    return etcd.url(f"test/{uuid.uuid4().hex[:12]}")


class TestEtcdStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, etcd: EtcdCluster) -> str:
        return _fresh(etcd)


def test_registry_opens_an_etcd_store_with_its_capabilities(etcd: EtcdCluster) -> None:
    with open_store(_fresh(etcd)) as store:
        assert isinstance(store, EtcdStore)
        store.require(push_wait=True, leases=True, high_availability=True, multi_host=True)


def test_keys_are_namespaced_under_the_url_path(etcd: EtcdCluster) -> None:
    name = uuid.uuid4().hex[:12]
    with open_store(etcd.url(f"ns/{name}")) as scoped, open_store(etcd.url()) as root:
        version = scoped.put("k", b"v")
        entry = root.get(f"/ns/{name}/k")
        assert entry is not None
        assert (entry.value, entry.version) == (b"v", version)
        assert [e.key for e in root.list(f"/ns/{name}/")] == [f"/ns/{name}/k"]


def test_wait_reports_a_change_when_its_history_was_compacted(etcd: EtcdCluster) -> None:
    with open_store(_fresh(etcd)) as store:
        since = store.put("w/k", b"1")
        store.put("w/k", b"2")
        latest = store.put("other", b"3")
        etcd.compact(latest)
        started = time.monotonic()
        revision = store.wait("w/", since, 10)
        assert revision is not None
        assert revision > since
        assert time.monotonic() - started < 5


def test_short_lease_ttl_is_rounded_up_to_a_whole_second(etcd: EtcdCluster) -> None:
    with open_store(_fresh(etcd)) as store:
        lease = store.grant(0.01)
        store.put("l", b"x", lease=lease)
        assert store.refresh(lease) is True
        info = store.lease_info(lease)
        assert info is not None
        assert info.ttl >= 1
        assert 0 < info.remaining <= info.ttl
        store.revoke(lease)
        assert store.lease_info(lease) is None
        assert store.get("l") is None
        store.revoke(lease)  # revoking twice is harmless


def test_unreachable_cluster_raises_store_unavailable_within_the_timeout() -> None:
    url = f"etcd://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/x?timeout=1"
    with open_store(url) as store:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            store.get("k")
        assert time.monotonic() - started < 3


def test_etcd_counts_a_prefix_as_it_was_at_a_past_revision(etcd: EtcdCluster) -> None:
    with open_store(_fresh(etcd)) as store:
        store.put("c/1", b"")
        then = store.put("c/2", b"")
        store.put("c/3", b"")
        store.delete("c/1")
        assert store.count_at("c/", then) == 2
        assert store.count_at("c/", store.put("c/4", b"")) == 3
