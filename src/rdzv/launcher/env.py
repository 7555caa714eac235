"""The environment of every worker: torchrun's variables, rdzv's, and JAX's coordinator.

Pure: a :class:`RoundPlan` (what the round agreed on) in, one dict per local rank out.
Nodes may run different numbers of workers; global ranks count each node's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rdzv.rendezvous.address import host_port

__all__ = ["RoundPlan"]


@dataclass(frozen=True)
class RoundPlan:
    """One node's view of a formed round, enough to compute every worker's variables."""

    run_id: str
    node_id: str
    round: int
    group_rank: int
    nprocs: tuple[int, ...]
    """Workers per node, by group rank."""
    master_addr: str
    master_port: int
    jax_port: int
    restart_count: int
    max_restarts: int
    role: str = "default"

    @property
    def group_world_size(self) -> int:
        return len(self.nprocs)

    @property
    def local_world_size(self) -> int:
        return self.nprocs[self.group_rank]

    @property
    def world_size(self) -> int:
        return sum(self.nprocs)

    @property
    def first_rank(self) -> int:
        """Global rank of this node's local rank 0: the workers of lower group ranks come first."""
        return sum(self.nprocs[: self.group_rank])

    @property
    def ranks(self) -> range:
        return range(self.first_rank, self.first_rank + self.local_world_size)

    @property
    def jax_coordinator(self) -> str:
        return host_port(self.master_addr, self.jax_port)

    def worker_env(self, local_rank: int) -> dict[str, str]:
        """The variables for ``local_rank`` (set over the agent's own environment)."""
        if not 0 <= local_rank < self.local_world_size:
            raise ValueError(f"local rank {local_rank} outside 0..{self.local_world_size - 1}")
        rank = self.first_rank + local_rank
        env = {
            "RANK": rank,
            "LOCAL_RANK": local_rank,
            "WORLD_SIZE": self.world_size,
            "LOCAL_WORLD_SIZE": self.local_world_size,
            "GROUP_RANK": self.group_rank,
            "GROUP_WORLD_SIZE": self.group_world_size,
            "ROLE_NAME": self.role,
            "ROLE_RANK": rank,  # one role per job: its ranks are the global ranks
            "ROLE_WORLD_SIZE": self.world_size,
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": self.master_port,
            "TORCHELASTIC_RESTART_COUNT": self.restart_count,
            "TORCHELASTIC_MAX_RESTARTS": self.max_restarts,
            "TORCHELASTIC_RUN_ID": self.run_id,
            "TORCHELASTIC_USE_AGENT_STORE": "False",
            "RDZV_ROUND": self.round,
            "RDZV_RUN_ID": self.run_id,
            "RDZV_NODE_ID": self.node_id,
            "JAX_COORDINATOR_ADDRESS": self.jax_coordinator,
            # JAX's coordinator binds every interface ([::]) unless told otherwise.
            "JAX_COORDINATOR_BIND_ADDRESS": self.jax_coordinator,
        }
        if self.local_world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = 1  # as torchrun: K workers must not each take every core
        return {name: str(value) for name, value in env.items()}
