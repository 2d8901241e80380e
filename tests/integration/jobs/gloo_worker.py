"""A c10d Gloo worker under torchrun (env://) or plain env (RANK=0 hosts the store)."""

from __future__ import annotations

import os
from datetime import timedelta

import _hold
import torch
import torch.distributed as dist

dist.init_process_group("gloo", timeout=timedelta(seconds=60))
rank = dist.get_rank()
tensor = torch.ones(1)
dist.all_reduce(tensor)
_hold.ready(rank, world=dist.get_world_size(), sum=float(tensor.item()),
            master_port=int(os.environ["MASTER_PORT"]))  # fmt: skip
_hold.hold()
dist.barrier()
dist.destroy_process_group()
