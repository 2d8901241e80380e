"""The human view of a scan: findings first (with the fix), then every endpoint and what each
source saw, then what the reader must know (incomplete, notes)."""

from __future__ import annotations

from tabulate import tabulate

from netaudit.audit.policy import failing
from netaudit.inventory_json import timestamp
from netaudit.models import Attempt, Finding, Report, ScopeSummary
from netaudit.report.report_json import summary

_MAX_ENDPOINT_ROWS = 200
_MAX_FINDING_ROWS = 100  # beyond this a summary by rule comes first, then the worst rows


def _findings_table(findings: tuple[Finding, ...]) -> list[str]:
    """The findings as a table a person can read at any scale: past a hundred rows, counts by
    rule, severity and service first, then the most severe hundred (JSON has them all)."""
    lines = []
    if len(findings) > _MAX_FINDING_ROWS:
        groups: dict[tuple[int, str, str, str], set[str]] = {}
        counts: dict[tuple[int, str, str, str], int] = {}
        for f in findings:
            key = (-f.severity.rank, f.rule_id, f.severity.value.upper(), f.service)
            groups.setdefault(key, set()).add(f.host)
            counts[key] = counts.get(key, 0) + 1
        rows = []
        for key in sorted(groups):
            _rank, rule, severity, service = key
            rows.append([severity, rule, service, counts[key], len(groups[key])])
        lines.append(
            tabulate(rows, headers=["severity", "rule", "service", "findings", "hosts"], tablefmt="simple")
        )
        lines.append("")
        lines.append(f"the {_MAX_FINDING_ROWS} most severe of {len(findings)} (all of them: --format json):")
    lines.append(
        tabulate(
            _finding_rows(findings[:_MAX_FINDING_ROWS]),
            headers=["severity", "rule", "host", "endpoint", "service", "from", "state", "confirmed"],
            tablefmt="simple",
        )
    )
    return lines


def _confirmed(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def _attempt_text(attempt: Attempt) -> str:
    text = f"{attempt.source or 'no source'} {attempt.state.value}"
    if attempt.is_unverified_filter:
        text += " (unverified: no canary answered on this path)"
    elif attempt.state.value == "not-tested":
        text += f" ({attempt.reason.removeprefix('not tested: ')})"
    if attempt.is_local_path:
        text += " (local path, not evidence)"
    if attempt.confirmed is not None:
        text += " confirmed" if attempt.confirmed else " unconfirmed"
    return text


def _finding_rows(findings: tuple[Finding, ...]) -> list[list[str]]:
    rows = []
    for finding in findings:
        shown = f"[{finding.address}]" if ":" in finding.address else finding.address
        service = finding.service + (f"/{finding.variant}" if finding.variant else "")
        severity = finding.severity.value.upper() + (" (accepted)" if finding.accepted else "")
        rows.append(
            [
                severity,
                finding.rule_id,
                finding.host,
                f"{shown}:{finding.port}",
                service,
                finding.source or "static",
                finding.state_text,
                _confirmed(finding.confirmed),
            ]
        )
    return rows


def _cve_lines(findings: tuple[Finding, ...]) -> list[str]:
    """One line per known CVE and service, with the hosts it was seen on."""
    hosts: dict[tuple[str, str], set[str]] = {}
    texts: dict[tuple[str, str], str] = {}
    for finding in findings:
        for cve in finding.cves:
            key = (cve.id, finding.service)
            hosts.setdefault(key, set()).add(finding.host)
            texts.setdefault(key, f"{cve.text} ({cve.source})")
    return [
        f"cve {service} on {', '.join(sorted(hosts[(ident, service)])[:4])}"
        + (", ..." if len(hosts[(ident, service)]) > 4 else "")
        + f": {texts[(ident, service)]}"
        for ident, service in sorted(hosts)
    ]


def render_changes(report: Report) -> str:
    """With --baseline: only what changed, and nothing at all when nothing did, so cron mails
    only news."""
    changes = report.changes
    if changes is None:
        return render(report)
    new = [f for f in report.findings if f.baseline_state == "new"]
    if not new and not changes.resolved and not changes.new_failures and not changes.resolved_failures:
        return ""
    lines = [
        f"netaudit scan · host {report.vantage_host} · {timestamp(report.generated_at)} · changes since "
        + ("nothing (first run)" if changes.is_first_run else "the last run")
        + f": {len(changes.new)} new, {len(changes.resolved)} resolved, "
        f"{len(changes.new_failures)} new failures, {len(changes.resolved_failures)} failures resolved",
        "",
    ]
    if new:
        lines.append("NEW FINDINGS")
        lines.extend(_findings_table(tuple(new)))
        fixes = {f"{f.rule_id} {f.service}": f"{f.remediation} ({f.doc})" for f in new}
        lines += [f"fix {key}: {fix}" for key, fix in fixes.items()]
        lines += _cve_lines(tuple(new))
        lines.append("")
    if changes.resolved:
        lines.append("RESOLVED (rule|host|service|family|network)")
        lines += [f"  {key}" for key in changes.resolved]
        lines.append("")
    if changes.new_failures:
        lines.append("NEW FAILURES")
        lines += [f"  - {item}" for item in changes.new_failures]
        lines.append("")
    if changes.resolved_failures:
        lines.append("FAILURES RESOLVED")
        lines += [f"  - {item}" for item in changes.resolved_failures]
        lines.append("")
    active = sum(1 for f in report.findings if f.accepted is None)
    lines.append(f"still open: {active} findings, {len(report.incomplete)} incomplete items")
    return "\n".join(lines) + "\n"


def scope_text(scope: ScopeSummary) -> str:
    """One line: what the run looked at, so a reader sees at once if a family is missing."""
    text = (
        f"{scope.nodes} node(s) from {scope.derived_from}, {scope.addresses_ipv4} IPv4 and "
        f"{scope.addresses_ipv6} IPv6 node addresses"
    )
    if scope.swept_addresses:
        text += f", {scope.swept_addresses} address(es) swept on the default ports"
    if scope.filters:
        shown = ", ".join(scope.filters[:4]) + (", ..." if len(scope.filters) > 4 else "")
        text += f"; targets: {shown}"
    return text


def render(report: Report) -> str:
    lines: list[str] = []
    counts = summary(report)
    sources = ", ".join(
        f"{s.address} ({s.interface}, {'inside' if s.is_inside else 'outside'})" for s in report.sources
    )
    lines.append(
        f"netaudit scan · host {report.vantage_host} · mode {report.mode} · "
        f"{timestamp(report.generated_at)} · {report.duration_s:.2f} s · {report.probes_sent} probes"
    )
    lines.append(f"sources: {sources or 'loopback only'}")
    intended = ", ".join(report.intended_subnets) or "none (every non-loopback address is outside)"
    lines.append(f"intended subnets: {intended} · trust scope {report.trust_scope}")
    if report.scope is not None:
        lines.append(f"scope: {scope_text(report.scope)}")
    lines.append("")
    bad = failing(report.findings, report.fail_on)
    if report.findings:
        lines.append(f"FINDINGS: {len(report.findings)}, {len(bad)} at or above {report.fail_on.value}")
        lines.extend(_findings_table(report.findings))
        lines.append("")
        fixes: dict[str, str] = {}
        for finding in report.findings:
            fixes.setdefault(f"{finding.rule_id} {finding.service}", f"{finding.remediation} ({finding.doc})")
        for key, fix in fixes.items():
            lines.append(f"fix {key}: {fix}")
        lines += _cve_lines(report.findings)
        accepted = [f for f in report.findings if f.accepted]
        for finding in accepted:
            lines.append(
                f"accepted {finding.rule_id} on {finding.host}:{finding.port} until "
                f"{finding.accepted_until}: {finding.accepted}"
            )
    else:
        lines.append("No findings.")
    lines.append("")
    attempts = counts["attempts"]
    lines.append(
        f"ENDPOINTS: {counts['endpoints']} on {counts['hosts']} host(s) · attempts: "
        + " · ".join(f"{state} {number}" for state, number in attempts.items())
    )
    rows = []
    for endpoint in report.endpoints[:_MAX_ENDPOINT_ROWS]:
        found = endpoint.classification
        service = f"{found.service}/{found.variant}" if found else "(default port)"
        rows.append(
            [
                endpoint.host,
                endpoint.text,
                service,
                "; ".join(_attempt_text(a) for a in endpoint.attempts) or "-",
            ]
        )
    if rows:
        lines.append(tabulate(rows, headers=["host", "endpoint", "service", "seen from"], tablefmt="simple"))
    if len(report.endpoints) > _MAX_ENDPOINT_ROWS:
        lines.append(f"... and {len(report.endpoints) - _MAX_ENDPOINT_ROWS} more (see --format json)")
    if report.is_interrupted:
        lines.append("")
        lines.append("INTERRUPTED: the scan stopped early; unsent probes are not-tested.")
    if report.incomplete:
        lines.append("")
        lines.append("Incomplete:")
        lines.extend(f"  - {item}" for item in report.incomplete)
    if report.notes:
        lines.append("")
        lines.append("Notes:")
        lines.extend(f"  - {note}" for note in report.notes)
    lines.append("")
    lines.append(
        "A clean report proves that these sources could not reach these endpoints now; it says "
        "nothing about other vantage points, other times, or listeners no inventory listed."
    )
    return "\n".join(lines) + "\n"
