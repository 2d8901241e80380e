"""Read a report back from JSON: the central run of a fan-out scan merges the reports its
peers produced (fanout.scan_from). Peers are nodes of the cluster, so their output is checked
like any other input; what the central run needs is rebuilt, the rest is ignored."""

from __future__ import annotations

import ipaddress
from typing import Any

from netaudit import docparse, hostnames
from netaudit.advisories import VERSION_TEXT
from netaudit.inventory_json import read_classification, read_job
from netaudit.models import (
    Attempt,
    Endpoint,
    Family,
    Finding,
    Gap,
    GapKind,
    JobIdentity,
    Listener,
    ListenerSource,
    Method,
    PortState,
    ProcessInfo,
    Report,
    Severity,
    VantageSource,
)
from netaudit.typedread import InputError, Table

KIND = "netaudit.report"


class ReportError(InputError):
    pass


def _enum(table: Table, key: str, enum: Any, nullable: bool = False) -> Any:
    value = table.choice(key, tuple(item.value for item in enum), required=not nullable)
    return None if value is None else enum(value)


def _finding(table: Table, vantage: str) -> Finding:
    process = table.required_sub("process")
    accepted = table.sub("accepted") if table.get("accepted", dict, nullable=True) else None
    finding = Finding(
        rule_id=table.get("rule_id", str, required=True),
        title=table.get("title", str, required=True),
        severity=_enum(table, "severity", Severity),
        service=table.get("service", str, required=True),
        variant=table.get("variant", str, nullable=True),
        host=_host(table, "host") or "",
        address=table.get("address", str, required=True),
        family=_enum(table, "family", Family),
        port=table.integer("port", 1, 65535, required=True) or 0,
        source=table.get("source", str, required=True),
        source_network=table.get("source_network", str, required=True),
        state=_enum(table, "state", PortState),
        confirmed=table.get("confirmed", bool, nullable=True),
        pid=process.integer("pid", 1, 2**32, nullable=True),
        process_name=process.get("name", str, nullable=True),
        user=process.get("user", str, nullable=True),
        job=read_job(table, "job"),
        remediation=table.get("remediation", str, required=True),
        doc=table.get("doc", str, required=True),
        evidence=table.strings("evidence", required=True, allow_empty=True) or (),
        accepted=accepted.get("reason", str, required=True) if accepted else None,
        accepted_until=accepted.get("until", str, nullable=True) if accepted else None,
        vantage=table.get("vantage", str, nullable=True) or vantage,
        baseline_state=table.get("baseline_state", str, nullable=True),
        is_unverified=bool(table.get("is_unverified", bool)),
    )
    # What a peer saw, not which CVEs that means: the merge derives them from its own data
    # (netaudit.audit.policy.with_cves) from the versions in the peer's attempts.
    table.get("cves", list)
    process.finish()
    if accepted:
        accepted.finish()
    table.finish()
    return finding


def _version_text(table: Table) -> str | None:
    version = table.get("version", str, nullable=True)
    if version is not None and not VERSION_TEXT.match(version):
        table.fail("version", f"{version[:64]!r} is not a version")
    return version  # type: ignore[no-any-return]


def _attempt(table: Table, vantage: str) -> Attempt:
    attempt = Attempt(
        source=table.get("source", str, required=True),
        state=_enum(table, "state", PortState),
        method=_enum(table, "method", Method),
        reason=table.get("reason", str, required=True),
        rtt_ms=table.get("rtt_ms", float, nullable=True),
        is_local_path=table.get("is_local_path", bool, required=True),
        is_path_verified=table.get("is_path_verified", bool, required=True),
        confirmed=table.get("confirmed", bool, nullable=True),
        detail=table.get("detail", str, nullable=True),
        vantage=table.get("vantage", str, nullable=True) or vantage,
        authentication=table.get("authentication", bool, nullable=True),
        version=_version_text(table),
    )
    if attempt.source:  # "" is an attempt no source could make (not tested)
        try:
            ipaddress.ip_address(attempt.source)
        except ValueError:
            table.fail("source", f"{attempt.source[:64]!r} is not an IP address")
    table.get("is_unverified_filter", bool)  # derived: recomputed from the fields above
    table.finish()
    return attempt


def _listener(table: Table, port: int, family: Family) -> Listener | None:
    """The part of the inventory's listener a report carries: enough for policy and output."""
    if table.get("listener", dict, nullable=True) is None:
        read_classification(table)  # a plain target's endpoint: checked, nothing to keep
        return None
    sub = table.required_sub("listener")
    pid = sub.integer("pid", 1, 2**32, nullable=True)
    job = read_job(sub, "job")
    name, user = sub.get("process_name", str, nullable=True), sub.get("user", str, nullable=True)
    process = None
    if pid is not None:
        process = ProcessInfo(
            pid, None, name or "?", None, user, (), None, (), (), (), None, job or JobIdentity()
        )
    classification = read_classification(table)
    sub.get("bind", str)
    listener = Listener(
        netns=sub.integer("netns", 0, 2**64, required=True) or 0, family=family,
        address=sub.get("bind_address", str, required=True), port=port, inode=0,
        source=ListenerSource.NETLINK, v6only=None, backlog=None, uid=None, pid=pid,
        pids=(pid,) if pid else (), process=process, classification=classification,
    )  # fmt: skip
    sub.finish()
    return listener


def _endpoint(table: Table, vantage: str) -> Endpoint:
    family = _enum(table, "family", Family)
    port = table.integer("port", 1, 65535, required=True) or 0
    endpoint = Endpoint(
        host=_host(table, "host") or "",
        address=table.get("address", str, required=True),
        family=family,
        port=port,
        listener=_listener(table, port, family),
        inventory_age_s=table.get("inventory_age_s", float, nullable=True),
        is_outside_address=table.get("is_outside_address", bool, required=True),
        attempts=tuple(_attempt(t, vantage) for t in table.tables("attempts", required=True)),
    )
    table.finish()
    return endpoint


def from_json(data: object, source: str) -> Report:
    top = Table(source, "", data, ReportError)
    top.header(KIND, 1, "report")
    vantage_table = top.required_sub("vantage")
    host = vantage_table.get("host", str, required=True)
    sources = []
    for item in vantage_table.tables("sources", required=True):
        sources.append(
            VantageSource(
                address=item.get("address", str, required=True),
                interface=item.get("interface", str, nullable=True),
                network=item.get("network", str, required=True),
                is_inside=item.get("is_inside", bool, required=True),
            )
        )
        item.finish()
    mode = vantage_table.get("mode", str, required=True)
    vantage_table.finish()
    generated_at = top.timestamp("generated_at")
    summary = top.required_sub("summary")
    report = Report(
        generated_at=generated_at,
        netaudit_version=top.get("netaudit_version", str, required=True),
        vantage_host=host,
        mode=mode,
        sources=tuple(sources),
        intended_subnets=top.strings("intended_subnets", required=True, allow_empty=True) or (),
        trust_scope=top.get("trust_scope", str, required=True),
        fail_on=_enum(top, "fail_on", Severity),
        findings=tuple(_finding(t, host) for t in top.tables("findings", required=True)),
        endpoints=tuple(_endpoint(t, host) for t in top.tables("endpoints", required=True)),
        gaps=_gaps(top),
        notes=top.strings("notes", required=True, allow_empty=True) or (),
        duration_s=summary.get("duration_s", float) or 0.0,
        probes_sent=summary.get("probes_sent", int) or 0,
        is_interrupted=bool(summary.get("is_interrupted", bool)),
        failed_hosts=top.strings("failed_hosts", allow_empty=True) or (),
    )
    top.get("changes", dict, nullable=True)
    top.get("scope", dict, nullable=True)
    top.strings("incomplete", allow_empty=True)  # the gaps as sentences; the gaps are read
    top.finish()
    return report


def _host(table: Table, key: str, nullable: bool = False) -> str | None:
    """A host named by a peer: a host name, never a path or a log line of its own."""
    text = table.get(key, str, required=not nullable, nullable=nullable)
    if text is not None and not hostnames.is_valid_host(text):
        table.fail(key, f"{text[:64]!r} is not a host name")
    return text  # type: ignore[no-any-return]


def _gaps(top: Table) -> tuple[Gap, ...]:
    found = []
    for table in top.tables("gaps"):
        found.append(
            Gap(
                host=_host(table, "host", nullable=True),
                kind=_enum(table, "kind", GapKind),
                reason=table.get("reason", str, required=True),
                vantage=table.get("vantage", str) or "",
            )
        )
        table.finish()
    return tuple(found)


def loads(text: bytes | str, source: str) -> Report:
    return from_json(docparse.parse_json(text, source, ReportError), source)
