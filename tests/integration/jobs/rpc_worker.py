"""A torch.distributed.rpc (TensorPipe) worker under torchrun."""

from __future__ import annotations

import os

import _hold
from torch.distributed import rpc

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])
rpc.init_rpc(f"worker{rank}", rank=rank, world_size=world)
peer = f"worker{(rank + 1) % world}"
answer = rpc.rpc_sync(peer, max, args=(rank, 7))
_hold.ready(rank, answer=answer)
_hold.hold()
# After the test scanned us, RPC must still work: prove it before shutting down.
again = rpc.rpc_sync(peer, max, args=(rank, 9))
_hold.ready(rank + 1000, answer=again)
rpc.shutdown()
