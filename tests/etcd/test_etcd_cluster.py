"""The etcd backend on a real 3-member loopback cluster with members killed under load."""

from __future__ import annotations

import threading
import time

import pytest

from rdzv.errors import StoreTimeoutError
from rdzv.registry import open_store
from rdzv.testing.etcd import EtcdCluster

pytestmark = pytest.mark.etcd

WORKERS = 4
STEPS = 30
PATIENCE = 30.0


def _leader_first(cluster: EtcdCluster) -> list[int]:
    leader = cluster.leader()
    return [leader] + [i for i in range(cluster.size) if i != leader]


def test_operations_complete_through_other_endpoints_when_the_leader_is_killed(etcd3: EtcdCluster) -> None:
    order = _leader_first(etcd3)  # clients prefer the first endpoint: the one about to die
    url = etcd3.url("job", order, timeout=15)
    halfway = threading.Barrier(WORKERS + 1)
    outcomes: dict[int, list[bool]] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with open_store(url) as store:
                results = outcomes.setdefault(worker, [])
                version = 0
                for step in range(STEPS):
                    if step == STEPS // 3:
                        halfway.wait(PATIENCE)
                    result = store.compare_and_set(f"doc/{worker}", str(step).encode(), version)
                    results.append(result.succeeded)
                    version = result.current.version if result.current else 0
                    store.add("counter", 1)
        except BaseException as exc:
            errors.append(exc)
            halfway.abort()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for thread in threads:
        thread.start()
    halfway.wait(PATIENCE)
    etcd3.kill(order[0])  # SIGKILL the leader while every worker has requests in flight
    for thread in threads:
        thread.join(PATIENCE)
    assert not errors, errors
    assert all(outcomes[w] == [True] * STEPS for w in range(WORKERS)), outcomes
    with open_store(etcd3.url("job", order[1:])) as store:
        for worker in range(WORKERS):
            assert store.get(f"doc/{worker}").value == str(STEPS - 1).encode()  # type: ignore[union-attr]
        # A counter increment whose reply was lost in the crash may have been retried.
        assert WORKERS * STEPS <= store.add("counter", 0) <= WORKERS * STEPS + WORKERS


def test_losing_quorum_fails_with_store_timeout_within_the_timeout(etcd3: EtcdCluster) -> None:
    order = _leader_first(etcd3)
    timeout = 2.0
    with open_store(etcd3.url("job", order, timeout=timeout)) as store:
        version = store.put("k", b"v")
        etcd3.kill(order[0])
        etcd3.kill(order[1])
        for operation in (
            lambda: store.put("k", b"w"),
            lambda: store.get("k"),
            lambda: store.compare_and_set("k", b"x", version),
            lambda: store.grant(5),
        ):
            started = time.monotonic()
            with pytest.raises(StoreTimeoutError):
                operation()
            assert time.monotonic() - started < timeout + 5.0  # slack for a loaded machine; not a hang


def test_wait_survives_a_restart_of_the_member_it_watches_through(etcd3: EtcdCluster) -> None:
    with open_store(etcd3.url("job", [0])) as watcher, open_store(etcd3.url("job", [1, 2])) as writer:
        since = writer.put("w/start", b"0")
        woken: list[int | None] = []
        thread = threading.Thread(target=lambda: woken.append(watcher.wait("w/", since, PATIENCE)))
        thread.start()
        deadline = time.monotonic() + PATIENCE
        while etcd3.watchers(0) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # polling member metrics until the watch is registered
        etcd3.kill(0)
        revision = writer.put("w/while-down", b"1")
        etcd3.restart(0)
        thread.join(PATIENCE)
        assert woken == [revision]


def test_a_wait_during_lost_quorum_raises_store_timeout_rather_than_reporting_no_change(
    etcd3: EtcdCluster,
) -> None:
    order = _leader_first(etcd3)
    timeout = 2.0
    survivor = order[2]
    with open_store(etcd3.url("job", [survivor], timeout=timeout)) as store:
        since = store.put("w/start", b"0")
        outcome: list[BaseException | int | None] = []

        def watch() -> None:
            try:
                outcome.append(store.wait("w/", since, PATIENCE))
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        thread = threading.Thread(target=watch)
        thread.start()
        deadline = time.monotonic() + PATIENCE
        while etcd3.watchers(survivor) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # polling member metrics until the watch is registered
        etcd3.kill(order[0])
        etcd3.kill(order[1])
        killed_at = time.monotonic()
        thread.join(PATIENCE)
        took = time.monotonic() - killed_at
        assert len(outcome) == 1
        assert isinstance(outcome[0], StoreTimeoutError), outcome
        # etcd cancels a leaderless member's watches after a few election timeouts (1 s each here)
        assert took < timeout + 10.0, f"the wait learned of the outage only after {took:.1f} s"
        started = time.monotonic()
        with pytest.raises(StoreTimeoutError):  # a new wait, too, while the quorum is gone
            store.wait("w/", since, PATIENCE)
        assert time.monotonic() - started < timeout + 5.0
