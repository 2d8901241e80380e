"""The Slurm prolog check, local only: is this node safe to start a job on?

It fails the node for a **stale** exposed listener: a PyTorch distributed listener on a
non-loopback address whose owning process belongs to no Slurm job active on this node (the
leftover of a finished job). Live jobs of other users on a shared node never fail it: their
listeners are theirs to answer for, through the scheduled audit. Optionally it also fails on an
unresolved critical exposure in the verdict the scheduled audit left for this node.

Precision over recall: a prolog failure drains the node and holds a user's job, so every
"fail" names the process, port and reason, and anything undecidable is an error for the
--on-error policy to handle, not a failure.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from netaudit import bindscope, inventory, slurmjobs, verdict
from netaudit.config import GateSettings
from netaudit.models import BindScope, Inventory, Listener
from netaudit.signatures import Signature

_LINE_CHARS = 240  # a drain reason has to stay readable in `sinfo -R`


@dataclass(frozen=True, slots=True)
class GateResult:
    """Attributes:
    is_pass: the node may run jobs.
    line: the one line for a failure ("netaudit: ..."), empty on a pass.
    details: every reason, for logs and --format json.
    warnings: things worth logging that do not fail the node (a stale verdict, ...).
    """

    is_pass: bool
    line: str
    details: tuple[str, ...]
    warnings: tuple[str, ...]


def node_name(environ: dict[str, str]) -> str:
    return environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def _is_exposed_scope(listener: Listener) -> bool:
    scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
    return scope not in (BindScope.LOOPBACK, BindScope.LINK_LOCAL)


def stale_listeners(found: Inventory, active: set[str], proc: str) -> list[str]:
    stale = []
    for listener in found.listeners:
        classification = listener.classification
        if classification is None or listener.pid is None or not _is_exposed_scope(listener):
            continue
        process = listener.process
        job = process.job.slurm_job_id if process else None
        job = job or slurmjobs.job_of_ancestors(listener.pid, proc)
        if job is not None and job in active:
            continue
        owner = f"pid {listener.pid}"
        if process is not None:
            owner += f" {process.name}, user {process.user}"
        why = f"slurm job {job} is not active here" if job else "not part of any Slurm job"
        stale.append(f"stale exposed {classification.service} {listener.endpoint} ({owner}; {why})")
    return stale


def evaluate(
    signatures: tuple[Signature, ...],
    settings: GateSettings,
    environ: dict[str, str],
    verdict_template: str | None,
    proc: str = "/proc",
) -> GateResult:
    found = inventory.collect(signatures, proc=proc)
    active = slurmjobs.active_jobs(proc)
    reasons = stale_listeners(found, active, proc)
    warnings: list[str] = []
    if verdict_template:
        node = node_name(environ)
        path = verdict.path_for(verdict_template, node)
        try:
            read = verdict.read(path)
        except verdict.VerdictError as error:
            warnings.append(str(error))
        else:
            age_s = read.age_s(datetime.now(UTC))
            if age_s > settings.verdict_max_age_s:
                limit_h = settings.verdict_max_age_s / 3600
                message = f"verdict {path} is {age_s / 3600:.1f} h old (limit {limit_h:.1f} h)"
                if settings.fail_on_stale_verdict:
                    reasons.append(message)
                else:
                    warnings.append(message)
            else:
                reasons += [f"unresolved critical exposure: {line}" for line in read.critical]
    if not reasons:
        return GateResult(True, "", (), tuple(warnings))
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    line = f"netaudit: {reasons[0]}"
    if len(line) + len(more) > _LINE_CHARS:
        line = line[: _LINE_CHARS - len(more) - 3] + "..."
    return GateResult(False, line + more, tuple(reasons), tuple(warnings))
