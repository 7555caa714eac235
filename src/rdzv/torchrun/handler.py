"""rdzv as a torchrun rendezvous backend (``torchrun --rdzv-backend=rdzv``): the only torch importer.

torch finds the backend through the entry point ``rdzv`` in the group
``torchrun.handlers`` (see :mod:`rdzv.torchrun.plugin`). The handler runs an
:class:`rdzv.rendezvous.Rendezvous` for membership, ranks and liveness, and
gives torch's agent what its own c10d backend gives it:

* a ``torch.distributed.TCPStore`` per round, hosted by the round's rank-0 node
  at the round's coordinator address (a fresh server each round, so nothing of
  an earlier round or worker attempt can leak into the next); every node,
  rank 0 included, connects to it as a client;
* that store, under the prefix ``rdzv/RUN/ROUND``, as the agent's store, and
  ``use_agent_store = True`` with ``RendezvousStoreInfo(host, port)`` of the
  same server, so workers reach it as a client through ``MASTER_ADDR`` and
  ``MASTER_PORT`` (``init_process_group`` with ``env://``); with
  ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, as with c10d, ``use_agent_store`` is
  ``False`` and rank 0 publishes a free port for its workers to host their own;
* rdzv errors as torch's ``RendezvousClosedError``, ``RendezvousTimeoutError``,
  ``RendezvousConnectionError`` and ``RendezvousStateError``.

The rank-0 node publishes the server's actual ``host:port`` in the round's rdzv
store (it falls back to an ephemeral port if the coordinator port was taken
since it was chosen); the others read it from there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch.distributed as dist

# torch.distributed re-exports these only under `if is_available():`, which mypy cannot see
# through; this is the module they come from, with typed stubs.
from torch._C._distributed_c10d import PrefixStore, TCPStore
from torch.distributed.elastic.rendezvous import api as torch_api

from rdzv import errors
from rdzv.registry import open_store
from rdzv.rendezvous.node import Rendezvous, RendezvousInfo
from rdzv.store.base import Store
from rdzv.torchrun.conf import TorchrunOptions, parse_options

__all__ = ["BACKEND", "RdzvRendezvousHandler", "create_handler"]

log = logging.getLogger(__name__)

BACKEND = "rdzv"
MASTER_KEY = "torchrun/master"
"""Key in the round's rdzv store where rank 0 publishes the TCPStore's ``host:port``."""
STORE_TIMEOUT = timedelta(seconds=60)
"""Default timeout of operations on the per-round TCPStore (torch's c10d ``read_timeout``)."""
NO_SHARED_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"
"""``1``: workers host their own TCPStore instead of using the agent's (as torch's c10d reads it)."""


def create_handler(params: torch_api.RendezvousParameters) -> RdzvRendezvousHandler:
    """The creator torch registers as backend ``rdzv``: checks the options, opens the store."""
    options = parse_options(params.endpoint, params.run_id, params.min_nodes, params.max_nodes, params.config)
    with translated_errors(params.run_id):
        store = open_store(options.url, **options.store_options)
    return _handler(options, store, params.local_addr)


def _handler(options: TorchrunOptions, store: Store, local_addr: str | None) -> RdzvRendezvousHandler:
    s = options.settings
    try:
        rendezvous = Rendezvous(
            store, s.run_id, s.min_nodes, s.max_nodes,
            addr=local_addr or None,
            join_timeout=s.join_timeout, last_call_timeout=s.last_call_timeout,
            close_timeout=s.close_timeout, heartbeat_interval=s.heartbeat_interval,
            heartbeat_misses=s.heartbeat_misses, rank_policy=s.rank_policy,
            split_brain_guard=s.split_brain_guard,
        )  # fmt: skip
    except BaseException:
        store.close()
        raise
    timeout = STORE_TIMEOUT if options.read_timeout is None else timedelta(seconds=options.read_timeout)
    return RdzvRendezvousHandler(rendezvous, store, store_timeout=timeout)


class RdzvRendezvousHandler(torch_api.RendezvousHandler):
    """torch's ``RendezvousHandler`` over an rdzv ``Rendezvous`` (which this handler owns)."""

    def __init__(self, rendezvous: Rendezvous, store: Store, *, store_timeout: timedelta = STORE_TIMEOUT):
        self._rdzv = rendezvous
        self._store = store
        self._store_timeout = store_timeout
        self._round_store: PrefixStore | None = None
        self._round_server: TCPStore | None = None
        self._shut_down = False

    def get_backend(self) -> str:
        return BACKEND

    @property
    def use_agent_store(self) -> bool:
        """Workers use the agent's round TCPStore, unless ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``."""
        return os.getenv(NO_SHARED_STORE_ENV, "0") != "1"

    def get_run_id(self) -> str:
        return self._rdzv.run_id

    def next_rendezvous(self) -> torch_api.RendezvousInfo:
        """Join the next round; host (rank 0) or reach its TCPStore; return torch's view of it."""
        with translated_errors(self.get_run_id()):
            info = self._rdzv.next_rendezvous()
            # The previous round's server (if this node hosted it) is replaced only now that
            # every member has left that round; it stops once the agent drops its store too.
            host, port, tcp = self._round_tcp_store(info)
        self._round_store = PrefixStore(f"rdzv/{info.run_id}/{info.round}", tcp)
        log.info(
            "rdzv: run %s round %d: rank %d of %d, TCPStore at %s:%d",
            info.run_id, info.round, info.rank, info.world_size, host, port,
        )  # fmt: skip
        if self.use_agent_store:
            bootstrap = torch_api.RendezvousStoreInfo(host, port)
        else:  # rank 0 publishes a free port of its host, where its rank-0 worker will host
            bootstrap = torch_api.RendezvousStoreInfo.build(info.rank, self._round_store, local_addr=host)
        return torch_api.RendezvousInfo(self._round_store, info.rank, info.world_size, bootstrap)

    def is_closed(self) -> bool:
        with translated_errors(self.get_run_id()):
            return self._rdzv.is_closed()

    def set_closed(self) -> None:
        with translated_errors(self.get_run_id()):
            self._rdzv.set_closed()

    def num_nodes_waiting(self) -> int:
        with translated_errors(self.get_run_id()):
            return self._rdzv.num_nodes_waiting()

    def shutdown(self) -> bool:
        """Close the run, as torch's backends do, leave, and release the stores; never blocks on peers.

        torchrun calls this when the agent ends by itself (success, or failure
        after its restarts), never when it is killed by a signal: closing tells
        the other agents to stop instead of re-forming without this node. A node
        that hosts a store (the round's TCPStore, or the rdzv store) keeps it up
        in a thread (see :func:`_host_until_peers_leave`) until the round's other
        members have shut down or died, at most ``close_timeout``: the process
        outlives its readers, while ``shutdown`` returns at once, so that members
        shut down one after another in one process (as torch's tests do) never wait.
        Returns ``False`` (and logs why) if the run could not be closed.
        """
        if self._shut_down:
            return False
        self._shut_down = True
        reachable = closed = True
        try:
            self._rdzv.set_closed()
        except errors.RdzvError as exc:
            log.warning("rdzv: could not close run %s on shutdown: %s", self.get_run_id(), exc)
            closed = False
            reachable = not isinstance(exc, errors.StoreError)
        self._rdzv.shutdown()  # the store is ours to close
        # A TcpStore that hosts the embedded server says so with `hosted`.
        hosting = self._round_server is not None or getattr(self._store, "hosted", None) is not None
        if hosting and reachable:
            threading.Thread(
                target=_host_until_peers_leave,
                args=(self._rdzv, self._store, self._round_server),
                name=f"rdzv-host-{self.get_run_id()}",
                daemon=False,  # the interpreter waits for it at exit: the host outlives its readers
            ).start()
        else:
            self._store.close()
        self._round_store = self._round_server = None
        return closed

    def _round_tcp_store(self, info: RendezvousInfo) -> tuple[str, int, TCPStore]:
        """Rank 0 hosts this round's TCPStore and publishes its address; the others read it."""
        server = None
        if info.rank == 0:
            server = self._host_tcp_store(info.coordinator_host, info.coordinator_port)
            address = f"{info.coordinator_host}:{server.port}"
            info.store.put(MASTER_KEY, address.encode())
        else:
            address = self._published_master(info)
        host, _, port_text = address.rpartition(":")
        port = int(port_text)
        client = _torch_store(
            lambda: TCPStore(host, port, is_master=False, timeout=self._store_timeout),
            f"cannot reach the TCPStore of round {info.round} at {address}",
        )
        self._round_server = server
        return host, port, client

    def _host_tcp_store(self, host: str, port: int) -> TCPStore:
        def start(at: int) -> TCPStore:
            return TCPStore(host, at, is_master=True, wait_for_workers=False, timeout=self._store_timeout)

        try:
            return start(port)
        except dist.DistError as exc:
            log.info("rdzv: cannot host on coordinator port %d (%s); using an ephemeral port", port, exc)
            return _torch_store(lambda: start(0), f"cannot host a TCPStore on {host}")

    def _published_master(self, info: RendezvousInfo) -> str:
        """Block until rank 0 has published its TCPStore address (at most the join timeout)."""
        timeout = self._rdzv.settings.join_timeout
        deadline = time.monotonic() + timeout
        while True:
            listing = info.store.list(MASTER_KEY)
            found = next((e.value for e in listing if e.key == MASTER_KEY), None)
            if found is not None:
                return found.decode()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise errors.RendezvousTimeoutError(
                    f"rank 0 of round {info.round} did not publish its TCPStore within {timeout} s",
                    run_id=info.run_id,
                    round=info.round,
                )
            info.store.wait(MASTER_KEY, listing.revision, remaining)


def _host_until_peers_leave(rendezvous: Rendezvous, store: Store, round_server: TCPStore | None) -> None:
    """Keep ``store`` (and this node's round TCPStore, by holding it) up while the round's peers need them."""
    try:
        waiting = rendezvous.wait_for_peers_to_leave(rendezvous.settings.close_timeout)
    except errors.StoreError as exc:
        waiting = [f"unknown ({exc})"]
    if waiting:
        log.info(
            "rdzv: run %s: stopped hosting after close_timeout with peers still there: %s",
            rendezvous.run_id, ", ".join(waiting),
        )  # fmt: skip
    store.close()
    del round_server  # torch stops the server with its last reference


@contextmanager
def translated_errors(run_id: str) -> Iterator[None]:
    """Raise rdzv's and torch.distributed's errors as the torch rendezvous errors the agent expects."""
    try:
        yield
    except errors.RendezvousClosedError as exc:
        raise torch_api.RendezvousClosedError(str(exc)) from exc
    except (errors.RendezvousTimeoutError, errors.StoreTimeoutError) as exc:
        raise torch_api.RendezvousTimeoutError(str(exc)) from exc
    except (errors.RendezvousStateError, errors.StoreCorruptedError) as exc:
        raise torch_api.RendezvousStateError(str(exc)) from exc
    except (errors.StoreError, errors.AuthenticationError) as exc:
        raise torch_api.RendezvousConnectionError(f"run {run_id}: {exc}") from exc
    except errors.RendezvousError as exc:
        raise torch_api.RendezvousError(str(exc)) from exc


def _torch_store(make: Callable[[], TCPStore], what: str) -> TCPStore:
    """``make()``, with torch.distributed's network and store errors as ``StoreUnavailableError``."""
    try:
        return make()
    except dist.DistError as exc:
        raise errors.StoreUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from exc
