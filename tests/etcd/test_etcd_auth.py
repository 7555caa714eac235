"""The etcd backend against an etcd with authentication enabled."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from rdzv.errors import AuthenticationError
from rdzv.registry import open_store
from rdzv.testing.etcd import EtcdCluster

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def secured() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        cluster.enable_auth("root-secret")
        cluster.add_user("alice", "alice-secret", "/team/")
        yield cluster


def test_right_credentials_can_use_every_operation(secured: EtcdCluster) -> None:
    url = secured.url("team/a", user="alice", password="alice-secret")
    with open_store(url) as store, open_store(url) as other:
        since = store.put("k", b"v")
        assert store.get("k").value == b"v"  # type: ignore[union-attr]
        assert store.compare_and_set("k", b"w", since).succeeded
        assert store.add("n", 2) == 2
        lease = store.grant(10)
        assert store.refresh(lease)
        woken: list[int | None] = []
        waiter = threading.Thread(target=lambda: woken.append(other.wait("w/", since, 10)))
        waiter.start()
        store.put("w/x", b"1", lease=lease)
        waiter.join(10)
        assert woken
        assert woken[0] is not None
        store.revoke(lease)
        assert [e.key for e in store.list("")] == ["k", "n"]


def test_wrong_password_raises_authentication_error(secured: EtcdCluster) -> None:
    with (
        open_store(secured.url("team/a", user="alice", password="wrong")) as store,
        pytest.raises(AuthenticationError, match="alice"),
    ):
        store.get("k")


def test_unknown_user_raises_authentication_error(secured: EtcdCluster) -> None:
    with (
        open_store(secured.url("team/a", user="mallory", password="x")) as store,
        pytest.raises(AuthenticationError),
    ):
        store.put("k", b"v")


def test_missing_credentials_raise_authentication_error(secured: EtcdCluster) -> None:
    with (
        open_store(secured.url("team/a")) as store,
        pytest.raises(AuthenticationError, match="user name is empty"),
    ):
        store.get("k")


def test_keys_outside_the_users_permission_raise_authentication_error(secured: EtcdCluster) -> None:
    url = secured.url("elsewhere", user="alice", password="alice-secret")
    with open_store(url) as store:
        with pytest.raises(AuthenticationError, match="permission denied"):
            store.put("k", b"v")
        with pytest.raises(AuthenticationError, match="permission denied"):
            store.wait("", 0, 5)


def test_an_expired_token_is_replaced_by_logging_in_again(secured: EtcdCluster) -> None:
    with open_store(secured.url("team/b", user="alice", password="alice-secret")) as store:
        store.put("k", b"1")
        store._gateway._token = "expired.1"  # type: ignore[attr-defined]  # as the server forgets tokens
        assert store.put("k", b"2") > 0
        assert store.get("k").value == b"2"  # type: ignore[union-attr]
