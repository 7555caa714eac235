"""Real etcd servers for the etcd backend tests (started from ``rdzv.testing.etcd``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rdzv.testing.etcd import EtcdCluster


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """One etcd member shared by the session; tests keep apart by key prefix."""
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def etcd3() -> Iterator[EtcdCluster]:
    """A fresh 3-member cluster for one test, which may kill and restart members."""
    with EtcdCluster(3) as cluster:
        yield cluster
