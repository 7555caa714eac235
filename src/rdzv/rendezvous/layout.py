"""Where a rendezvous keeps its records, all under ``rdzv/RUN_ID/`` in the store.

::

    doc                      round document: newest complete round, or closed (CAS only)
    arrivals/K               counter: arrival order in the lobby of round K
    claim/K                  who is completing round K (bound to the claimant's lease)
    r/K-1/next/NODE          lobby of round K: one join record per node (node's lease)
    r/K/rank/NODE            a member's rank in round K (bound to that member's lease)
    r/K/members              round K's members in rank order (read on demand)
    r/K/closed               marker written when the run is closed during round K
    r/K/left/NODE            a member of round K that left cleanly (``status`` tells it from evicted)
    r/K/read/NODE            a member has read its placement in round K (bound to its lease; see
                             ``Rendezvous.wait_placements_read``)
    user/K/                  the job's own keys for round K (``RendezvousInfo.store``)

Members of round K watch ``r/K/``: a rank key vanishing is a member lost, a
lobby key appearing is a node waiting, the marker is the run closing. Nodes in
a lobby watch only ``doc``, so joins never wake them.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "rdzv/"


@dataclass(frozen=True)
class Layout:
    """Keys of one run, relative to ``prefix``."""

    run_id: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}{self.run_id}/"

    doc = "doc"

    @staticmethod
    def arrivals(round_: int) -> str:
        return f"arrivals/{round_}"

    @staticmethod
    def claim(round_: int) -> str:
        return f"claim/{round_}"

    @staticmethod
    def lobby(round_: int) -> str:
        return f"r/{round_ - 1}/next/"

    @staticmethod
    def area(round_: int) -> str:
        return f"r/{round_}/"

    @staticmethod
    def ranks(round_: int) -> str:
        return f"r/{round_}/rank/"

    @staticmethod
    def members(round_: int) -> str:
        return f"r/{round_}/members"

    @staticmethod
    def closed_marker(round_: int) -> str:
        return f"r/{round_}/closed"

    @staticmethod
    def left(round_: int) -> str:
        return f"r/{round_}/left/"

    @staticmethod
    def placement_read(round_: int) -> str:
        return f"r/{round_}/read/"

    @staticmethod
    def user(round_: int) -> str:
        return f"user/{round_}/"
