"""The human view of an Inventory: PyTorch listeners grouped by process, with evidence and
static exposure hints, then a compact list of everything else, then what could not be seen."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from netaudit.inventory_json import timestamp
from netaudit.models import Inventory, JobIdentity, Listener

_CMD_CHARS = 160


def _job_text(job: JobIdentity) -> str:
    parts = []
    if job.slurm_job_id:
        parts.append(f"slurm job {job.slurm_job_id}")
    if job.rank is not None:
        world = f"/{job.world_size}" if job.world_size is not None else ""
        parts.append(f"rank {job.rank}{world}")
    if job.torchelastic_run_id:
        parts.append(f"run {job.torchelastic_run_id}")
    if job.master_port is not None:
        parts.append(f"MASTER_PORT {job.master_port}")
    return ", ".join(parts)


def _owner_line(listener: Listener) -> str:
    process = listener.process
    if listener.pid is None or process is None:
        uid = f"uid {listener.uid}" if listener.uid is not None else "owner unknown"
        return f"no visible process ({uid})"
    line = f"pid {process.pid} {process.name} (user {process.user or process.uid})"
    if process.job.torch_version:
        line += f"  torch {process.job.torch_version}"
    for package, version in process.packages:
        line += f"  {package} {version}"
    job = _job_text(process.job)
    if job:
        line += f"  {job}"
    return line


def _exposure_text(listener: Listener) -> str:
    hint = listener.exposure
    if hint is None:
        return "?"
    if hint.outside_intended:
        return "YES: " + ", ".join(hint.outside_intended)
    if hint.answers_on:
        return "inside only"
    return "no (" + hint.scope.value + ")" if hint.scope.value in ("loopback", "link-local") else "unknown"


def _group(listeners: Iterable[Listener]) -> dict[tuple[int | None, int], list[Listener]]:
    groups: dict[tuple[int | None, int], list[Listener]] = {}
    for listener in listeners:
        key = (listener.pid, listener.netns if listener.pid is None else 0)
        groups.setdefault(key, []).append(listener)
    return groups


def render(inventory: Inventory) -> str:
    lines: list[str] = []
    who = "root" if inventory.privilege.is_root else "not root"
    lines.append(
        f"netaudit probe · host {inventory.host} · {timestamp(inventory.collected_at)} · {who}"
        f" · {len(inventory.namespaces)} network namespace(s)"
    )
    if inventory.intended_subnets:
        lines.append("intended subnets: " + ", ".join(inventory.intended_subnets))
    else:
        lines.append("intended subnets: none configured, every non-loopback address counts as outside")
    torch = [item for item in inventory.listeners if item.classification is not None]
    other = [item for item in inventory.listeners if item.classification is None]
    lines.append("")
    if not torch:
        lines.append("No PyTorch distributed listener found.")
    else:
        lines.append(f"PyTorch distributed listeners: {len(torch)}")
        for _key, members in sorted(_group(torch).items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
            first = members[0]
            lines.append("")
            lines.append(_owner_line(first))
            if first.process and first.process.cmdline:
                command = " ".join(first.process.cmdline)
                cut = command if len(command) <= _CMD_CHARS else command[:_CMD_CHARS] + "..."
                lines.append(f"  cmd: {cut}")
            rows = []
            for item in members:
                found = item.classification
                if found is None:
                    continue
                service = found.service + (f"/{found.variant}" if found.variant else "")
                if found.is_do_not_touch:
                    service += " [do not touch]"
                rows.append([item.endpoint, service, found.confidence.value, _exposure_text(item)])
            table = tabulate(
                rows,
                headers=["listen", "service", "confidence", "potentially exposed"],
                tablefmt="simple",
            )
            lines.extend("  " + row for row in table.splitlines())
            for item in members:
                if item.classification is not None:
                    evidence = "; ".join(item.classification.evidence)
                    lines.append(f"  why {item.endpoint}: {evidence}")
    if other:
        lines.append("")
        lines.append(f"Other listeners (not PyTorch): {len(other)}")
        for _key, members in sorted(_group(other).items(), key=lambda kv: (kv[0][0] or 0, kv[0][1])):
            first = members[0]
            owner = (
                f"{first.process.name} (pid {first.pid}, {first.process.user})"
                if first.process
                else "no visible process"
            )
            endpoints = ", ".join(item.endpoint for item in members[:8])
            more = f" and {len(members) - 8} more" if len(members) > 8 else ""
            lines.append(f"  {owner}: {endpoints}{more}")
    lines.append("")
    lines.append(
        "Exposure here is a static hint from bind addresses; only `netaudit scan` from a peer "
        "proves reachability."
    )
    if inventory.gaps:
        lines.append("")
        lines.append("Incomplete, could not see:")
        lines.extend(f"  - {gap}" for gap in inventory.gaps)
    return "\n".join(lines) + "\n"
