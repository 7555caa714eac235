"""JAX cluster plugin: ``import rdzv.jax`` and ``jax.distributed.initialize()`` needs no arguments.

JAX reads only the coordinator address from the environment; the process
count and id come from a cluster plugin, a ``jax._src.clusters.ClusterEnv``
subclass, which registers itself when defined. This one reads what ``rdzv run``
(or ``rdzv join``) gives each process: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
and ``JAX_COORDINATOR_ADDRESS`` (or ``MASTER_ADDR:MASTER_PORT`` under
``rdzv join``). It is tried before JAX's own plugins (SLURM, Open MPI,
Kubernetes), whose variables may be present too, and it makes JAX's
coordinator bind only the address the round advertised, not every interface.
"""

from __future__ import annotations

import os

from rdzv.rendezvous.address import host_port

try:
    from jax._src import clusters
except ImportError as exc:  # pragma: no cover - the test environment has jax
    raise ImportError("rdzv.jax needs JAX: pip install 'rdzv[jax]' (or jax itself)") from exc

__all__ = ["RdzvCluster", "coordinator_address"]


# JAX registers subclasses in an unannotated __init_subclass__.
class RdzvCluster(clusters.ClusterEnv):  # type: ignore[no-untyped-call]
    """The processes of an rdzv round: one JAX process per worker."""

    name = "rdzv"

    @classmethod
    def is_env_present(cls) -> bool:
        return all(name in os.environ for name in ("RDZV_RUN_ID", "RANK", "WORLD_SIZE"))

    @classmethod
    def get_coordinator_address(cls, timeout_secs: int | None, override_coordinator_port: str | None) -> str:
        address = coordinator_address(override_coordinator_port)
        os.environ.setdefault("JAX_COORDINATOR_BIND_ADDRESS", address)
        return address

    @classmethod
    def get_process_count(cls) -> int:
        return int(os.environ["WORLD_SIZE"])

    @classmethod
    def get_process_id(cls) -> int:
        return int(os.environ["RANK"])

    @classmethod
    def get_local_process_id(cls) -> int | None:
        """With several workers on a node, worker LOCAL_RANK sees device LOCAL_RANK (one each)."""
        if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            return int(os.environ.get("LOCAL_RANK", "0"))
        return None


def coordinator_address(port: str | None = None) -> str:
    """``JAX_COORDINATOR_ADDRESS`` if set (``rdzv run``), else rank 0's ``MASTER_ADDR:MASTER_PORT``."""
    given = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if given and port is None:
        return given
    return host_port(os.environ["MASTER_ADDR"], port or os.environ["MASTER_PORT"])


# Ours first: when rdzv's variables are set, they describe this job, whatever else is set.
clusters.ClusterEnv._cluster_types.remove(RdzvCluster)
clusters.ClusterEnv._cluster_types.insert(0, RdzvCluster)
if RdzvCluster.is_env_present() and "MASTER_ADDR" in os.environ:
    # JAX binds its coordinator to [::] unless told; bind where the round said rank 0 is.
    os.environ.setdefault("JAX_COORDINATOR_BIND_ADDRESS", coordinator_address())
