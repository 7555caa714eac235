"""A loopback TCP proxy that stages network faults: silent drops, resets, partitions.

The proxy is a set of **links**. A link listens on its own loopback port and
forwards every connection it accepts to its upstream. Give each client its own
link per server it may reach, and you decide per client where its traffic goes
and what happens to it::

    with FaultProxy() as proxy:
        a = proxy.link("a->h1", ("127.0.0.1", server_port))
        store = open_store(f"tcp://127.0.0.1:{a.port}?is_host=0")
        a.blackhole_flows()      # a NAT forgets the flow: bytes vanish, sockets stay open
        a.reset_flows()          # every open connection gets a TCP RST
        a.set_mode(Mode.BLACKHOLE)  # the path is dead, for new connections too
        a.set_mode(Mode.REJECT)     # new connections are reset at once (a partition that RSTs)
        a.retarget(other_server)    # new connections go to another upstream
        a.set_mode(Mode.FORWARD)    # heal

A blackholed connection is read and its bytes discarded in both directions, so
the sender sees nothing wrong: no reset, no error, no reply. That is how a dead
host, a NAT that dropped its entry or a partition looks to TCP. Note that TCP
keepalive cannot detect it through this proxy (the proxy's own kernel answers
the probes); only an application-level ping can.
"""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "Link", "Mode"]


class Mode(enum.Enum):
    """What a link does with its traffic."""

    FORWARD = "forward"
    """Pass bytes both ways (the default)."""
    BLACKHOLE = "blackhole"
    """Accept and keep connections open, discard every byte both ways."""
    REJECT = "reject"
    """Reset every open connection, and reset new ones as soon as they are accepted."""


@dataclass(eq=False)
class _Flow:
    link: Link
    client: socket.socket
    server: socket.socket | None
    blackholed: bool

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.server) if s is not None]


@dataclass(eq=False)
class Link:
    """One listening port of a :class:`FaultProxy` and the connections it forwards."""

    name: str
    upstream: tuple[str, int]
    port: int
    _proxy: FaultProxy = field(repr=False)
    mode: Mode = Mode.FORWARD
    accepted: int = 0
    """Connections accepted so far (a reconnecting client raises it)."""
    flows: list[_Flow] = field(default_factory=list, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def set_mode(self, mode: Mode) -> None:
        """Apply ``mode`` to open connections and to every later one."""
        self._proxy._command(lambda: self._proxy._apply_mode(self, mode))

    def blackhole_flows(self) -> None:
        """Silently drop the traffic of the connections open now; new ones still pass."""
        self._proxy._command(lambda: self._proxy._blackhole_open(self))

    def reset_flows(self) -> None:
        """Send a TCP RST on every connection open now (both ends); new ones still pass."""
        self._proxy._command(lambda: self._proxy._reset_open(self))

    def retarget(self, upstream: tuple[str, int]) -> None:
        """Send new connections to ``upstream``; open ones keep their server."""
        self._proxy._command(lambda: setattr(self, "upstream", upstream))

    def open_connections(self) -> int:
        """Connections of this link that are open now (forwarded or blackholed)."""
        result: list[int] = []
        self._proxy._command(lambda: result.append(len(self.flows)))
        return result[0]


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (linger on, zero seconds)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """Links from loopback ports to upstream servers, run by one selector thread.

    Every change (mode, retarget) is applied by that thread before the call
    returns, so a test can act right after it. :meth:`close` resets everything.
    """

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._commands: list[tuple[Callable[[], None], threading.Event]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="rdzv-fault-proxy", daemon=True)
        self._thread.start()

    def link(self, name: str, upstream: tuple[str, int], *, mode: Mode = Mode.FORWARD) -> Link:
        """A new link named ``name`` listening on a free loopback port, forwarding to ``upstream``."""
        if name in self._links:
            raise ValueError(f"the proxy already has a link named {name!r}")
        listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        listener.setblocking(False)
        link = Link(name, upstream, listener.getsockname()[1], self, mode)
        self._links[name] = link
        self._command(lambda: self._listen(listener, link))
        return link

    def __getitem__(self, name: str) -> Link:
        return self._links[name]

    def close(self) -> None:
        """Reset every connection, stop listening, stop the thread. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(10)
        self._wake_w.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- commands, run on the proxy thread -------------------------------------

    def _command(self, action: Callable[[], None]) -> None:
        if threading.current_thread() is self._thread:
            action()
            return
        done = threading.Event()
        with self._lock:
            if self._stopping:
                raise RuntimeError("the proxy is closed")
            self._commands.append((action, done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError("the proxy thread did not answer within 10 s")

    def _listen(self, listener: socket.socket, link: Link) -> None:
        self._selector.register(listener, selectors.EVENT_READ, link)

    def _apply_mode(self, link: Link, mode: Mode) -> None:
        link.mode = mode
        if mode is Mode.BLACKHOLE:
            self._blackhole_open(link)
        elif mode is Mode.REJECT:
            self._reset_open(link)

    def _blackhole_open(self, link: Link) -> None:
        for flow in link.flows:
            flow.blackholed = True

    def _reset_open(self, link: Link) -> None:
        for flow in list(link.flows):
            self._end(flow, rst=True)

    # -- the selector loop -------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select():
                    self._handle(key)
        finally:
            self._shut_down()

    def _handle(self, key: selectors.SelectorKey) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        if key.data is None:
            with contextlib.suppress(OSError):
                sock.recv(4096)
            self._run_commands()
        elif isinstance(key.data, Link):
            self._accept(sock, key.data)
        else:
            self._pump(sock, key.data)

    def _run_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for action, done in commands:
            try:
                action()
            finally:
                done.set()

    def _accept(self, listener: socket.socket, link: Link) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        link.accepted += 1
        if link.mode is Mode.REJECT:
            _reset(client)
            return
        server = None
        if link.mode is Mode.FORWARD:
            try:
                server = socket.create_connection(link.upstream, timeout=5)
            except OSError:
                _reset(client)  # upstream down: the client sees what it would see directly
                return
        flow = _Flow(link, client, server, blackholed=link.mode is Mode.BLACKHOLE)
        link.flows.append(flow)
        for sock in flow.sockets():
            sock.setblocking(True)
            self._selector.register(sock, selectors.EVENT_READ, flow)

    def _pump(self, sock: socket.socket, flow: _Flow) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._end(flow, rst=False)
            return
        if flow.blackholed:
            return  # read and discarded: the sender sees no error and gets no reply
        peer = flow.server if sock is flow.client else flow.client
        try:
            assert peer is not None
            peer.sendall(data)
        except OSError:
            self._end(flow, rst=True)

    def _end(self, flow: _Flow, *, rst: bool) -> None:
        if flow in flow.link.flows:
            flow.link.flows.remove(flow)
        for sock in flow.sockets():
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if rst:
                _reset(sock)
            else:
                sock.close()

    def _shut_down(self) -> None:
        self._run_commands()
        for link in self._links.values():
            for flow in list(link.flows):
                self._end(flow, rst=True)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        self._selector.close()
