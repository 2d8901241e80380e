"""Prometheus node_exporter textfile metrics (`--textfile DIR` writes DIR/netaudit.prom).

Counts only, by severity and service, plus the run's timestamp, duration and outcome: a
dashboard and an alert need no host:port, and leaving them out keeps the file harmless, so it is
written 0644 for node_exporter (which rarely runs as root) to read. The rename is atomic, as the
textfile collector requires.
"""

from __future__ import annotations

import os

from netaudit import atomic
from netaudit.models import Report, Severity
from netaudit.status import ExitStatus

FILENAME = "netaudit.prom"
READABLE = 0o644


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    # Exact: %g would round a Unix timestamp to six digits.
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(report: Report, status: ExitStatus) -> str:
    lines: list[str] = []

    def gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}")

    active = [f for f in report.findings if f.accepted is None]
    services = sorted({f.service for f in report.findings})
    findings = [
        ({"severity": severity.value, "service": service},
         float(sum(1 for f in active if f.severity is severity and f.service == service)))
        for severity in Severity for service in services
    ]  # fmt: skip
    totals = [({"severity": s.value}, float(sum(1 for f in active if f.severity is s))) for s in Severity]
    gauge("netaudit_findings", "Active findings of the last run by severity and service.", findings)
    gauge("netaudit_findings_total", "Active findings of the last run by severity.", totals)
    gauge("netaudit_findings_accepted", "Findings accepted by a config exception.",
          [({}, float(len(report.findings) - len(active)))])  # fmt: skip
    if report.changes is not None:
        gauge(
            "netaudit_findings_new", "Findings not in the baseline.", [({}, float(len(report.changes.new)))]
        )
        gauge("netaudit_findings_resolved", "Baseline findings no longer seen.",
              [({}, float(len(report.changes.resolved)))])  # fmt: skip
    by_cve: dict[str, int] = {}
    for finding in active:
        for ident in {cve.id for cve in finding.cves}:
            by_cve[ident] = by_cve.get(ident, 0) + 1
    gauge("netaudit_findings_with_known_cve", "Active findings whose version falls in a known CVE's range.",
          [({}, float(sum(1 for f in active if f.cves)))])  # fmt: skip
    per_cve = [({"cve": ident}, float(count)) for ident, count in sorted(by_cve.items())]
    gauge("netaudit_known_cve_findings", "Active findings per known CVE (probes/cves/cves.toml).", per_cve)
    gauge("netaudit_endpoints", "Endpoints (address x port) tried.", [({}, float(len(report.endpoints)))])
    unverified = sum(1 for e in report.endpoints for a in e.attempts if a.is_unverified_filter)
    gauge("netaudit_filtered_unverified", "Filtered attempts on paths where no canary answered.",
          [({}, float(unverified))])  # fmt: skip
    gauge("netaudit_incomplete_items", "Things the last run could not inspect.",
          [({}, float(len(report.incomplete)))])  # fmt: skip
    gauge("netaudit_failed_hosts", "Hosts whose data is missing in the last run.",
          [({}, float(len(report.failed_hosts)))])  # fmt: skip
    gauge("netaudit_last_run_exit_status", "Exit status of the last run (0 clean, 1 findings, 3 incomplete).",
          [({}, float(int(status)))])  # fmt: skip
    gauge("netaudit_last_run_success", "1 when the last run inspected everything it was asked to.",
          [({}, 1.0 if not report.incomplete and not report.is_interrupted else 0.0)])  # fmt: skip
    gauge("netaudit_last_run_timestamp_seconds", "When the last run started (Unix time).",
          [({}, report.generated_at.timestamp())])  # fmt: skip
    gauge("netaudit_last_run_duration_seconds", "How long the last run took.", [({}, report.duration_s)])
    return "\n".join(lines) + "\n"


def write(directory: str, report: Report, status: ExitStatus) -> str:
    path = os.path.join(directory, FILENAME)
    atomic.write(path, render(report, status), mode=READABLE)
    return path
