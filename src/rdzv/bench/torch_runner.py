"""torch's own ``DynamicRendezvousHandler`` with the c10d backend, for ``rdzv bench --vs-torch``.

Each simulated node is one handler over a ``C10dRendezvousBackend``; the nodes
of a worker share one ``TCPStore`` client, as ours share one ``TcpStore``. The
store server is a separate process (``python -m rdzv.bench.torch_runner``),
like ``rdzv serve``. torch is imported only here, and only when used.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdzv.bench.worker import WorkerSpec

__all__ = ["torch_available", "torch_nodes"]


def torch_available() -> bool:
    """Whether torch is installed (found without importing it: the harness stays small)."""
    return importlib.util.find_spec("torch") is not None


def _quiet_import() -> None:
    # torch warns at import when numpy is absent; numpy plays no part here.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    import torch  # noqa: F401


def _client(address: str, timeout: float) -> Any:
    from torch.distributed import TCPStore  # type: ignore[attr-defined]  # re-exported at run time

    host, port = address.rsplit(":", 1)
    return TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=timeout))


def torch_nodes(spec: WorkerSpec) -> tuple[list[Callable[[], object]], Callable[[], None]]:
    """One ``next_rendezvous`` callable per node of ``spec``, and a closer.

    Each node has its own ``TCPStore`` client, as each torch agent does: torch's
    client is not built to be shared by many threads that block in it.
    """
    _quiet_import()
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
        RendezvousTimeout,
    )

    # Rank 0 would otherwise start a second TCPStore per round for the job; we measure rendezvous.
    os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    timeout = RendezvousTimeout(
        join=timedelta(seconds=spec.join_timeout),
        heartbeat=timedelta(seconds=spec.heartbeat_interval * spec.heartbeat_misses),
    )
    joins: list[Callable[[], object]] = []
    for index in spec.nodes:
        store = _client(spec.url, spec.join_timeout + 30)
        backend = C10dRendezvousBackend(store, spec.run_id)
        handler = DynamicRendezvousHandler.from_backend(
            spec.run_id,
            store,
            backend,
            spec.world,
            spec.world,
            local_addr=f"node{index}",
            timeout=timeout,
            keep_alive_interval=max(1, round(spec.heartbeat_interval)),
            keep_alive_max_attempt=spec.heartbeat_misses,
        )
        joins.append(handler.next_rendezvous)
    return joins, lambda: None


def serve() -> None:
    """Host a ``TCPStore`` on loopback, print ``PORT``, and serve until stdin closes."""
    _quiet_import()
    from torch.distributed import TCPStore  # type: ignore[attr-defined]  # re-exported at run time

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(hours=1))
    print(store.port, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    serve()
