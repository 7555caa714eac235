"""The documents a rendezvous keeps in the store, as versioned JSON (never pickle).

Every record carries ``"schema": 1``; a record of another schema, or one that
does not parse, raises ``RendezvousStateError`` naming the key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, TypeVar

from rdzv.errors import RendezvousStateError

SCHEMA = 1
_Record = TypeVar("_Record", "JoinRecord", "RankRecord", "MembersRecord")


class RoundState(str, Enum):
    """State of the newest round. A round being assembled is ``doc.round + 1``."""

    COMPLETE = "complete"
    CLOSED = "closed"


@dataclass(frozen=True)
class RoundDoc:
    """The round document: the newest complete round, or closed. Changed only by CAS."""

    round: int
    state: RoundState
    world_size: int = 0
    coordinator: str = ""
    token: str = ""
    min_nodes: int = 0
    max_nodes: int = 0
    rebuilt: bool = False
    """Re-asserted by a member after the store lost its state, not completed on this store."""

    @property
    def closed(self) -> bool:
        return self.state is RoundState.CLOSED


@dataclass(frozen=True)
class JoinRecord:
    """A node waiting in the lobby of the next round.

    ``arrival`` orders the lobby: readers set it to the store revision at
    which the record was written, so it needs no counter round trip.
    """

    node_id: str
    host: str
    port: int
    arrival: int
    lease: int
    labels: dict[str, str] = field(default_factory=dict)
    prev_round: int = 0
    prev_rank: int | None = None
    prev_world: int = 0
    """World size of ``prev_round`` (the split-brain guard counts its members)."""

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class RankRecord:
    """One member's place in a completed round; bound to that member's lease."""

    token: str
    rank: int
    addr: str = ""
    """The member's ``host:port`` (the membership can be rebuilt from the rank keys)."""


@dataclass(frozen=True)
class MembersRecord:
    """The membership of a completed round in rank order (read only on demand)."""

    token: str
    members: list[str]
    addrs: list[str]


def encode(record: RoundDoc | JoinRecord | RankRecord | MembersRecord) -> bytes:
    body = asdict(record)
    if isinstance(record, RoundDoc):
        body["state"] = record.state.value
    return json.dumps({"schema": SCHEMA, **body}, separators=(",", ":")).encode()


def decode_round_doc(raw: bytes, key: str) -> RoundDoc:
    body = _body(raw, key)
    try:
        return RoundDoc(
            round=int(body["round"]),
            state=RoundState(body["state"]),
            world_size=int(body.get("world_size", 0)),
            coordinator=str(body.get("coordinator", "")),
            token=str(body.get("token", "")),
            min_nodes=int(body.get("min_nodes", 0)),
            max_nodes=int(body.get("max_nodes", 0)),
            rebuilt=bool(body.get("rebuilt", False)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RendezvousStateError(f"malformed round document at {key!r}: {exc}") from exc


def decode_join(raw: bytes, key: str) -> JoinRecord:
    return _build(JoinRecord, raw, key)


def decode_rank(raw: bytes, key: str) -> RankRecord:
    return _build(RankRecord, raw, key)


def decode_members(raw: bytes, key: str) -> MembersRecord:
    return _build(MembersRecord, raw, key)


def _build(cls: type[_Record], raw: bytes, key: str) -> _Record:
    body = _body(raw, key)
    try:
        return cls(**body)
    except TypeError as exc:
        raise RendezvousStateError(f"malformed {cls.__name__} at {key!r}: {exc}") from exc


def _body(raw: bytes, key: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RendezvousStateError(f"unreadable rendezvous record at {key!r}: {exc}") from exc
    if not isinstance(body, dict) or body.get("schema") != SCHEMA:
        found = body.get("schema") if isinstance(body, dict) else type(body).__name__
        raise RendezvousStateError(
            f"rendezvous record at {key!r} has schema {found!r}; this rdzv reads schema {SCHEMA}"
        )
    del body["schema"]
    return body
