"""How far the next round of a run is from completing, as a person watching a join sees it."""

from __future__ import annotations

from dataclasses import dataclass

from rdzv.core.records import decode_round_doc
from rdzv.rendezvous.config import RendezvousSettings
from rdzv.rendezvous.layout import Layout
from rdzv.store.base import Store

__all__ = ["JoinProgress", "ProgressWatch"]


@dataclass(frozen=True)
class JoinProgress:
    round: int
    """The round being joined."""
    joined: int
    """Nodes in its lobby, spares included."""
    min_nodes: int
    max_nodes: int
    last_call_in: float | None
    """Seconds until the round completes with fewer than ``max_nodes``; ``None`` before ``min_nodes``."""

    @property
    def spares(self) -> int:
        return max(self.joined - self.max_nodes, 0)


class ProgressWatch:
    """Reads the lobby of a run's next round: two reads per look, O(lobby) bytes.

    The last call is timed from when this watcher first saw ``min_nodes`` joined:
    close to the round's own timing (its ``min_nodes``-th arrival's clock), and
    never a comparison of clocks across hosts.
    """

    def __init__(self, store: Store, settings: RendezvousSettings) -> None:
        self._run = store.scoped(Layout(settings.run_id).prefix)
        self._settings = settings
        self._last_call: tuple[int, float] | None = None
        self.revision = 0

    def look(self, now: float) -> JoinProgress:
        entry = self._run.get(Layout.doc)
        round_ = (decode_round_doc(entry.value, Layout.doc).round if entry else 0) + 1
        lobby = self._run.list(Layout.lobby(round_))
        self.revision = max(lobby.revision, entry.version if entry else 0)
        s = self._settings
        last_call_in = None
        if s.min_nodes <= len(lobby) < s.max_nodes:
            if self._last_call is None or self._last_call[0] != round_:
                self._last_call = (round_, now + s.last_call_timeout)
            last_call_in = max(self._last_call[1] - now, 0.0)
        return JoinProgress(round_, len(lobby), s.min_nodes, s.max_nodes, last_call_in)

    def wait(self, timeout: float) -> None:
        """Block until the run changes or ``timeout`` passes."""
        self._run.wait("", self.revision, timeout)
