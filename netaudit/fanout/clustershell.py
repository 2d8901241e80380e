"""Fan-out through ClusterShell's library: its ssh worker, its fan-out width, and its tree
mode through gateways when a topology.conf is given (thousands of nodes)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from netaudit.fanout.results import OUTPUT_LIMIT, NodeOutput


def run(
    nodes: Sequence[str],
    remote_command: str,
    width: int,
    timeout_s: float,
    ssh_options: Sequence[str],
    topology: str | None,
    stdin: bytes | None = None,
) -> list[NodeOutput]:
    from ClusterShell.NodeSet import NodeSet
    from ClusterShell.Task import task_self

    task = task_self()
    task.set_info("fanout", width)
    task.set_info("connect_timeout", min(30.0, timeout_s))
    task.set_info("command_timeout", timeout_s)
    if ssh_options:
        task.set_info("ssh_options", " ".join(shlex.quote(option) for option in ssh_options))
    if topology:
        task.load_topology(topology)
    worker = task.shell(remote_command, nodes=NodeSet.fromlist(list(nodes)), timeout=timeout_s,
                        stderr=True, stdin=stdin is not None)  # fmt: skip
    if stdin is not None:
        worker.write(stdin)
        worker.set_write_eof()
    task.resume()
    stdout: dict[str, bytes] = {}
    stderr: dict[str, bytes] = {}
    codes: dict[str, int] = {}
    for buffer, members in worker.iter_buffers():
        for node in members:
            stdout[node] = bytes(buffer)[: OUTPUT_LIMIT + 1]
    for buffer, members in worker.iter_errors():
        for node in members:
            stderr[node] = bytes(buffer)[-65536:]
    for code, members in worker.iter_retcodes():
        for node in members:
            codes[node] = int(code)
    timed_out = set(worker.iter_keys_timeout())
    result = []
    for node in nodes:
        out, err, code = stdout.get(node, b""), stderr.get(node, b""), codes.get(node)
        error = None
        if node in timed_out:
            error = f"timed out after {timeout_s:g} s"
        elif code == 255 and not out:
            # ssh's own failure (refused, unreachable, authentication): its last line says which
            lines = err.decode("utf-8", "replace").strip().splitlines()
            error = f"ssh failed: {lines[-1] if lines else 'exit 255'}"
        result.append(NodeOutput(node, code, out, err, error))
    return result
