"""Rank assignment for a new round's members."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rdzv.core.records import JoinRecord

RANK_POLICIES = ("stable", "sorted", "arrival")

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders digit runs by value: ``node9`` before ``node10``."""
    return tuple(
        (0, int(part), part) if part.isdigit() else (1, 0, part) for part in _DIGITS.split(text) if part
    )


def _by_address(record: JoinRecord) -> tuple[object, ...]:
    return (natural_key(record.host), natural_key(record.node_id), record.port)


def assign_ranks(members: Sequence[JoinRecord], policy: str, previous_round: int) -> list[JoinRecord]:
    """Members in rank order (index = rank).

    * ``stable``: a member of ``previous_round`` keeps its rank when it is still
      below the new world size; the others fill the free ranks in address order.
    * ``sorted``: natural sort of host, then node id (then port).
    * ``arrival``: lobby arrival order.
    """
    if policy == "arrival":
        return sorted(members, key=lambda r: (r.arrival, r.node_id))
    if policy == "sorted":
        return sorted(members, key=_by_address)
    if policy != "stable":
        raise ValueError(f"unknown rank policy {policy!r}; expected one of {', '.join(RANK_POLICIES)}")
    size = len(members)
    placed: dict[int, JoinRecord] = {}
    rest: list[JoinRecord] = []
    for record in sorted(members, key=lambda r: (r.arrival, r.node_id)):
        old = record.prev_rank if record.prev_round == previous_round else None
        if old is not None and old < size and old not in placed:
            placed[old] = record
        else:
            rest.append(record)
    rest.sort(key=_by_address)
    free = (rank for rank in range(size) if rank not in placed)
    for record in rest:
        placed[next(free)] = record
    return [placed[rank] for rank in range(size)]
