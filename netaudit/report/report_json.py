"""The report contract (schema_version 1) in JSON: findings, endpoints with every attempt,
and a summary. Sorted and keyed so that two runs over the same cluster diff cleanly.

``to_json`` builds the document as one dict; ``write`` streams the same text, byte for byte,
one endpoint at a time: a 4,096-node plan has 170,000 endpoints, and the dict of them cost
more memory than the scan itself (bench/README.md, cluster_bench).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

from netaudit import jsonout
from netaudit.audit.policy import failing
from netaudit.inventory_json import timestamp
from netaudit.models import (
    Attempt,
    Classification,
    CveEvidence,
    Endpoint,
    Finding,
    JobIdentity,
    Listener,
    PortState,
    Report,
    Severity,
)

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
        "cves": [cve_json(cve) for cve in finding.cves],
    }


def cve_json(cve: CveEvidence) -> dict[str, Any]:
    return {name: getattr(cve, name) for name in cve.__slots__}


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
        "authentication": attempt.authentication,
        "version": attempt.version,
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
    states = Counter(a.state for e in report.endpoints for a in e.attempts)
    active = [f for f in report.findings if f.accepted is None]
    return {
        "findings": len(report.findings),
        "findings_accepted": len(report.findings) - len(active),
        "findings_by_severity": {s.value: sum(1 for f in active if f.severity is s) for s in Severity},
        "failing": len(failing(report.findings, report.fail_on)),
        "endpoints": len(report.endpoints),
        "hosts": len({e.host for e in report.endpoints}),
        "attempts": {state.value: states.get(state, 0) for state in PortState},
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
        **_head(report),
        "findings": [finding_json(finding) for finding in report.findings],
        "endpoints": [_endpoint(endpoint) for endpoint in report.endpoints],
    }


def _head(report: Report) -> dict[str, Any]:
    """Every top-level key but ``findings`` and ``endpoints``, the two that grow with the
    cluster."""
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


# Streaming -----------------------------------------------------------------------------------

# What jsonout.dumps writes past its indentation threshold: sorted keys, no spaces, ASCII.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
# The C escaper, as the encoder uses it. StrEnum members are str: it writes their value.
_text = json.encoder.encode_basestring_ascii
_BOOL = {True: "true", False: "false", None: "null"}
_WRITE_EVERY = 512  # endpoints per write(): few calls, bounded text
_CACHE_ENTRIES = 4096
_Item = TypeVar("_Item")


def write(report: Report, stream: IO[str]) -> None:
    """Write ``jsonout.dumps(to_json(report), len(report.endpoints))`` to ``stream`` without
    building either: the head is small, and each endpoint is encoded and written in turn."""
    if len(report.endpoints) <= jsonout.INDENT_UP_TO_ITEMS:
        stream.write(jsonout.dumps(to_json(report), len(report.endpoints)))
        return
    head = _head(report)
    separator = "{"
    for key in sorted([*head, "findings", "endpoints"]):
        stream.write(f"{separator}{_text(key)}:")
        separator = ","
        if key == "endpoints":
            _write_list(report.endpoints, _EndpointEncoder().endpoint, stream)
        elif key == "findings":
            _write_list(report.findings, _finding_text, stream)
        else:
            stream.write(_encode(head[key]))
    stream.write("}\n")


def _finding_text(finding: Finding) -> str:
    return _encode(finding_json(finding))


def _write_list(items: Sequence[_Item], encode: Callable[[_Item], str], stream: IO[str]) -> None:
    stream.write("[")
    for start in range(0, len(items), _WRITE_EVERY):
        chunk = ",".join(map(encode, items[start : start + _WRITE_EVERY]))
        stream.write(f",{chunk}" if start else chunk)
    stream.write("]")


def _number(value: float | None) -> str:
    """A number as the json module writes it (repr; NaN and the infinities by name)."""
    if value is None:
        return "null"
    if isinstance(value, int):
        return int.__repr__(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _nullable(value: str | None) -> str:
    return "null" if value is None else _text(value)


class _EndpointEncoder:
    """``_encode(_endpoint(e))`` assembled from pieces: the JSON of one classification,
    listener or attempt is the same in every endpoint that shares the object (a listener
    answers on each of its node's addresses; a dry run's attempts are a handful of values),
    so each is encoded once. The caches hold the objects, so their ids stay theirs, and are
    emptied when full: a scan's attempts are all different, and a node's endpoints are
    neighbours in the report's order."""

    def __init__(self) -> None:
        self.classifications: dict[int, tuple[object, tuple[str, str, str]]] = {}
        self.listeners: dict[int, tuple[object, str]] = {}
        self.attempts: dict[int, tuple[object, str]] = {}
        self.jobs: dict[int, tuple[object, str]] = {}

    @staticmethod
    def _room(cache: dict[int, Any]) -> None:
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()

    def _classification(self, found: Classification | None) -> tuple[str, str, str]:
        """The classification's keys, in the three runs the sorted key order splits them in."""
        if found is None:
            return (
                ',"confidence":null,"connect_safe":false,"do_not_touch":false,"evidence":[]',
                ',"handshake":null',
                ',"risk":null,"service":null,"signature":null,"variant":null}',
            )
        cached = self.classifications.get(id(found))
        if cached is not None:
            return cached[1]
        pieces = (
            f',"confidence":{_text(found.confidence)},"connect_safe":{_BOOL[found.is_connect_safe]}'
            f',"do_not_touch":{_BOOL[found.is_do_not_touch]},"evidence":{_encode(list(found.evidence))}',
            f',"handshake":{_nullable(found.handshake)}',
            f',"risk":{_text(found.risk)},"service":{_text(found.service)}'
            f',"signature":{_text(found.signature)},"variant":{_nullable(found.variant)}}}',
        )
        self._room(self.classifications)
        self.classifications[id(found)] = (found, pieces)
        return pieces

    def _listener(self, listener: Listener | None) -> str:
        if listener is None:
            return "null"
        cached = self.listeners.get(id(listener))
        if cached is not None:
            return cached[1]
        process = listener.process
        if process is None:
            name = user = job = "null"
        else:
            name, user, job = _text(process.name), _nullable(process.user), self._job(process.job)
        pid = listener.pid
        text = (
            f'{{"bind":{_text(listener.endpoint)},"bind_address":{_text(listener.address)},"job":{job}'
            f',"netns":{int.__repr__(listener.netns)},"pid":{"null" if pid is None else int.__repr__(pid)}'
            f',"process_name":{name},"user":{user}}}'
        )
        self._room(self.listeners)
        self.listeners[id(listener)] = (listener, text)
        return text

    def _job(self, job: JobIdentity) -> str:
        """A node's listeners share a few jobs (one per process, or one object for all)."""
        cached = self.jobs.get(id(job))
        if cached is not None:
            return cached[1]
        text = _encode(_job(job))
        self._room(self.jobs)
        self.jobs[id(job)] = (job, text)
        return text

    def _attempt(self, attempt: Attempt) -> str:
        cached = self.attempts.get(id(attempt))
        if cached is not None:
            return cached[1]
        text = (
            f'{{"authentication":{_BOOL[attempt.authentication]}'
            f',"confirmed":{_BOOL[attempt.confirmed]},"detail":{_nullable(attempt.detail)}'
            f',"is_local_path":{_BOOL[attempt.is_local_path]}'
            f',"is_path_verified":{_BOOL[attempt.is_path_verified]}'
            f',"is_unverified_filter":{_BOOL[attempt.is_unverified_filter]}'
            f',"method":{_text(attempt.method)},"reason":{_text(attempt.reason)}'
            f',"rtt_ms":{_number(attempt.rtt_ms)},"source":{_text(attempt.source)}'
            f',"state":{_text(attempt.state)},"vantage":{_text(attempt.vantage)}'
            f',"version":{_nullable(attempt.version)}}}'
        )
        self._room(self.attempts)
        self.attempts[id(attempt)] = (attempt, text)
        return text

    def endpoint(self, endpoint: Endpoint) -> str:
        listener = endpoint.listener
        first, handshake, last = self._classification(listener.classification if listener else None)
        age = endpoint.inventory_age_s
        attempts = ",".join(map(self._attempt, endpoint.attempts))
        return (
            f'{{"address":{_text(endpoint.address)},"attempts":[{attempts}]{first}'
            f',"family":{_text(endpoint.family)}{handshake},"host":{_text(endpoint.host)}'
            f',"inventory_age_s":{"null" if age is None else _number(round(age, 3))}'
            f',"is_outside_address":{_BOOL[endpoint.is_outside_address]}'
            f',"listener":{self._listener(listener)},"port":{int.__repr__(endpoint.port)}{last}'
        )
