"""A JAX script under rdzv run: the plugin fills in jax.distributed.initialize()'s arguments."""

import jax
import numpy as np
from jax.experimental import multihost_utils

import rdzv.jax  # noqa: F401 - registers the rdzv cluster plugin

jax.distributed.initialize()
gathered = multihost_utils.process_allgather(np.array([jax.process_index()]))
assert sorted(gathered.ravel().tolist()) == list(range(jax.process_count())), gathered
print(f"allgather ok: process {jax.process_index()} of {jax.process_count()}: {gathered.ravel().tolist()}")
jax.distributed.shutdown()
