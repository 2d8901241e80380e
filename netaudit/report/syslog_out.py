"""Syslog (and so journald) lines for the scheduled audit: one summary, one per new finding
(every finding without --baseline), at a priority admins filter on. The socket is /dev/log
unless the config names another (output.syslog_socket)."""

from __future__ import annotations

from netaudit import syslogwire
from netaudit.models import Report, Severity

_PRIORITY = {
    Severity.CRITICAL: syslogwire.CRITICAL,
    Severity.HIGH: syslogwire.ERROR,
    Severity.MEDIUM: syslogwire.WARNING,
    Severity.LOW: syslogwire.INFO,
    Severity.INFO: syslogwire.INFO,
}


def lines(report: Report) -> list[tuple[int, str]]:
    if report.changes is not None:
        findings = [f for f in report.findings if f.baseline_state == "new"]
    else:
        findings = list(report.findings)
    active = [f for f in report.findings if f.accepted is None]
    summary = (
        f"scan done: {len(active)} active findings ({len(findings)} reported), "
        f"{len(report.incomplete)} incomplete, {len(report.endpoints)} endpoints, {report.duration_s:.1f} s"
    )
    if report.changes is not None:
        summary += f", {len(report.changes.new)} new, {len(report.changes.resolved)} resolved"
    result = [(syslogwire.WARNING if report.incomplete else syslogwire.INFO, summary)]
    for finding in findings:
        text = (
            f"{finding.rule_id} {finding.severity.value} {finding.service} {finding.host} "
            f"{finding.address}:{finding.port} from {finding.source or 'static'}"
            + (" (accepted)" if finding.accepted else "")
        )
        result.append((_PRIORITY[finding.severity], text))
    if report.changes is not None:
        result += [(syslogwire.INFO, f"resolved: {key}") for key in report.changes.resolved]
        result += [(syslogwire.WARNING, f"incomplete: {item}") for item in report.changes.new_failures]
    else:
        result += [(syslogwire.WARNING, f"incomplete: {item}") for item in report.incomplete]
    return result


def send(report: Report, address: str = "/dev/log") -> str | None:
    """The problem as one line when the lines could not be sent, else None."""
    return syslogwire.send(lines(report), address, "netaudit")
