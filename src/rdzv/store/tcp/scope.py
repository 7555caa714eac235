"""What a connection authenticated with a run token may touch.

Every key, and every prefix it lists or waits on, must start with the run's
prefix (``rdzv/RUN/``); leases it names must be its own (the server checks
those, see :func:`lease_args`); server-wide operations (``stats``) are refused.
Arguments of the wrong type pass here and are refused by the operation itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_scope", "lease_args"]

_KEY_FIRST = frozenset({"get", "put", "cas", "add", "delete", "list", "wait"})
_NO_KEYS = frozenset({"grant", "refresh", "revoke", "lease_info", "ping"})
_LEASE_AT = {"put": 2, "cas": 3, "refresh": 0, "revoke": 0, "lease_info": 0}


def _keys(op: str, args: list[Any]) -> list[Any]:
    if op in _KEY_FIRST:
        return args[:1]
    if op == "put_many" and args and isinstance(args[0], list):
        return [item[0] for item in args[0] if isinstance(item, list) and item]
    return []


def check_scope(scope: str, op: str, args: list[Any]) -> str | None:
    """Why ``op`` with ``args`` is outside ``scope``, or ``None`` if it is inside."""
    if op not in _KEY_FIRST and op not in _NO_KEYS and op != "put_many":
        return f"{op} concerns the whole server"
    for key in _keys(op, args):
        if isinstance(key, str) and not key.startswith(scope):
            return f"key {key[:200]!r} belongs to another run"
    return None


def lease_args(op: str, args: list[Any]) -> list[int]:
    """The lease ids ``op`` names (each must have been granted to the same run)."""
    leases: list[Any] = []
    if op in _LEASE_AT and len(args) > _LEASE_AT[op]:
        leases.append(args[_LEASE_AT[op]])
    elif op == "put_many" and args and isinstance(args[0], list):
        leases += [item[2] for item in args[0] if isinstance(item, list) and len(item) == 3]
    return [lease for lease in leases if isinstance(lease, int) and not isinstance(lease, bool)]
