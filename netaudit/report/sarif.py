"""SARIF 2.1.0 for code-scanning dashboards. SARIF is file-centric; a finding here is a
host and port, so each result carries a logical location and a stable partial fingerprint
(rule, host, service, family, source network: the baseline key) instead of a line number."""

from __future__ import annotations

from typing import Any

from netaudit import __version__
from netaudit.models import Report, Severity
from netaudit.rules import RULES

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}


def to_sarif(report: Report) -> dict[str, Any]:
    used = sorted({finding.rule_id for finding in report.findings})
    rules = [
        {
            "id": rule_id,
            "name": rule_id,
            "shortDescription": {"text": RULES[rule_id].title},
            "helpUri": RULES[rule_id].doc,
            "properties": {"security-severity": _score(RULES[rule_id].severity)},
        }
        for rule_id in used
    ]
    results = []
    for finding in report.findings:
        shown = f"[{finding.address}]" if ":" in finding.address else finding.address
        endpoint = f"{finding.host}/{shown}:{finding.port}"
        result: dict[str, Any] = {
            "ruleId": finding.rule_id,
            "ruleIndex": used.index(finding.rule_id),
            "level": _LEVEL[finding.severity],
            "message": {
                "text": f"{RULES[finding.rule_id].title}: {finding.service} at {shown}:"
                f"{finding.port} on {finding.host}, {finding.state_text} from "
                f"{finding.source or 'static analysis'}. Fix: {finding.remediation}"
            },
            "locations": [
                {"logicalLocations": [{"name": endpoint, "fullyQualifiedName": endpoint, "kind": "resource"}]}
            ],
            "partialFingerprints": {
                "netauditKey/v1": "|".join(
                    (
                        finding.rule_id,
                        finding.host,
                        finding.service,
                        finding.family.value,
                        finding.source_network,
                    )
                )
            },
            "properties": {
                "severity": finding.severity.value,
                "host": finding.host,
                "address": finding.address,
                "port": finding.port,
                "source": finding.source,
                "confirmed": finding.confirmed,
                "state": finding.state.value,
                "is_unverified": finding.is_unverified,
                "evidence": list(finding.evidence),
                "cves": [cve.id for cve in finding.cves],
            },
        }
        if finding.accepted:
            result["suppressions"] = [{"kind": "external", "justification": finding.accepted}]
        results.append(result)
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "netaudit",
                        "version": __version__,
                        "informationUri": "docs/rules",
                        "rules": rules,
                    }
                },
                "results": results,
                "invocations": [
                    {
                        "executionSuccessful": not report.incomplete,
                        "toolExecutionNotifications": [
                            {"level": "warning", "message": {"text": item}} for item in report.incomplete
                        ],
                    }
                ],
            }
        ],
    }


def _score(severity: Severity | None) -> str:
    return {
        Severity.CRITICAL: "9.5",
        Severity.HIGH: "8.0",
        Severity.MEDIUM: "5.5",
        Severity.LOW: "3.0",
        Severity.INFO: "0.0",
        None: "8.0",
    }[severity]
