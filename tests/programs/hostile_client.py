"""A hostile client of the TCP store, run as its own process so it competes for real.

Usage:
    hostile_client.py slots PORT SECONDS HOLD SOURCE...   hold HOLD unauthenticated
        connections from the SOURCE loopback addresses, reopening each one the server closes
    hostile_client.py brute PORT SECONDS SOURCE           wrong-token handshakes, one after another

Prints one JSON line at the end (after SECONDS, or at SIGTERM): what it managed.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time

from rdzv.store.tcp import protocol as p


def hold_slots(port: int, seconds: float, hold: int, sources: list[str]) -> dict[str, float]:
    selector = selectors.DefaultSelector()
    opened = closed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping:
        if len(selector.get_map()) < hold:
            try:
                sock = socket.create_connection(("127.0.0.1", port), 5, (sources[opened % len(sources)], 0))
            except OSError:
                time.sleep(0.01)  # the listen backlog is full: the point of the exercise
                continue
            selector.register(sock, selectors.EVENT_READ)
            opened += 1
        for key, _ in selector.select(0):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            if not data:  # the hello and any error frame are read and ignored; then the close
                selector.unregister(conn)
                conn.close()
                closed += 1
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return {"opened": opened, "closed_by_server": closed}


def brute_force(port: int, seconds: float, source: str) -> dict[str, float]:
    attempts = refused = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds and not stopping:
        with socket.create_connection(("127.0.0.1", port), 30, (source, 0)) as sock:
            (size,) = p.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))
            hello = p.decode(sock.recv(size, socket.MSG_WAITALL))
            cnonce = os.urandom(32)
            guess = os.urandom(16)
            sock.sendall(p.encode({"mac": p.client_mac(guess, hello["nonce"], cnonce), "cnonce": cnonce}))
            (size,) = p.HEADER.unpack(sock.recv(4, socket.MSG_WAITALL))
            reply = p.decode(sock.recv(size, socket.MSG_WAITALL))
            attempts += 1
            refused += isinstance(reply, list) and reply[2]["kind"] == p.KIND_AUTH
    elapsed = time.monotonic() - start
    return {"attempts": attempts, "refused": refused, "seconds": elapsed, "per_second": attempts / elapsed}


stopping = False


def _stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    mode, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode == "slots":
        result = hold_slots(port, seconds, int(sys.argv[4]), sys.argv[5:])
    else:
        result = brute_force(port, seconds, sys.argv[4])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
