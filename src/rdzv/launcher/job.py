"""What the agents of one job share through the store, beside the rendezvous itself.

Under the run's prefix (``rdzv/RUN_ID/launcher/``)::

    restarts            counter: restarts the job has spent (one budget for every node)
    failure/R           the first worker failure of round R (create-only: one restart per round)
    outcome             how the job ended: {"ok": bool, "report": str}, written before closing the run
    done/R              counter: nodes of round R whose workers all exited 0 (the exit barrier)
    left/R              counter: nodes of round R that read the outcome (a node hosting the store waits)

and in each round's own store (``RendezvousInfo.store``)::

    launcher/node/G     what node G brings to the round: its worker count and a port for JAX

A restart by any node is a restart of the job: whichever node records a round's
first failure spends one unit, so nodes whose workers fail together (as a
collective breaks) spend it once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from rdzv.errors import RendezvousStateError, RendezvousTimeoutError
from rdzv.launcher.report import WorkerFailure
from rdzv.rendezvous.layout import Layout
from rdzv.rendezvous.node import RendezvousInfo
from rdzv.store.base import Entry, Store

__all__ = ["JobState", "NodeSlot", "Outcome", "exchange_slots"]

NODE_SLOTS = "launcher/node/"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    report: str


@dataclass(frozen=True)
class NodeSlot:
    """What one node brings to a round."""

    nproc: int
    jax_port: int


class JobState:
    """The job-wide records of one run (restart budget, failures, outcome, exit barrier)."""

    def __init__(self, root: Store, run_id: str) -> None:
        self._store = root.scoped(Layout(run_id).prefix + "launcher/")

    def restart_count(self) -> int:
        return self._store.add("restarts", 0)

    def record_failure(self, failure: WorkerFailure) -> int | None:
        """Record ``failure`` as its round's first; if it is, spend a restart and return the count."""
        won = self._store.compare_and_set(f"failure/{failure.round}", failure.to_bytes(), 0).succeeded
        return self._store.add("restarts", 1) if won else None

    def round_failed(self, round_: int) -> bool:
        return self._store.get(f"failure/{round_}") is not None

    def failures(self) -> list[WorkerFailure]:
        """Every round's first failure, oldest round first."""
        found = [WorkerFailure.from_bytes(e.value) for e in self._store.list("failure/")]
        return sorted((f for f in found if f is not None), key=lambda f: f.round)

    def arrive_done(self, round_: int) -> int:
        return self._store.add(f"done/{round_}", 1)

    def depart(self, round_: int, world: int, wait_for_all: bool, timeout: float) -> None:
        """Count this node out of ``round_``; with ``wait_for_all``, wait (bounded) for the rest."""
        key = f"left/{round_}"
        self._store.add(key, 1)
        deadline = time.monotonic() + timeout
        while wait_for_all:
            entry = self._store.get(key)
            remaining = deadline - time.monotonic()
            if entry is None or int(entry.value) >= world or remaining <= 0:
                return
            self._store.wait(key, entry.version, remaining)

    def set_outcome(self, outcome: Outcome) -> None:
        """Record how the job ended; the first outcome written stands."""
        payload = json.dumps({"ok": outcome.ok, "report": outcome.report}).encode()
        self._store.compare_and_set("outcome", payload, 0)

    def outcome(self) -> Outcome | None:
        entry = self._store.get("outcome")
        if entry is None:
            return None
        try:
            data = json.loads(entry.value)
            return Outcome(bool(data["ok"]), str(data["report"]))
        except (ValueError, KeyError, TypeError):
            return Outcome(False, "the job's outcome in the store is unreadable")

    def wait(self, since: int, timeout: float) -> int | None:
        """Block until a job record changes (a failure, the outcome) or ``timeout``."""
        return self._store.wait("", since, timeout)

    def revision(self) -> int:
        return self._store.list("outcome").revision


def exchange_slots(
    info: RendezvousInfo, mine: NodeSlot, deadline: float, interrupted: Callable[[], bool]
) -> list[NodeSlot]:
    """Publish this node's slot in the round and return every node's, by group rank.

    ``interrupted`` is asked whenever the wait wakes (at least once a second);
    when it says yes the exchange gives up and returns ``[]`` (the round changed).
    """
    store = info.store
    slot = {"nproc": mine.nproc, "jax_port": mine.jax_port}
    store.put(f"{NODE_SLOTS}{info.rank}", json.dumps(slot).encode())
    while True:
        listing = store.list(NODE_SLOTS)
        if len(listing) >= info.world_size:
            return _read_slots(info, listing.entries)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RendezvousTimeoutError(
                f"round {info.round}: not every node published its worker count in time",
                run_id=info.run_id,
                round=info.round,
            )
        store.wait(NODE_SLOTS, listing.revision, min(remaining, 1.0))
        if interrupted():
            return []


def _read_slots(info: RendezvousInfo, entries: tuple[Entry, ...]) -> list[NodeSlot]:
    slots: dict[int, NodeSlot] = {}
    try:
        for entry in entries:
            data = json.loads(entry.value)
            slots[int(entry.key[len(NODE_SLOTS) :])] = NodeSlot(int(data["nproc"]), int(data["jax_port"]))
        return [slots[g] for g in range(info.world_size)]
    except (ValueError, KeyError, TypeError) as exc:
        raise RendezvousStateError(
            f"round {info.round}: unreadable worker counts under {NODE_SLOTS!r} in the round store: {exc!r}",
            run_id=info.run_id,
            round=info.round,
        ) from exc
