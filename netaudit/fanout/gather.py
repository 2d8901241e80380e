"""Run `netaudit probe` (or a peer's scan) on every node of the config, by its method."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from netaudit import hostlist
from netaudit.config import FanoutSettings
from netaudit.fanout import clustershell, srun, subprocesses
from netaudit.fanout.results import NodeFailure, NodeOutput, to_inventory
from netaudit.models import Inventory
from netaudit.typedread import InputError

MAX_NODES = 65536


class FanoutError(InputError):
    pass


def nodes_of(settings: FanoutSettings, environ: Mapping[str, str]) -> list[str]:
    if settings.nodes:
        return hostlist.expand(settings.nodes, MAX_NODES)
    if settings.method == "srun":
        nodes = srun.allocation_nodes(environ, MAX_NODES)
        if nodes:
            return nodes
        raise FanoutError("fanout.nodes: needed outside a Slurm allocation (no SLURM_JOB_NODELIST)")
    raise FanoutError(f"fanout.nodes: required with method = {settings.method!r}")


def run(
    settings: FanoutSettings,
    nodes: Sequence[str],
    remote_command: str,
    stdin: bytes | None = None,
) -> list[NodeOutput]:
    method = settings.method
    if method == "clustershell":
        return clustershell.run(nodes, remote_command, settings.width, settings.timeout_s,
                                settings.ssh_options, settings.topology, stdin)  # fmt: skip
    if method == "ssh":
        commands = {node: subprocesses.ssh_argv(node, remote_command, settings.ssh_options) for node in nodes}
        return subprocesses.run_all(commands, settings.width, settings.timeout_s, stdin)
    if method == "command":
        template = settings.command or ""
        commands = {node: subprocesses.template_argv(template, node) for node in nodes}
        return subprocesses.run_all(commands, settings.width, settings.timeout_s, stdin)
    if method == "srun":
        if stdin is not None:
            raise FanoutError('fanout.scan_from: not supported with method = "srun"')
        return srun.run(nodes, remote_command, settings.srun_options, settings.timeout_s)
    raise FanoutError(f"fanout.method: unknown method {method!r}")


def run_template(
    settings: FanoutSettings,
    template: str,
    nodes: Sequence[str],
    arguments: Sequence[str],
    stdin: bytes | None = None,
) -> list[NodeOutput]:
    """Method "command" for the peers' scans: ``template`` (fanout.scan_command) with the
    scan's arguments appended."""
    if not template:
        raise FanoutError('fanout.scan_command: required with method = "command" and scan_from')
    commands = {node: [*subprocesses.template_argv(template, node), *arguments] for node in nodes}
    return subprocesses.run_all(commands, settings.width, settings.timeout_s, stdin)


def inventories(
    settings: FanoutSettings, environ: Mapping[str, str]
) -> tuple[list[Inventory], list[NodeFailure]]:
    """Every node's inventory; the nodes that failed, each with its reason."""
    found: list[Inventory] = []
    failures: list[NodeFailure] = []
    for output in run(settings, nodes_of(settings, environ), settings.remote_command):
        result = to_inventory(output)
        if isinstance(result, NodeFailure):
            failures.append(result)
        else:
            found.append(result)
    return found, failures
