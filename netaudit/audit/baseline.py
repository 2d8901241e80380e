"""The scheduled audit's memory: what was found last time, so cron mails only news.

A finding is keyed on rule, host, service, address family and the network it was reached from
(Finding.baseline_key); job, process and port are attributes, since they change with every job.
Incomplete items (a node that failed the fan-out, a silent host) are baselined too, keyed on
their text with the numbers taken out, so a node that has been down for a week is reported once.
A host whose data is missing this run keeps its old findings: missing is not resolved.

The state file is JSON, written atomically with mode 0600. A corrupt file or one from another
version is refused (exit 2) and left untouched for inspection; it is never overwritten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from netaudit import atomic, docparse, safeio
from netaudit.inventory_json import timestamp
from netaudit.models import BaselineChanges, Gap, Report
from netaudit.typedread import InputError, Table

KIND = "netaudit.baseline"
SCHEMA_VERSION = 1
_DIGITS = re.compile(r"\d+")
BASELINE_LIMIT_BYTES = 64 << 20


class BaselineError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Baseline:
    """Attributes: findings / failures: key -> entry (first_seen, last_seen, and details)."""

    findings: dict[str, dict[str, Any]]
    failures: dict[str, dict[str, Any]]


def failure_key(gap: Gap) -> str:
    """What makes two runs' gaps "the same": kind, vantage and host verbatim, and the reason
    with its numbers taken out (counts and ports change from run to run; hosts do not)."""
    return "|".join((gap.kind.value, gap.vantage, gap.host or "", _DIGITS.sub("#", gap.reason)))


def _host_of(key: str) -> str:
    return key.split("|")[1]


def load(path: str) -> Baseline | None:
    """The previous state, or None on the first run (no file)."""
    try:
        raw = safeio.read_document(path, BASELINE_LIMIT_BYTES)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise BaselineError(f"{path}: cannot read the baseline: {error.strerror or error}") from None
    try:
        data = docparse.parse_json(raw, path, BaselineError)
    except BaselineError as error:
        why = str(error).removeprefix(f"{path}: not JSON: ")
        raise BaselineError(f"{path}: corrupt baseline (not JSON: {why}); left as it is") from None
    top = Table(path, "", data, BaselineError)
    top.header(KIND, SCHEMA_VERSION, "baseline", "left as it is; move it aside to start over")
    findings = top.get("findings", dict, required=True)
    failures = top.get("failures", dict, required=True)
    for name, table in (("findings", findings), ("failures", failures)):
        if not all(isinstance(v, dict) and isinstance(v.get("first_seen"), str) for v in table.values()):
            top.fail(name, "corrupt entries; left as it is")
    if not all("|" in key for key in findings):  # compare() reads the host out of each key
        top.fail("findings", "corrupt keys; left as it is")
    top.get("updated_at", str)
    top.get("netaudit_version", str)
    top.finish()
    return Baseline(findings=findings, failures=failures)


def compare(previous: Baseline | None, report: Report) -> tuple[Report, Baseline]:
    """The report with each finding marked new or unchanged and the changes attached, and the
    state to save."""
    now = timestamp(report.generated_at)
    old = previous or Baseline({}, {})
    missing_hosts = set(report.failed_hosts)
    findings_state: dict[str, dict[str, Any]] = {}
    marked = []
    for finding in report.findings:
        key = finding.baseline_key
        before = old.findings.get(key)
        state = "unchanged" if before else "new"
        marked.append(replace(finding, baseline_state=state))
        entry = findings_state.setdefault(key, {
            "first_seen": before["first_seen"] if before else now,
            "rule_id": finding.rule_id, "host": finding.host, "service": finding.service,
            "family": finding.family.value, "source_network": finding.source_network,
            "severity": finding.severity.value,
        })  # fmt: skip
        entry["last_seen"] = now
    resolved = []
    for key, entry in old.findings.items():
        if key in findings_state:
            continue
        if _host_of(key) in missing_hosts:
            findings_state[key] = entry  # no data this run: carried, not resolved
        else:
            resolved.append(key)
    failures_state: dict[str, dict[str, Any]] = {}
    new_failures = []
    for gap in report.gaps:
        item = gap.text
        key = failure_key(gap)
        before = old.failures.get(key)
        if before is None and key not in failures_state:
            new_failures.append(item)
        failures_state[key] = {"first_seen": before["first_seen"] if before else now, "last_seen": now,
                               "text": item}  # fmt: skip
    resolved_failures = [entry.get("text", key) for key, entry in old.failures.items()
                         if key not in failures_state]  # fmt: skip
    keys_new = sorted({f.baseline_key for f in marked if f.baseline_state == "new"})
    keys_unchanged = sorted({f.baseline_key for f in marked if f.baseline_state == "unchanged"})
    changes = BaselineChanges(
        new=tuple(keys_new),
        unchanged=tuple(keys_unchanged),
        resolved=tuple(sorted(resolved)),
        new_failures=tuple(new_failures),
        resolved_failures=tuple(sorted(resolved_failures)),
        is_first_run=previous is None,
    )
    return replace(report, findings=tuple(marked), changes=changes), Baseline(findings_state, failures_state)


def save(path: str, state: Baseline, version: str, when: datetime) -> None:
    document = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "netaudit_version": version,
        "updated_at": timestamp(when),
        "findings": state.findings,
        "failures": state.failures,
    }
    atomic.write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
