"""Wire format of the embedded TCP store, shared by server and client.

Every message is a *frame*: a 4-byte big-endian length, then that many bytes of
msgpack. After the handshake, a request is ``[id, op, args]`` and its reply is
``[id, status, result]``; ids let a client pipeline requests and receive the
replies out of order (a blocked ``wait`` delays nothing else). Id ``0`` is
reserved for frames the server sends on its own, such as the error frame it
sends before closing a connection.

Handshake (the token never crosses the wire)::

    server -> {"rdzv": 1, "server_id": ..., "nonce": 32 bytes, "auth": bool}
    client -> {"mac": HMAC(token, "client" | nonce | cnonce) or None, "cnonce": 32 bytes}
    server -> {"ok": true, "mac": HMAC(token, "server" | nonce | cnonce) or None}

The server's answering MAC proves to the client that the server knows the token
too. A wrong or missing MAC gets an error frame and the connection is closed.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

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
]

VERSION = 1
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

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_key", "max_value", "max_keys", "max_connections"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def encode(message: Any) -> bytes:
    """One frame: length prefix and msgpack body."""
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


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
