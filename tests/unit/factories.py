"""Small builders for reports and findings (sslyze's factories, in our terms)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from netaudit.models import Family, Finding, PortState, Report, Severity


def finding(**overrides: object) -> Finding:
    base = Finding(
        rule_id="NA001", title="TCPStore reachable from outside the intended subnets",
        severity=Severity.CRITICAL, service="tcpstore", variant="rank0-store", host="node01",
        address="198.51.100.11", family=Family.IPV4, port=29500, source="203.0.113.10",
        source_network="203.0.113.0/24", state=PortState.OPEN, confirmed=True, pid=4242,
        process_name="python3", user="alice", job=None, remediation="firewall it",
        doc="docs/rules/NA001.md", evidence=("syn from 203.0.113.10: open (syn-ack)",),
    )  # fmt: skip
    return replace(base, **overrides)  # type: ignore[arg-type]


def report(*findings: Finding, **overrides: object) -> Report:
    base = Report(
        generated_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC), netaudit_version="0.1.0",
        vantage_host="admin", mode="syn", sources=(), intended_subnets=("198.18.0.0/24",),
        trust_scope="subnet", fail_on=Severity.HIGH, findings=tuple(findings), endpoints=(),
        gaps=(), notes=(), duration_s=1.5, probes_sent=10,
    )  # fmt: skip
    return replace(base, **overrides)  # type: ignore[arg-type]
