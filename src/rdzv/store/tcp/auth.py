"""Keys of the TCP store: handshake proofs, per-frame MACs, and per-run tokens.

After a handshake in which both sides proved they know the token, each side
derives two keys (one per direction) from the token and both nonces. Every
later frame carries a 16-byte keyed BLAKE2b of ``seq | frame``, where ``seq``
counts the frames sent in that direction (it is implicit: never sent). A frame
that is altered, replayed, dropped, reordered or reflected back fails its MAC.
(Keyed BLAKE2b is a MAC by design and costs a third of an HMAC-SHA256 here.)

A *run token* (``rdzv token --run-id RUN``) is ``rdzv-run:RUN:HEX`` where HEX
is an HMAC of the run id under the server's secret: the server re-derives it
from the run id the client names, so no list of tokens exists anywhere. A
connection authenticated with it may touch only keys under :func:`run_prefix`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct

__all__ = [
    "MAC_SIZE",
    "FrameMac",
    "MacError",
    "derive_run_token",
    "parse_run_token",
    "run_prefix",
    "session_keys",
]

MAC_SIZE = 16
RUN_TOKEN_PREFIX = "rdzv-run:"
_RUN_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")  # the run ids rendezvous accepts: no "/"
_SEQ = struct.Struct(">Q")


class MacError(Exception):
    """A frame failed its MAC: altered, replayed, dropped or reordered on the way."""


def run_prefix(run_id: str) -> str:
    """Every key of one run starts with this (``rdzv.rendezvous.layout`` puts them there)."""
    return f"rdzv/{run_id}/"


def is_valid_run_id(run_id: str) -> bool:
    return bool(_RUN_ID.match(run_id))


def derive_run_token(secret: bytes, run_id: str) -> str:
    """The token for one run, derived from the server's secret."""
    if not is_valid_run_id(run_id):
        raise ValueError(f"run id {run_id!r} is invalid: use 1-128 letters, digits, '_', '.' or '-'")
    digest = hmac.new(secret, b"rdzv-run-token\0" + run_id.encode(), hashlib.sha256).hexdigest()
    return f"{RUN_TOKEN_PREFIX}{run_id}:{digest}"


def parse_run_token(token: bytes) -> str | None:
    """The run id a run token is for, or ``None`` for any other token."""
    text = token.decode("utf-8", "replace")
    if not text.startswith(RUN_TOKEN_PREFIX):
        return None
    run_id, _, _ = text[len(RUN_TOKEN_PREFIX) :].rpartition(":")
    return run_id if is_valid_run_id(run_id) else None


def session_keys(token: bytes, nonce: bytes, cnonce: bytes) -> tuple[bytes, bytes]:
    """``(client_to_server, server_to_client)`` MAC keys of one connection."""
    master = hmac.new(token, b"rdzv-session\0" + nonce + cnonce, hashlib.sha256).digest()
    upstream = hmac.new(master, b"client->server", hashlib.sha256).digest()
    downstream = hmac.new(master, b"server->client", hashlib.sha256).digest()
    return upstream, downstream


class FrameMac:
    """Seals outgoing and checks incoming frames of one direction, counting them."""

    __slots__ = ("_keyed", "_seq")

    def __init__(self, key: bytes) -> None:
        self._keyed = hashlib.blake2b(key=key, digest_size=MAC_SIZE)  # copied per frame: keyed once
        self._seq = 0

    def tag(self, body: bytes) -> bytes:
        """The MAC of the next frame in this direction (and count it)."""
        state = self._keyed.copy()
        state.update(_SEQ.pack(self._seq) + body)
        self._seq += 1
        return state.digest()

    def check(self, body: bytes, mac: bytes) -> None:
        """Raise :class:`MacError` unless ``mac`` is the next frame's MAC of ``body``."""
        if not hmac.compare_digest(self.tag(body), mac):
            raise MacError(
                f"frame {self._seq - 1} failed its integrity check (altered, replayed, dropped or reordered)"
            )
