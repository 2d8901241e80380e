"""Turn what the scan saw into findings. Pure: data in, sorted findings out.

- Reached (SYN-ACK) from a source outside the intended subnets: the service's rule
  (NA001-NA007), at the service's risk. Reached only from inside: nothing, unless the trust
  scope is "job" and the source's host is not part of the listener's job (NA011).
- Filtered from outside while the listener answers on that address per its inventory: NA010,
  one firewall rule from exposure.
- An open PyTorch default port without inventory: NA001/NA005 when the read-only handshake
  confirms the service, else NA012 (unconfirmed).
- The local audit (no peer): NA020 for listeners that answer on outside addresses per
  their bind; the proof needs a peer.
- Attempts over a local path (a host probing its own address) are never evidence.
Config exceptions accept a finding (reported, never failing the run) until they expire.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from netaudit import advisories, exposure, hostlist
from netaudit.config import AcceptedException
from netaudit.models import (
    Attempt,
    Classification,
    Endpoint,
    Finding,
    Inventory,
    JobIdentity,
    PortState,
    Severity,
    VantageSource,
)
from netaudit.rules import RULES
from netaudit.signatures import Signature

UNCONFIRMED_RULE = "NA012"
GUARDED = Severity.MEDIUM  # the most an exposure whose service demands credentials is rated
Network = exposure.Network


@dataclass(frozen=True, slots=True)
class Policy:
    """Attributes:
    vantage_host: the node this scan ran on (for trust scope "job").
    """

    trust_scope: str
    exceptions: tuple[AcceptedException, ...]
    today: dt.date
    vantage_host: str
    known: advisories.Known | None = None  # the CVE data; None: no CVE evidence


def _job_key(job: JobIdentity | None) -> str | None:
    if job is None:
        return None
    if job.slurm_job_id:
        return f"slurm:{job.slurm_job_id}"
    if job.torchelastic_run_id and job.torchelastic_run_id != "none":
        return f"run:{job.torchelastic_run_id}"
    return None


def job_nodes(inventories: Sequence[Inventory]) -> dict[str, set[str]]:
    """Job key -> the hosts whose inventories show a process of that job: its allocation,
    as far as the audit can see it."""
    nodes: dict[str, set[str]] = {}
    for inventory in inventories:
        for listener in inventory.listeners:
            key = _job_key(listener.process.job if listener.process else None)
            if key:
                nodes.setdefault(key, set()).add(inventory.host)
    return nodes


def _base(
    endpoint: Endpoint,
    rule_id: str,
    severity: Severity,
    service: str,
    signature: Signature | None,
    attempt: Attempt | None,
    source: VantageSource | None,
    evidence: list[str],
) -> Finding:
    listener = endpoint.listener
    process = listener.process if listener else None
    found = endpoint.classification
    fix = signature.fix if signature else "Bind it to the fabric and firewall it to the job's nodes."
    if attempt is not None and attempt.authentication and severity.rank > GUARDED.rank:
        # Reachable, but it asked for credentials: still an open door to guess at and to every
        # pre-authentication flaw, not the open house the service's risk describes.
        severity = GUARDED
        evidence.append(f"authentication is on, so the severity is {GUARDED.value}, not the service's own")
    return Finding(
        rule_id=rule_id,
        title=RULES[rule_id].title,
        severity=severity,
        service=service,
        variant=found.variant if found else None,
        host=endpoint.host,
        address=endpoint.address,
        family=endpoint.family,
        port=endpoint.port,
        source=attempt.source if attempt else "",
        source_network=source.network if source else "static",
        state=attempt.state if attempt else PortState.NOT_TESTED,
        confirmed=attempt.confirmed if attempt else None,
        pid=listener.pid if listener else None,
        process_name=process.name if process else None,
        user=process.user if process else None,
        job=process.job if process else None,
        remediation=fix,
        doc=RULES[rule_id].doc,
        evidence=tuple(evidence),
        vantage=attempt.vantage if attempt else "",
    )


def _confirmed_any(endpoint: Endpoint) -> bool | None:
    verdicts = [a.confirmed for a in endpoint.attempts if a.confirmed is not None]
    return any(verdicts) if verdicts else None


def _service_of_plain(endpoint: Endpoint, signatures: Sequence[Signature]) -> Signature | None:
    """The signature a plain target's open default port turned out to be, if confirmed."""
    if not _confirmed_any(endpoint):
        return None
    return next((s for s in signatures if s.handshake and endpoint.port in s.default_ports), None)


def _evidence(endpoint: Endpoint, attempt: Attempt, source: VantageSource | None) -> list[str]:
    lines = [
        f"{attempt.method.value} from {attempt.source}"
        + (f" ({source.interface}, {source.network})" if source else "")
        + f": {attempt.state.value} ({attempt.reason})"
    ]
    if attempt.rtt_ms is not None:
        lines[0] += f", rtt {attempt.rtt_ms:.3f} ms"
    if attempt.confirmed is not None:
        lines.append(f"handshake: {attempt.detail}")
    found = endpoint.classification
    if found is not None:
        lines.append(f"inventory: {found.service}/{found.variant} ({found.confidence.value})")
    if endpoint.listener is not None:
        lines.append(f"listener bound to {endpoint.listener.endpoint} on {endpoint.host}")
    return lines


def evaluate(
    endpoints: Sequence[Endpoint],
    sources: Mapping[str, VantageSource],
    signatures: Sequence[Signature],
    policy: Policy,
    jobs: Mapping[str, set[str]],
) -> tuple[Finding, ...]:
    by_id = {s.id: s for s in signatures}
    findings: list[Finding] = []
    reached: set[tuple[str, int, str, int]] = set()
    guarded: dict[tuple[str, int, str, int], tuple[Endpoint, list[Attempt]]] = {}
    for endpoint in endpoints:
        found = endpoint.classification
        signature = by_id.get(found.signature) if found else None
        # Not-tested attempts have no source: they are gaps (gaps.py), never evidence.
        evidence_attempts = [a for a in endpoint.attempts if not a.is_local_path and a.source]
        outside = [a for a in evidence_attempts if not _inside(a, sources)]
        reached_outside = [a for a in outside if a.state is PortState.OPEN]
        for attempt in reached_outside:
            findings.append(
                _reached(endpoint, attempt, sources.get(attempt.source), found, signature, signatures)
            )
        if found is None or signature is None:
            continue
        listener = _listener_key(endpoint)
        if reached_outside:
            reached.add(listener)
            continue
        if policy.trust_scope == "job":
            findings.extend(_intra_cluster(endpoint, evidence_attempts, sources, signature, policy, jobs))
        filtered = [a for a in outside if a.state is PortState.FILTERED]
        if filtered:
            _endpoint, attempts = guarded.setdefault(listener, (endpoint, []))
            attempts.extend(filtered)
    # NA010 once per listener, and only for listeners no outsider reached on any address: one
    # line per firewalled listener, not per address and source (a cluster behind a drop-all
    # firewall would otherwise report every endpoint).
    for listener, (endpoint, attempts) in guarded.items():
        if listener in reached:
            continue
        found = endpoint.classification
        signature = by_id.get(found.signature) if found else None
        if found is None or signature is None:
            continue
        attempt = attempts[0]
        source = sources.get(attempt.source)
        evidence = _evidence(endpoint, attempt, source)
        addresses = sorted({a.source + " -> " + endpoint.address for a in attempts})
        evidence.append(f"filtered from outside on {len(attempts)} attempts ({', '.join(addresses[:4])}"
                        + (", ..." if len(addresses) > 4 else "") + ")")  # fmt: skip
        is_unverified = not any(a.is_path_verified for a in attempts)
        if is_unverified:
            evidence.append(
                "unverified: no canary answered on these paths, so a firewall dropping "
                "everything and a path that goes nowhere look the same"
            )
        finding = _base(
            endpoint, "NA010", Severity.MEDIUM, found.service, signature, attempt, source, evidence
        )
        findings.append(replace(finding, is_unverified=is_unverified))
    return _accepted_and_sorted(list(with_cves(findings, endpoints, policy.known)), policy)


def _listener_key(endpoint: Endpoint) -> tuple[str, int, str, int]:
    listener = endpoint.listener
    if listener is None:
        return (endpoint.host, 0, endpoint.address, endpoint.port)
    return (endpoint.host, listener.netns, listener.address, listener.port)


def _reached(
    endpoint: Endpoint, attempt: Attempt, source: VantageSource | None, found: Classification | None,
    signature: Signature | None, signatures: Sequence[Signature],
) -> Finding:  # fmt: skip
    """The finding for an endpoint an outsider reached: the service's rule when the
    inventory knows it, the confirmed service for a plain target, else NA012."""
    evidence = _evidence(endpoint, attempt, source)
    if found is not None and signature is not None:
        return _base(
            endpoint, signature.rule_id, found.risk, found.service, signature, attempt, source, evidence
        )
    confirmed = _service_of_plain(endpoint, signatures)
    if confirmed is not None:
        rule, risk, service = confirmed.rule_id, confirmed.risk, confirmed.service
        return _base(endpoint, rule, risk, service, confirmed, attempt, source, evidence)
    evidence.append("no inventory for this host, and no handshake confirmed a service")
    return _base(endpoint, UNCONFIRMED_RULE, Severity.LOW, "unknown", None, attempt, source, evidence)


def _inside(attempt: Attempt, sources: Mapping[str, VantageSource]) -> bool:
    source = sources.get(attempt.source)
    if source is not None:
        return source.is_inside
    try:
        return ipaddress.ip_address(attempt.source).is_loopback
    except ValueError:  # no source we know of: not evidence of anything outside
        return True


def _intra_cluster(
    endpoint: Endpoint,
    attempts: list[Attempt],
    sources: Mapping[str, VantageSource],
    signature: Signature,
    policy: Policy,
    jobs: Mapping[str, set[str]],
) -> list[Finding]:
    listener = endpoint.listener
    key = _job_key(listener.process.job if listener and listener.process else None)
    if key is None or policy.vantage_host in jobs.get(key, set()):
        return []
    found = endpoint.classification
    if found is None:
        return []
    result = []
    for attempt in attempts:
        if attempt.state is not PortState.OPEN or not _inside(attempt, sources):
            continue
        source = sources.get(attempt.source)
        evidence = _evidence(endpoint, attempt, source)
        members = hostlist.fold(sorted(jobs.get(key, set())))
        evidence.append(f"{policy.vantage_host} is not one of the job's nodes ({key}: {members})")
        result.append(
            _base(endpoint, "NA011", found.risk, found.service, signature, attempt, source, evidence)
        )
    return result


def static_findings(
    endpoints: Sequence[Endpoint], signatures: Sequence[Signature], policy: Policy
) -> tuple[Finding, ...]:
    """The local audit's findings (NA020): one per listener that answers on an address
    outside the intended subnets, per its bind and this host's interfaces."""
    by_id = {s.id: s for s in signatures}
    findings = []
    for endpoint in endpoints:
        listener = endpoint.listener
        found = endpoint.classification
        if listener is None or found is None or listener.exposure is None:
            continue
        if not listener.exposure.outside_intended:
            continue
        evidence = [
            f"answers on {', '.join(listener.exposure.outside_intended)} (outside the intended "
            f"subnets) per its bind: {listener.exposure.note}",
            f"inventory: {found.service}/{found.variant} ({found.confidence.value}): "
            + "; ".join(found.evidence),
        ]
        evidence += [f"loopback handshake: {a.detail}" for a in endpoint.attempts if a.detail]
        finding = _base(
            endpoint,
            "NA020",
            Severity.MEDIUM,
            found.service,
            by_id.get(found.signature),
            None,
            None,
            evidence,
        )
        findings.append(replace(finding, confirmed=_confirmed_any(endpoint)))
    return _accepted_and_sorted(list(with_cves(findings, endpoints, policy.known)), policy)


def _versions(
    endpoint: Endpoint, service: str, vantage: str, known: advisories.Known
) -> list[tuple[str, str, str]]:
    """(package, version, where seen) of what runs behind ``endpoint``: what the probe read
    on the node, then what the service answered to ``vantage``, the host whose finding it is
    (a merged endpoint holds every peer's attempts; one peer's answer is not another's)."""
    versions = []
    listener = endpoint.listener
    process = listener.process if listener else None
    if process is not None:
        if process.job is not None and process.job.torch_version:
            versions.append(("torch", process.job.torch_version, "local"))
        versions += [(package, version, "local") for package, version in process.packages]
    answered = [a.version for a in endpoint.attempts if a.confirmed and a.vantage == vantage]
    return versions + advisories.answered_versions(known, service, answered)


def with_cves(
    findings: Sequence[Finding], endpoints: Sequence[Endpoint], known: advisories.Known | None
) -> tuple[Finding, ...]:
    """Each finding with the known CVEs of the versions behind its endpoint, from this run's
    data file: a peer's report says what it saw, never which CVEs that means."""
    if known is None:
        return tuple(findings)
    by_key = {(e.host, e.address, e.port): e for e in endpoints}
    result = []
    for finding in findings:
        endpoint = by_key.get((finding.host, finding.address, finding.port))
        versions = _versions(endpoint, finding.service, finding.vantage, known) if endpoint else []
        cves = advisories.evidence(known, finding.service, versions) if versions else ()
        result.append(finding if cves == finding.cves else replace(finding, cves=cves))
    return tuple(result)


def _matches(exception: AcceptedException, finding: Finding) -> bool:
    if exception.rule != finding.rule_id:
        return False
    if exception.service and exception.service != finding.service:
        return False
    if exception.port and exception.port != finding.port:
        return False
    if exception.hosts and not (
        fnmatchcase(finding.host, exception.hosts) or hostlist.contains(exception.hosts, finding.host)
    ):
        return False
    if exception.networks:
        address = ipaddress.ip_address(finding.address)
        if not any(
            address in ipaddress.ip_network(net)
            for net in exception.networks
            if ipaddress.ip_network(net).version == address.version
        ):
            return False
    return True


def _accepted_and_sorted(findings: list[Finding], policy: Policy) -> tuple[Finding, ...]:
    result = []
    for finding in findings:
        accepting = next(
            (e for e in policy.exceptions if _matches(e, finding) and e.expires >= policy.today), None
        )
        if accepting is not None:
            result.append(
                replace(finding, accepted=accepting.reason, accepted_until=accepting.expires.isoformat())
            )
        else:
            result.append(finding)
    return tuple(sorted(result, key=lambda f: f.sort_key))


def expired_exceptions(policy: Policy) -> list[str]:
    return [
        f"{e.source}: exception for {e.rule} expired on {e.expires.isoformat()} ({e.reason})"
        for e in policy.exceptions
        if e.expires < policy.today
    ]


def failing(findings: Sequence[Finding], fail_on: Severity) -> list[Finding]:
    return [f for f in findings if f.accepted is None and f.severity.rank >= fail_on.rank]


def is_inside(address: str, intended: Sequence[Network]) -> bool:
    """The one inside/outside decision of the vantage side: an address (an IPv4-mapped IPv6
    address as its IPv4 one) within an intended subnet. Cached per address."""
    return exposure.is_inside(address, intended)


def is_inside_source(attempt: Attempt, sources: Mapping[str, VantageSource]) -> bool:
    return _inside(attempt, sources)


def reaccepted(findings: Sequence[Finding], policy: Policy) -> tuple[Finding, ...]:
    """Findings merged from peers, judged by this run's exceptions (a peer's own config is
    not ours), sorted with the vantage as the last key."""
    fresh = [replace(finding, accepted=None, accepted_until=None) for finding in findings]
    return tuple(sorted(_accepted_and_sorted(fresh, policy), key=lambda f: (*f.sort_key, f.vantage)))
