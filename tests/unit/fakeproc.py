"""A recorded /proc tree for unit tests: the files the probe reads, with the facts of real
processes (thread names, maps lines, environ, cgroup paths) as torch 2.13 produces them
(research/pytorch-ground-truth.md §4, §8)."""

from __future__ import annotations

import os
from pathlib import Path

TORCH_LIB = "/usr/local/lib/python3.11/site-packages/torch/lib"


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "stat").write_text("cpu 0 0 0 0\nbtime 1700000000\n")
        self.container = root.parent / "rootfs"

    def process(
        self,
        pid: int,
        *,
        comm: str = "python3",
        cmdline: tuple[str, ...] = ("python3", "train.py"),
        environ: dict[str, str] | None = None,
        uid: int = 0,
        ppid: int = 1,
        threads: dict[str, int] | None = None,
        maps: tuple[str, ...] = (),
        cgroup: str = "0::/user.slice\n",
        netns: int = 4026531840,
        children: tuple[int, ...] = (),
        sockets: tuple[int, ...] = (),
        torch_version: str | None = None,
    ) -> None:
        base = self.root / str(pid)
        (base / "fd").mkdir(parents=True)
        (base / "ns").mkdir()
        (base / "comm").write_text(comm + "\n")
        (base / "cmdline").write_bytes(b"\0".join(arg.encode() for arg in cmdline) + b"\0")
        env = environ or {}
        (base / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
        (base / "stat").write_text(
            f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 1000 "
            "1000000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        )
        (base / "status").write_text(f"Name:\t{comm}\nPPid:\t{ppid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
        (base / "cgroup").write_text(cgroup)
        lines = [
            f"7f0000{index:06x}000-7f0000{index:06x}fff r-xp 00000000 08:01 {1000 + index} {path}"
            for index, path in enumerate(maps)
        ]
        (base / "maps").write_text("\n".join(lines) + "\n")
        os.symlink(f"net:[{netns}]", base / "ns" / "net")
        tid = pid
        for name, count in (threads or {comm: 1}).items():
            for _ in range(count):
                task = base / "task" / str(tid)
                task.mkdir(parents=True)
                (task / "comm").write_text(name + "\n")
                (task / "children").write_text("")
                tid += 1
        first = base / "task" / str(pid)
        if not first.exists():
            first.mkdir(parents=True)
            (first / "comm").write_text(comm + "\n")
        (first / "children").write_text(" ".join(str(c) for c in children) + (" " if children else ""))
        for fd, inode in enumerate(sockets, start=3):
            os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
        if torch_version is not None:
            version = self.container / TORCH_LIB.lstrip("/").removesuffix("/lib") / "version.py"
            version.parent.mkdir(parents=True, exist_ok=True)
            version.write_text(f"__version__ = '{torch_version}'\ngit_version = 'cf30153'\n")
        os.symlink(self.container, base / "root")


def torch_maps(*extra: str) -> tuple[str, ...]:
    return (
        f"{TORCH_LIB}/libtorch_cpu.so",
        f"{TORCH_LIB}/libtorch_python.so",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        *extra,
    )
