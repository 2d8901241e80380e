"""Fan-out by running one local command per node: plain ssh, or a command template
(`ip netns exec %h ...`, `pdsh -w %h ...`, a site wrapper). Bounded parallelism (width) and a
timeout per node; a node that times out is killed, not waited for."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from netaudit.fanout import capture
from netaudit.fanout.results import OUTPUT_LIMIT, NodeOutput


def ssh_argv(node: str, remote_command: str, options: Sequence[str]) -> list[str]:
    # "--" keeps a node name from being read as an option by ssh.
    return ["ssh", *options, "--", node, remote_command]


def template_argv(template: str, node: str) -> list[str]:
    return [part.replace("%h", node) for part in shlex.split(template)]


def _run(node: str, argv: list[str], timeout_s: float, stdin: bytes | None) -> NodeOutput:
    result = capture.run_capped(argv, stdin, timeout_s, OUTPUT_LIMIT)
    return NodeOutput(node, result.returncode, result.stdout, result.stderr, result.error)


def run_all(
    commands: dict[str, list[str]], width: int, timeout_s: float, stdin: bytes | None = None
) -> list[NodeOutput]:
    if not commands:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(width, len(commands)))) as pool:
        futures = [pool.submit(_run, node, argv, timeout_s, stdin) for node, argv in commands.items()]
        return [future.result() for future in futures]
