"""Any store that loses its state is rebuilt by the nodes: an emptied in-process store.

The memory store has no server id, so nothing tells the nodes it was emptied but
what they find: their lease unknown and their round gone. Threads, no processes:
this is the generic path of ``rdzv.rendezvous.recovery``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from rdzv.core.records import RoundDoc, RoundState, decode_round_doc
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import Rendezvous
from rdzv.rendezvous.recovery import adopt_round
from rdzv.store.base import CasResult, Entry, Listing, Store
from rdzv.store.memory import MemoryStore

HEARTBEAT = 0.1
PATIENCE = 20.0


class EmptiableStore(Store):
    """Forwards to a memory store that :meth:`empty` replaces with a blank one."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.capabilities = self.inner.capabilities

    def empty(self) -> None:
        self.inner = MemoryStore()

    def get(self, key: str) -> Entry | None:
        return self.inner.get(key)

    def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        return self.inner.put(key, value, lease=lease)

    def put_many(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        return self.inner.put_many(items)

    def compare_and_set(
        self, key: str, value: bytes, expected_version: int, *, lease: int | None = None
    ) -> CasResult:
        return self.inner.compare_and_set(key, value, expected_version, lease=lease)

    def add(self, key: str, delta: int) -> int:
        return self.inner.add(key, delta)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def list(self, prefix: str) -> Listing:
        return self.inner.list(prefix)

    def wait(self, prefix: str, since: int, timeout: float) -> int | None:
        return self.inner.wait(prefix, since, min(timeout, HEARTBEAT))  # the old store never wakes

    def grant(self, ttl: float) -> int:
        return self.inner.grant(ttl)

    def refresh(self, lease: int) -> bool:
        return self.inner.refresh(lease)

    def revoke(self, lease: int) -> None:
        self.inner.revoke(lease)


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)  # polling an in-process condition the nodes' threads change


def test_an_emptied_store_is_rebuilt_and_the_round_goes_on_without_a_change() -> None:
    store = EmptiableStore()
    nodes = [
        Rendezvous(store, "job", 3, 3, node_id=f"n{i}", addr=f"10.0.0.{i}:2950", heartbeat_interval=HEARTBEAT)
        for i in range(3)
    ]
    try:
        with ThreadPoolExecutor(3) as pool:
            infos = list(pool.map(lambda node: node.next_rendezvous(), nodes))
            store.empty()
            _until(lambda: all(node.recoveries == 1 for node in nodes), "every member re-asserts")
            run = store.scoped(Layout("job").prefix)
            entry = run.get(Layout.doc)
            assert entry is not None
            doc = decode_round_doc(entry.value, Layout.doc)
            assert (doc.round, doc.rebuilt, doc.world_size) == (1, True, 3)
            changes = list(pool.map(lambda node: node.wait_for_change(3 * HEARTBEAT * 3 + 0.5), nodes))
        assert changes == [None, None, None]  # the recovery window passed: nobody was lost
        # The membership record went with the store: it is rebuilt from the re-asserted rank keys.
        assert [info.members for info in infos] == [["n0", "n1", "n2"]] * 3
    finally:
        for node in nodes:
            node.shutdown()


def test_a_store_adopts_the_highest_round_its_members_assert() -> None:
    store = MemoryStore()
    older = RoundDoc(2, RoundState.COMPLETE, 2, "h:1", "old")
    newer = RoundDoc(5, RoundState.COMPLETE, 3, "h:1", "new")
    assert adopt_round(store, older) == RoundDoc(2, RoundState.COMPLETE, 2, "h:1", "old", rebuilt=True)
    assert adopt_round(store, newer) is not None
    assert adopt_round(store, older) is not None  # an older round never replaces a newer one
    entry = store.get(Layout.doc)
    assert entry is not None
    assert decode_round_doc(entry.value, Layout.doc).round == 5
