"""Validated rendezvous settings, and the environment variables that supply them."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from rdzv.core.ranks import RANK_POLICIES
from rdzv.errors import ConfigurationError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")

# Command-line options fall back to these variables (see `rdzv join --help`).
ENV_VARS = {
    "url": "RDZV_URL",
    "run_id": "RDZV_RUN_ID",
    "min_nodes": "RDZV_MIN_NODES",
    "max_nodes": "RDZV_MAX_NODES",
    "join_timeout": "RDZV_JOIN_TIMEOUT",
    "last_call_timeout": "RDZV_LAST_CALL_TIMEOUT",
    "heartbeat_interval": "RDZV_HEARTBEAT_INTERVAL",
    "heartbeat_misses": "RDZV_HEARTBEAT_MISSES",
    "rank_policy": "RDZV_RANK_POLICY",
    "split_brain_guard": "RDZV_SPLIT_BRAIN_GUARD",
    "token": "RDZV_TOKEN",
}


@dataclass(frozen=True)
class RendezvousSettings:
    """Everything that shapes one node's rendezvous; checked when built."""

    run_id: str
    min_nodes: int
    max_nodes: int
    join_timeout: float = 600.0
    last_call_timeout: float = 30.0
    close_timeout: float = 30.0
    heartbeat_interval: float = 5.0
    heartbeat_misses: int = 3
    rank_policy: str = "stable"
    split_brain_guard: bool = True
    """A round formed on a store that did not hold the previous round (or on a store that
    may fail over) needs a strict majority of the previous round's members."""

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not _RUN_ID.match(self.run_id):
            raise ConfigurationError(
                f"run_id {self.run_id!r} is invalid: use 1-128 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        for name in ("min_nodes", "max_nodes", "heartbeat_misses"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.max_nodes < self.min_nodes:
            raise ConfigurationError(f"max_nodes ({self.max_nodes}) must be >= min_nodes ({self.min_nodes})")
        for name in ("join_timeout", "last_call_timeout", "close_timeout", "heartbeat_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.split_brain_guard, bool):
            raise ConfigurationError(
                f"split_brain_guard must be true or false, got {self.split_brain_guard!r}"
            )
        if self.rank_policy not in RANK_POLICIES:
            raise ConfigurationError(
                f"rank_policy {self.rank_policy!r} is unknown; expected one of {', '.join(RANK_POLICIES)}"
            )

    @property
    def lease_ttl(self) -> float:
        """A node missing this many seconds of heartbeats is evicted."""
        return self.heartbeat_interval * self.heartbeat_misses

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_strings(cls, values: dict[str, Any]) -> RendezvousSettings:
        """Build from string values (URL queries, ``--rdzv-conf``); names the bad key."""
        converted: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, raw in values.items():
            kind = types[name]
            if kind == "bool":
                converted[name] = _boolean(name, raw)
                continue
            try:
                converted[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{name} must be a {kind}, got {raw!r}") from exc
        return cls(**converted)


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")
