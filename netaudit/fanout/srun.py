"""Fan-out through Slurm: one `srun` over the allocation (a per-job self-audit) or the nodes
named (an admin reservation), one task per node.

srun forwards task output in chunks of at most 1024 bytes, each prefixed by `--label` with the
task id, and a long line comes back cut into many labelled lines. So each task first prints
the node it runs on (`@node=$SLURMD_NODENAME`), its chunks are joined without the newlines srun
added, and the JSON inventory is read from the rest (JSON has no raw newlines inside strings,
so dropping them all is lossless).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from netaudit import hostlist
from netaudit.fanout.results import NodeOutput

_LABEL = re.compile(rb"^\s*(\d+): ?(.*)$")
_MARKER = b"@node="
# /bin/sh by absolute path: a prolog or cron environment may have no PATH.
_WRAPPER = 'echo "@node=$SLURMD_NODENAME"; exec "$@"'


def argv(nodes: Sequence[str], remote_command: str, srun_options: Sequence[str]) -> list[str]:
    count = str(len(nodes))
    return [
        "srun", "--label", "--nodes", count, "--ntasks", count, "--ntasks-per-node=1",
        "--nodelist", hostlist.fold(list(nodes)), *srun_options,
        "/bin/sh", "-c", _WRAPPER, "netaudit-fanout", *shlex.split(remote_command),
    ]  # fmt: skip


def allocation_nodes(environ: Mapping[str, str], limit: int) -> list[str]:
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    return hostlist.expand(nodelist, limit) if nodelist else []


def split_tasks(stdout: bytes) -> dict[int, list[bytes]]:
    tasks: dict[int, list[bytes]] = {}
    for line in stdout.split(b"\n"):
        match = _LABEL.match(line)
        if match:
            tasks.setdefault(int(match.group(1)), []).append(match.group(2))
    return tasks


def run(
    nodes: Sequence[str], remote_command: str, srun_options: Sequence[str], timeout_s: float
) -> list[NodeOutput]:
    command = argv(nodes, remote_command, srun_options)
    error: str | None = None
    code: int | None = None
    try:
        completed = subprocess.run(
            command, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
        )
        stdout, stderr, code = completed.stdout, completed.stderr, completed.returncode
    except subprocess.TimeoutExpired as expired:
        stdout, stderr = expired.stdout or b"", expired.stderr or b""
        error = f"timed out after {timeout_s:g} s"
    except OSError as failure:
        reason = f"cannot run srun: {failure.strerror or failure}"
        return [NodeOutput(node, None, b"", b"", reason) for node in nodes]
    by_node: dict[str, bytes] = {}
    for chunks in split_tasks(stdout).values():
        if chunks and chunks[0].startswith(_MARKER):
            by_node[chunks[0][len(_MARKER) :].decode("utf-8", "replace").strip()] = b"".join(chunks[1:])
    results = []
    for node in nodes:
        if node in by_node:
            results.append(NodeOutput(node, code, by_node[node], b""))
        else:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()
            reason = error or f"no output from srun (exit {code}{': ' + tail[-1] if tail else ''})"
            results.append(NodeOutput(node, code, b"", stderr[-65536:], reason))
    return results
