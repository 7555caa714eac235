"""Wire format of the embedded TCP store, shared by server and client.

Every message is a *frame*: a 4-byte big-endian length, then that many bytes of
msgpack. After the handshake, a request is ``[id, op, args]`` and its reply is
``[id, status, result]``; ids let a client pipeline requests and receive the
replies out of order (a blocked ``wait`` delays nothing else). Id ``0`` is
reserved for frames the server sends on its own, such as the error frame it
sends before closing a connection.

Handshake (the token never crosses the wire)::

    server -> {"rdzv": 2, "server_id": ..., "nonce": 32 bytes, "auth": bool}
    client -> {"mac": HMAC(token, "client" | nonce | cnonce) or None, "cnonce": 32 bytes,
               "run": RUN or absent}
    server -> {"ok": true, "mac": HMAC(token, "server" | nonce | cnonce) or None}

``run`` names the run of a per-run token (``rdzv.store.tcp.auth``); the server
derives that run's token from its secret and checks the MAC under it. The
server's answering MAC proves to the client that the server knows the token
too; a client holding a token refuses a server that offers no authentication
or does not prove it. A wrong or missing MAC gets an error frame and the
connection is closed.

On an authenticated connection every later frame, both ways, ends in a 16-byte
MAC under a per-connection, per-direction key, counted by a sequence number
(``auth.FrameMac``); the length prefix counts the MAC. A frame failing its MAC
closes the connection with an error.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from rdzv.store.tcp.auth import MAC_SIZE, FrameMac, MacError

__all__ = [
    "HEADER",
    "OK",
    "ERROR",
    "VERSION",
    "Limits",
    "ProtocolError",
    "client_mac",
    "decode",
    "encode",
    "server_mac",
    "unseal",
]

VERSION = 2
HEADER = struct.Struct(">I")
OK = 0
ERROR = 1
HANDSHAKE_FRAME_MAX = 1024
"""Largest frame accepted before a connection has authenticated."""

# Error kinds carried in error replies: {"kind": ..., "message": ...}
KIND_AUTH = "auth"
KIND_PROTOCOL = "protocol"
KIND_LIMIT = "limit"
KIND_LEASE = "lease"
KIND_SHUTDOWN = "shutdown"
KIND_BUSY = "busy"
KIND_FORBIDDEN = "forbidden"
KIND_INTEGRITY = "integrity"
KIND_INTERNAL = "internal"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Every integer in a request or reply is a signed 64-bit value."""


class ProtocolError(Exception):
    """A peer sent bytes that are not a valid frame or message."""


@dataclass(frozen=True)
class Limits:
    """Per-server limits; each has a ``rdzv serve`` flag."""

    max_frame: int = 16 * 1024 * 1024
    max_key: int = 4096
    max_value: int = 8 * 1024 * 1024
    max_keys: int = 1_000_000
    max_connections: int = 10_000
    """Most authenticated connections."""
    max_unauthenticated: int = 256
    """Most connections still in their handshake; beyond it the oldest is closed."""
    max_unauthenticated_per_peer: int = 32
    """Most connections in their handshake from one address; beyond it its oldest is closed."""
    frame_timeout: float = 30.0
    """Seconds a started frame (or, before authentication, the handshake) may take to arrive."""

    def __post_init__(self) -> None:
        for name in (
            "max_frame",
            "max_key",
            "max_value",
            "max_keys",
            "max_connections",
            "max_unauthenticated",
            "max_unauthenticated_per_peer",
            "frame_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def encode(message: Any, mac: FrameMac | None = None) -> bytes:
    """One frame: length prefix, msgpack body, and the body's MAC on an authenticated connection."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if mac is None:
        return HEADER.pack(len(body)) + body
    return HEADER.pack(len(body) + MAC_SIZE) + body + mac.tag(body)


def unseal(frame: bytes, mac: FrameMac | None) -> bytes:
    """The body of a received frame, its MAC checked (``MacError``) when there is one."""
    if mac is None:
        return frame
    if len(frame) < MAC_SIZE:
        raise MacError(f"a frame of {len(frame)} bytes is too short to carry its MAC")
    body = frame[:-MAC_SIZE]
    mac.check(body, frame[-MAC_SIZE:])
    return body


def decode(body: bytes) -> Any:
    """The message in a frame body; ``ProtocolError`` if it is not valid msgpack."""
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from exc


def client_mac(token: bytes, nonce: bytes, cnonce: bytes) -> bytes:
    return hmac.new(token, b"rdzv-client\0" + nonce + cnonce, hashlib.sha256).digest()


def server_mac(token: bytes, nonce: bytes, cnonce: bytes) -> bytes:
    return hmac.new(token, b"rdzv-server\0" + nonce + cnonce, hashlib.sha256).digest()
