"""Per-run figures for the store server's Prometheus metrics.

The tcp server knows keys, not runs; this module reads runs out of its keyspace
with the key layout (``layout.py``) and follows its changes: a round document
moving to a higher complete round is a round completed, a rank key of the
current round vanishing is a member lost. It runs in the server's event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rdzv.core.plan import counts_as_waiting
from rdzv.core.records import RoundState, decode_round_doc
from rdzv.errors import RendezvousStateError
from rdzv.rendezvous.join import read_lobby_entry
from rdzv.rendezvous.layout import ROOT, Layout
from rdzv.store.keyspace import KeySpace
from rdzv.store.tcp.metrics import MAX_RUNS, RunFigures

__all__ = ["RunTracker", "track_runs"]


@dataclass
class _Run:
    round: int = 0
    rounds_completed: int = 0
    members_lost: int = 0
    last_rendezvous: float | None = None


class RunTracker:
    """A :class:`~rdzv.store.tcp.metrics.RunObserver` for rendezvous runs."""

    def __init__(self, *, max_runs: int = MAX_RUNS) -> None:
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._max_runs = max_runs

    def changed(self, keys: KeySpace, changed: Sequence[str]) -> None:
        for key in changed:
            if not key.startswith(ROOT):
                continue
            run_id, _, rest = key[len(ROOT) :].partition("/")
            run = self._touch(run_id)
            if rest == Layout.doc:
                self._doc_changed(keys, run, key)
            elif rest.startswith(Layout.ranks(run.round)) and run.round and keys.get(key) is None:
                run.members_lost += 1

    @staticmethod
    def _doc_changed(keys: KeySpace, run: _Run, key: str) -> None:
        entry = keys.get(key)
        if entry is None:
            return
        try:
            doc = decode_round_doc(entry.value, key)
        except RendezvousStateError:
            return  # not a rendezvous document: nothing to report
        if doc.state is RoundState.COMPLETE and doc.round > run.round:
            run.rounds_completed += 1
            run.last_rendezvous = time.time()  # shown on a dashboard, never compared across hosts
        run.round = max(run.round, doc.round)

    def _touch(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run()
            while len(self._runs) > self._max_runs:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(run_id)  # most recently active last
        return run

    def figures(self, keys: KeySpace) -> list[RunFigures]:
        return [self._figures(keys, run_id, run) for run_id, run in reversed(self._runs.items())]

    def _figures(self, keys: KeySpace, run_id: str, run: _Run) -> RunFigures:
        prefix = Layout(run_id).prefix
        members = len(keys.list(prefix + Layout.ranks(run.round)).entries) if run.round else 0
        world = max_nodes = 0
        doc = keys.get(prefix + Layout.doc)
        if doc is not None:
            try:
                decoded = decode_round_doc(doc.value, doc.key)
                world, max_nodes = decoded.world_size, decoded.max_nodes
            except RendezvousStateError:
                pass
        waiting = 0
        for entry in keys.list(prefix + Layout.lobby(run.round + 1)).entries:
            try:
                waiting += counts_as_waiting(read_lobby_entry(entry), run.round, world, max_nodes)
            except RendezvousStateError:
                continue
        return RunFigures(
            run_id, run.round, members, waiting, run.rounds_completed, run.members_lost, run.last_rendezvous
        )


def track_runs(store: Any) -> None:
    """Give a store this process hosts (``?metrics_port=``) per-run figures in its metrics."""
    hosted = getattr(store, "hosted", None)
    metrics = getattr(getattr(hosted, "server", None), "metrics", None)
    if metrics is not None and metrics.runs is None:
        metrics.runs = RunTracker()
