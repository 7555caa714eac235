"""A torch script as it runs under torchrun, unchanged: env:// init, gloo, one all_reduce."""

import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo", init_method="env://")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
world = dist.get_world_size()
assert value.item() == world * (world + 1) / 2, value
print(f"all_reduce ok: rank {dist.get_rank()} of {world} local {os.environ['LOCAL_RANK']} sum {value.item()}")
dist.destroy_process_group()
