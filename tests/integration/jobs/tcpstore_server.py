"""A TCPStore server and nothing else: `tcpstore_server.py [--legacy] [--port N]`."""

from __future__ import annotations

import argparse
from datetime import timedelta

import _hold
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--legacy", action="store_true")
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--host", default="127.0.0.1")
args = parser.parse_args()
store = dist.TCPStore(
    args.host, args.port, is_master=True, use_libuv=not args.legacy, timeout=timedelta(seconds=60)
)
store.set("netaudit-test", "value")
_hold.ready(0, port=store.port, legacy=args.legacy)
_hold.hold()
