"""What a ruleset has to close: listeners reached from outside, and the ports they use.

A port is *fixed* when it is one of its service's default ports (a store on 29500): a port rule
holds for the next job. Every other port (Gloo's, NCCL's and TensorPipe's ephemeral ones, a
store on a random port) changes every job, so only a rule on the job's cgroup closes it for
good; the port list is the fallback where no cgroup can be named, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netaudit import bindscope
from netaudit.models import BindScope, Finding, Inventory
from netaudit.signatures import Signature

# Reached from outside (NA001-NA007, and the cluster's other services NA040-NA047), answering
# outside with only a firewall in the way (NA010), or bound where outsiders could reach it
# (NA020, from inventories).
CLOSABLE_RULES = frozenset(
    {f"NA00{n}" for n in range(1, 8)} | {f"NA04{n}" for n in range(8)} | {"NA010", "NA020"}
)
# Reached from the intended subnet by another tenant: a subnet rule cannot tell them apart.
INTRA_SUBNET_RULES = frozenset({"NA011"})


@dataclass(frozen=True, slots=True)
class Opening:
    """One listener to close: where it was found, and whether its port outlives the job."""

    host: str
    service: str
    port: int
    rule_id: str
    is_fixed_port: bool
    cgroup: str | None  # the owning process's cgroup v2 path, from an inventory only


@dataclass(frozen=True, slots=True)
class Closing:
    openings: tuple[Opening, ...]
    notes: tuple[str, ...]

    @property
    def services(self) -> frozenset[str]:
        return frozenset(opening.service for opening in self.openings)


def _is_fixed(service: str, port: int, signatures: Sequence[Signature]) -> bool:
    return any(s.service == service and port in s.default_ports for s in signatures)


def from_findings(findings: Sequence[Finding], signatures: Sequence[Signature]) -> Closing:
    openings: dict[tuple[str, str, int], Opening] = {}
    skipped: dict[str, int] = {}
    for finding in findings:
        if finding.accepted is not None:
            continue  # an accepted risk stays open until its exception expires
        if finding.rule_id in INTRA_SUBNET_RULES:
            skipped[finding.rule_id] = skipped.get(finding.rule_id, 0) + 1
            continue
        if finding.rule_id not in CLOSABLE_RULES:
            continue
        key = (finding.host, finding.service, finding.port)
        openings.setdefault(
            key,
            Opening(
                finding.host,
                finding.service,
                finding.port,
                finding.rule_id,
                _is_fixed(finding.service, finding.port, signatures),
                None,
            ),
        )
    notes = [
        f"{count} {rule} finding(s) not closed: reached from inside the intended subnet by "
        "another job; a subnet rule cannot tell tenants apart (see docs/rules/NA011.md)"
        for rule, count in sorted(skipped.items())
    ]
    return Closing(tuple(sorted(openings.values(), key=_order)), tuple(notes))


def from_inventories(inventories: Sequence[Inventory], signatures: Sequence[Signature]) -> Closing:
    """Every classified listener that answers beyond loopback and link-local: the static view,
    for a site that wants the rules before the first scan."""
    openings: dict[tuple[str, str, int], Opening] = {}
    for inventory in inventories:
        for listener in inventory.listeners:
            found = listener.classification
            if found is None:
                continue
            scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
            if scope in (BindScope.LOOPBACK, BindScope.LINK_LOCAL):
                continue
            cgroup = listener.process.cgroup if listener.process else None
            key = (inventory.host, found.service, listener.port)
            openings.setdefault(
                key,
                Opening(
                    inventory.host,
                    found.service,
                    listener.port,
                    "NA020",
                    _is_fixed(found.service, listener.port, signatures),
                    cgroup,
                ),
            )
    return Closing(tuple(sorted(openings.values(), key=_order)), ())


def _order(opening: Opening) -> tuple[str, int, str]:
    return (opening.host, opening.port, opening.service)
