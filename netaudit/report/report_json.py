"""The report contract (schema_version 1) in JSON: findings, endpoints with every attempt,
and a summary. Sorted and keyed so that two runs over the same cluster diff cleanly."""

from __future__ import annotations

from collections import Counter
from typing import Any

from netaudit.audit.policy import failing
from netaudit.inventory_json import timestamp
from netaudit.models import Attempt, Endpoint, Finding, JobIdentity, PortState, Report, Severity

KIND = "netaudit.report"


def _job(job: JobIdentity | None) -> dict[str, Any] | None:
    if job is None or job.is_empty:
        return None
    return {name: getattr(job, name) for name in job.__slots__}


def finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "rule_id": finding.rule_id,
        "title": finding.title,
        "severity": finding.severity.value,
        "service": finding.service,
        "variant": finding.variant,
        "host": finding.host,
        "address": finding.address,
        "family": finding.family.value,
        "port": finding.port,
        "source": finding.source,
        "source_network": finding.source_network,
        "state": finding.state.value,
        "confirmed": finding.confirmed,
        "process": {"pid": finding.pid, "name": finding.process_name, "user": finding.user},
        "job": _job(finding.job),
        "remediation": finding.remediation,
        "doc": finding.doc,
        "evidence": list(finding.evidence),
        "accepted": None
        if finding.accepted is None
        else {"reason": finding.accepted, "until": finding.accepted_until},
        "vantage": finding.vantage,
        "baseline_state": finding.baseline_state,
        "is_unverified": finding.is_unverified,
    }


def _attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "source": attempt.source,
        "state": attempt.state.value,
        "method": attempt.method.value,
        "reason": attempt.reason,
        "rtt_ms": attempt.rtt_ms,
        "is_local_path": attempt.is_local_path,
        "is_path_verified": attempt.is_path_verified,
        "is_unverified_filter": attempt.is_unverified_filter,
        "confirmed": attempt.confirmed,
        "detail": attempt.detail,
        "vantage": attempt.vantage,
    }


def _endpoint(endpoint: Endpoint) -> dict[str, Any]:
    listener = endpoint.listener
    found = endpoint.classification
    process = listener.process if listener else None
    return {
        "host": endpoint.host,
        "address": endpoint.address,
        "family": endpoint.family.value,
        "port": endpoint.port,
        "is_outside_address": endpoint.is_outside_address,
        "service": found.service if found else None,
        "variant": found.variant if found else None,
        "confidence": found.confidence.value if found else None,
        "signature": found.signature if found else None,
        "risk": found.risk.value if found else None,
        "connect_safe": found.is_connect_safe if found else False,
        "handshake": found.handshake if found else None,
        "evidence": list(found.evidence) if found else [],
        "do_not_touch": found.is_do_not_touch if found else False,
        "inventory_age_s": None if endpoint.inventory_age_s is None else round(endpoint.inventory_age_s, 3),
        "listener": None
        if listener is None
        else {
            "bind": listener.endpoint,
            "bind_address": listener.address,
            "netns": listener.netns,
            "pid": listener.pid,
            "process_name": process.name if process else None,
            "user": process.user if process else None,
            "job": _job(process.job if process else None),
        },
        "attempts": [_attempt(attempt) for attempt in endpoint.attempts],
    }


def summary(report: Report) -> dict[str, Any]:
    states = Counter(a.state.value for e in report.endpoints for a in e.attempts)
    active = [f for f in report.findings if f.accepted is None]
    return {
        "findings": len(report.findings),
        "findings_accepted": len(report.findings) - len(active),
        "findings_by_severity": {s.value: sum(1 for f in active if f.severity is s) for s in Severity},
        "failing": len(failing(report.findings, report.fail_on)),
        "endpoints": len(report.endpoints),
        "hosts": len({e.host for e in report.endpoints}),
        "attempts": {state.value: states.get(state.value, 0) for state in PortState},
        "probes_sent": report.probes_sent,
        "duration_s": report.duration_s,
        "is_complete": not report.gaps,
        "filtered_unverified": sum(1 for e in report.endpoints for a in e.attempts if a.is_unverified_filter),
        "is_interrupted": report.is_interrupted,
    }


def _scope(report: Report) -> dict[str, Any] | None:
    scope = report.scope
    if scope is None:
        return None
    return {
        "derived_from": scope.derived_from,
        "nodes": scope.nodes,
        "addresses": {"ipv4": scope.addresses_ipv4, "ipv6": scope.addresses_ipv6},
        "filters": list(scope.filters),
        "swept_addresses": scope.swept_addresses,
    }


def to_json(report: Report) -> dict[str, Any]:
    return {
        "schema_version": report.schema_version,
        "kind": KIND,
        "generated_at": timestamp(report.generated_at),
        "netaudit_version": report.netaudit_version,
        "vantage": {
            "host": report.vantage_host,
            "mode": report.mode,
            "sources": [
                {
                    "address": s.address,
                    "interface": s.interface,
                    "network": s.network,
                    "is_inside": s.is_inside,
                }
                for s in report.sources
            ],
        },
        "intended_subnets": list(report.intended_subnets),
        "trust_scope": report.trust_scope,
        "fail_on": report.fail_on.value,
        "findings": [finding_json(finding) for finding in report.findings],
        "endpoints": [_endpoint(endpoint) for endpoint in report.endpoints],
        "scope": _scope(report),
        "gaps": [
            {"host": gap.host, "kind": gap.kind.value, "reason": gap.reason, "vantage": gap.vantage}
            for gap in report.gaps
        ],
        "incomplete": list(report.incomplete),
        "failed_hosts": list(report.failed_hosts),
        "notes": list(report.notes),
        "changes": None
        if report.changes is None
        else {
            "is_first_run": report.changes.is_first_run,
            "new": list(report.changes.new),
            "unchanged": list(report.changes.unchanged),
            "resolved": list(report.changes.resolved),
            "new_failures": list(report.changes.new_failures),
            "resolved_failures": list(report.changes.resolved_failures),
        },
        "summary": summary(report),
    }
