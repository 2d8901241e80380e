"""The Slurm prolog check, local only: is this node safe to start a job on?

It fails the node for a **stale** exposed listener: a PyTorch distributed listener on a
non-loopback address whose owning process belongs to no Slurm job active on this node (the
leftover of a finished job). Live jobs of other users on a shared node never fail it: their
listeners are theirs to answer for, through the scheduled audit. Optionally it also reads the
verdict the scheduled audit left for this node, and fails for an unresolved critical exposure
only while that listener is still here and owned by no active job: an exposure that was
closed since, or that belongs to a running job, is no reason to drain a healthy shared node.

Precision over recall: a prolog failure drains the node and holds a user's job, so every
"fail" names the process, port and reason, and anything undecidable is an error for the
--on-error policy to handle, not a failure.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from netaudit import gatescan, slurmjobs
from netaudit.models import Listener, NetNamespace

if TYPE_CHECKING:
    from netaudit.audit.verdict import Exposure
    from netaudit.config import GateSettings
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


class Node(Protocol):
    """What the gate judges: a probe's Inventory, or the narrower gatescan.GateView."""

    @property
    def listeners(self) -> tuple[Listener, ...]: ...

    @property
    def namespaces(self) -> tuple[NetNamespace, ...]: ...


def node_name(environ: dict[str, str]) -> str:
    return environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


def _is_exposed_scope(listener: Listener) -> bool:
    return gatescan.is_exposed(listener.family, listener.address, listener.v6only)


def _job_of(listener: Listener, pid: int, proc: str, jobs: dict[int, str | None]) -> str | None:
    """The job of ``pid``, kept in ``jobs``: every listener of a process has the same one, and
    the ancestor walk reads /proc."""
    if pid not in jobs:
        process = listener.process
        job = process.job.slurm_job_id if process else None
        jobs[pid] = job or slurmjobs.job_of_ancestors(pid, proc)
    return jobs[pid]


def _owner(listener: Listener, job: str | None) -> str:
    owner = f"pid {listener.pid}"
    if listener.process is not None:
        owner += f" {listener.process.name}, user {listener.process.user}"
    why = f"slurm job {job} is not active here" if job else "not part of any Slurm job"
    return f"{owner}; {why}"


def stale_listeners(found: Node, active: set[str], proc: str) -> list[str]:
    stale = []
    jobs: dict[int, str | None] = {}
    for listener in found.listeners:
        classification = listener.classification
        if classification is None or listener.pid is None or not _is_exposed_scope(listener):
            continue
        job = _job_of(listener, listener.pid, proc, jobs)
        if job is not None and job in active:
            continue
        stale.append(f"stale exposed {classification.service} {listener.endpoint} ({_owner(listener, job)})")
    return stale


def _holds(found: Node, listener: Listener, exposure: Exposure) -> bool:
    """Whether ``listener`` is the socket the audit reached at the exposure's address."""
    if listener.port != exposure.port:
        return False
    address = ipaddress.ip_address(exposure.address)
    bound = ipaddress.ip_address(listener.address)
    if bound == address:
        return True
    if not bound.is_unspecified:
        return False
    if bound.version != address.version and not (bound.version == 6 and listener.v6only is False):
        return False
    # A wildcard listener answers on its own namespace's addresses only.
    for namespace in found.namespaces:
        if namespace.inode == listener.netns and namespace.interfaces:
            return any(ipaddress.ip_address(i.address) == address for i in namespace.interfaces)
    return True  # the namespace's addresses are unknown: the port and the wildcard must do


def verdict_reasons(
    found: Node, exposures: tuple[Exposure, ...], active: set[str], proc: str
) -> tuple[list[str], list[str]]:
    """(reasons to fail, warnings) for the verdict's exposures, judged against this node now."""
    reasons: list[str] = []
    warnings: list[str] = []
    jobs: dict[int, str | None] = {}
    for exposure in exposures:
        holders = [listener for listener in found.listeners if _holds(found, listener, exposure)]
        if not holders:
            continue  # closed since the audit: the next audit will call it resolved
        for listener in holders:
            if listener.pid is None:
                warnings.append(f"critical exposure {exposure.line}: its owner cannot be seen")
                continue
            job = _job_of(listener, listener.pid, proc, jobs)
            if job is not None and job in active:
                warnings.append(f"critical exposure {exposure.line} belongs to running slurm job {job}")
                continue
            reasons.append(f"unresolved critical exposure: {exposure.line} ({_owner(listener, job)})")
    return reasons, warnings


def evaluate(
    signatures: Sequence[Signature],
    settings: GateSettings,
    environ: dict[str, str],
    verdict_template: str | None,
    proc: str = "/proc",
) -> GateResult:
    """The verdict is read first, so that the node's read (netaudit.gatescan) knows which
    ports it names. ``signatures`` are loaded by the caller even when nothing needs them, so a
    broken signature file is the same error on every node (netaudit.sigcache keeps it cheap)."""
    warnings: list[str] = []
    too_old: str | None = None  # the verdict's age, when that fails the node
    exposures: tuple[Exposure, ...] | None = None  # the verdict's, when it is recent enough to judge
    if verdict_template:
        from netaudit.audit import verdict

        node = node_name(environ)
        try:
            path = verdict.path_for(verdict_template, node)
            read = verdict.read(path)
        except verdict.VerdictError as error:
            warnings.append(str(error))
        else:
            age_s = read.age_s(datetime.now(UTC))
            if age_s > settings.verdict_max_age_s:
                limit_h = settings.verdict_max_age_s / 3600
                message = f"verdict {path} is {age_s / 3600:.1f} h old (limit {limit_h:.1f} h)"
                if settings.fail_on_stale_verdict:
                    too_old = message
                else:
                    warnings.append(message)
            else:
                exposures = read.exposures
    found = gatescan.collect(signatures, {exposure.port for exposure in exposures or ()}, proc)
    active = set(found.active_jobs)
    reasons = stale_listeners(found, active, proc)
    if too_old is not None:
        reasons.append(too_old)
    if exposures is not None:
        failing, notes = verdict_reasons(found, exposures, active, proc)
        reasons += [reason for reason in failing if reason not in reasons]
        warnings += notes
    if not reasons:
        return GateResult(True, "", (), tuple(warnings))
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    line = f"netaudit: {reasons[0]}"
    if len(line) + len(more) > _LINE_CHARS:
        line = line[: _LINE_CHARS - len(more) - 3] + "..."
    return GateResult(False, line + more, tuple(reasons), tuple(warnings))
