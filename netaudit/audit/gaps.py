"""What a run could not inspect, as data, and the exit status a report implies.

An endpoint counts as tested only when a source that can be evidence tried it: outside the
intended subnets (or any source under trust scope "job"), over a path that left this host,
and with an answer or a verified silence. Anything else is a gap with its reason, and a gap
makes the run incomplete (exit 3) — "complete" is never said where nothing was tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from netaudit import status
from netaudit.audit import policy
from netaudit.audit.execute import HOST_DOWN_PREFIX
from netaudit.audit.intake import is_fresh
from netaudit.models import Endpoint, Gap, GapKind, Method, PortState, Report, VantageSource
from netaudit.status import ExitStatus

_TESTED = (PortState.OPEN, PortState.CLOSED, PortState.FILTERED)


def _why_untested(endpoint: Endpoint, sources: Mapping[str, VantageSource], trust_scope: str) -> str:
    if not endpoint.attempts:
        return "no source tried it"
    reasons = []
    for attempt in endpoint.attempts:
        if attempt.state is PortState.NOT_TESTED:
            reasons.append(attempt.reason.removeprefix("not tested: "))
        elif attempt.is_local_path:
            reasons.append("only over a local path (this host probing itself)")
        elif trust_scope != "job" and policy.is_inside_source(attempt, sources):
            reasons.append("only from sources inside the intended subnets")
    return "; ".join(sorted(set(reasons))) or "no outside source tried it"


def is_tested(endpoint: Endpoint, sources: Mapping[str, VantageSource], trust_scope: str) -> bool:
    return any(
        attempt.state in _TESTED
        and not attempt.is_local_path
        and (trust_scope == "job" or not policy.is_inside_source(attempt, sources))
        for attempt in endpoint.attempts
    )


def scan_gaps(
    endpoints: Sequence[Endpoint],
    sources: Mapping[str, VantageSource],
    trust_scope: str,
    max_inventory_age_s: float,
) -> list[Gap]:
    """Hosts down, hosts silent, and endpoints no evidence-worthy source tested."""
    by_host: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_host.setdefault(endpoint.host, []).append(endpoint)
    gaps: list[Gap] = []
    for host, members in sorted(by_host.items()):
        tried = [a for e in members for a in e.attempts if a.method in (Method.SYN, Method.CONNECT)]
        answered = any(a.state in (PortState.OPEN, PortState.CLOSED) or a.is_path_verified for a in tried)
        down = [a.reason for a in tried if a.reason.startswith(HOST_DOWN_PREFIX)]
        if down and not answered:
            gaps.append(Gap(host, GapKind.HOST_DOWN, f"{down[0]} from every source that tried it: down?"))
            continue
        is_known_up = any(is_fresh(e.inventory_age_s, max_inventory_age_s) for e in members)
        if tried and not answered and not is_known_up:
            # With a fresh inventory the host is known to be up, so its silence is a filter.
            silence = "no answer from any source (down, unreachable, or dropping everything)"
            gaps.append(Gap(host, GapKind.SILENT, silence))
            continue
        untested: dict[str, int] = {}
        for endpoint in members:
            if not is_tested(endpoint, sources, trust_scope):
                why = f"{endpoint.family.value}: {_why_untested(endpoint, sources, trust_scope)}"
                untested[why] = untested.get(why, 0) + 1
        gaps += [
            Gap(host, GapKind.NOT_TESTED, f"{count} endpoint(s) not tested ({why})")
            for why, count in sorted(untested.items())
        ]
    return gaps


def failed_hosts(gaps: Iterable[Gap]) -> set[str]:
    kinds = (GapKind.HOST_DOWN, GapKind.SILENT, GapKind.FANOUT, GapKind.UNRESOLVED, GapKind.INTERNAL)
    return {gap.host for gap in gaps if gap.host and gap.kind in kinds}


def exit_status(report: Report) -> ExitStatus:
    """4 > 1 > 3 > 0 across nodes, peers and this host. With --baseline only news counts:
    a new failing finding (1), a new gap (3); an internal error always counts."""
    if report.mode == "dry-run":
        return ExitStatus.OK  # a plan was printed; nothing was inspected, nothing failed
    if report.is_interrupted:
        return ExitStatus.INTERRUPTED
    findings = report.findings
    has_gaps = bool(report.gaps)
    if report.changes is not None:
        findings = tuple(f for f in findings if f.baseline_state == "new")
        has_gaps = bool(report.changes.new_failures)
    found = [ExitStatus.OK]
    if report.has_internal_error:
        found.append(ExitStatus.INTERNAL)
    if policy.failing(findings, report.fail_on):
        found.append(ExitStatus.FINDINGS)
    if has_gaps:
        found.append(ExitStatus.INCOMPLETE)
    return status.worst(found)
