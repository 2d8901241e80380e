"""Scanning from peers (fanout.scan_from): chosen nodes run the scan themselves, each from its
own source addresses, with the inventories this run gathered sent on stdin; their reports come
back and are merged, every attempt, finding and gap naming the vantage it came from.

Peers are nodes of the cluster, so their reports are read like any other untrusted input.
The central run's accepted exceptions are applied again to the merged findings, and its
signature directories are passed on, so a peer judges with the same rules.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from netaudit import advisories, hostlist, inventory_json
from netaudit.audit import policy
from netaudit.config import Config
from netaudit.fanout import gather
from netaudit.models import Endpoint, Gap, GapKind, Inventory, Report
from netaudit.report import report_read
from netaudit.signatures import Signature
from netaudit.status import ExitStatus
from netaudit.typedread import InputError

if TYPE_CHECKING:
    from netaudit.audit.run import Request


@dataclass(frozen=True, slots=True)
class PeerResults:
    reports: tuple[Report, ...]
    gaps: tuple[Gap, ...]


def scan_arguments(request: Request) -> list[str]:
    """What the peers' scan is told: the same scope, subnets, limits and signatures, JSON out."""
    scan = request.scan
    words = ["--format", "json", "--inventory", "-"]
    for network in request.intended:
        words += ["--intended-subnet", str(network)]
    words += ["--rate", str(scan.rate_per_s), "--in-flight", str(scan.in_flight_per_host),
              "--timeout", str(scan.timeout_s), "--retries", str(scan.retries),
              "--max-inventory-age", str(scan.max_inventory_age_s),
              "--fail-on", scan.fail_on.value, "--trust-scope", scan.trust_scope]  # fmt: skip
    for port in scan.ports:
        words += ["--port", str(port)]
    for directory in request.config.probes_dirs:
        words += ["--probes-dir", directory]
    words += list(scan.targets)
    return words


def remote_command(config: Config, request: Request) -> str:
    return shlex.join([*shlex.split(config.fanout.remote_scan_command), *scan_arguments(request)])


def scan(request: Request, inventories: list[Inventory]) -> PeerResults:
    config = request.config
    names = [name for expression in config.fanout.scan_from for name in hostlist.expand(expression, 4096)]
    bundle = json.dumps([inventory_json.to_json(item) for item in inventories]).encode()
    if config.fanout.method == "command":
        # The probe's template runs `netaudit probe`; peers need the scan template.
        outputs = gather.run_template(config.fanout, config.fanout.scan_command or "", names,
                                      scan_arguments(request), stdin=bundle)  # fmt: skip
    else:
        outputs = gather.run(config.fanout, names, remote_command(config, request), stdin=bundle)
    reports, found = [], []
    for output in outputs:
        if output.error is not None or not output.stdout.strip():
            tail = output.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = output.error or f"exit {output.returncode}, no report" + (
                f": {tail[-1]}" if tail else ""
            )
            kind = GapKind.INTERNAL if output.returncode == ExitStatus.INTERNAL else GapKind.PEER
            found.append(Gap(output.node, kind, f"peer scan failed: {reason}"))
            continue
        try:
            reports.append(report_read.loads(output.stdout, f"peer {output.node}"))
        except InputError as error:
            found.append(Gap(output.node, GapKind.PEER, f"peer report unusable: {error}"))
    return PeerResults(tuple(reports), tuple(found))


def merge(
    report: Report, results: PeerResults, signatures: tuple[Signature, ...], config: Config, now: datetime
) -> Report:
    """Endpoints joined by (host, address, port), attempts and findings added, gaps named by
    the peer that had them. The peers' own gaps of untested endpoints are dropped: whether
    an endpoint was tested is decided again over every vantage together."""
    endpoints: dict[tuple[str, str, int], Endpoint] = {
        (e.host, e.address, e.port): e for e in report.endpoints
    }
    findings = list(report.findings)
    merged_gaps = list(report.gaps) + list(results.gaps)
    sources = {source.address: source for source in report.sources}
    for peer in results.reports:
        findings += peer.findings
        merged_gaps += [
            replace(gap, vantage=peer.vantage_host)
            for gap in peer.gaps
            if gap.kind not in (GapKind.NOT_TESTED, GapKind.SILENT, GapKind.HOST_DOWN)
        ]
        for source in peer.sources:
            sources.setdefault(source.address, source)
        for endpoint in peer.endpoints:
            key = (endpoint.host, endpoint.address, endpoint.port)
            mine = endpoints.get(key)
            if mine is None:
                endpoints[key] = endpoint
            else:
                endpoints[key] = replace(
                    mine,
                    listener=mine.listener or endpoint.listener,
                    attempts=mine.attempts + endpoint.attempts,
                )
    rules = policy.Policy(report.trust_scope, config.exceptions, now.date(), report.vantage_host)
    merged = tuple(sorted(endpoints.values(), key=lambda e: (e.host, e.family, e.address, e.port)))
    findings = list(policy.with_cves(findings, merged, advisories.shipped()))
    return replace(
        report,
        findings=policy.reaccepted(findings, rules),
        endpoints=merged,
        sources=tuple(sources.values()),
        gaps=tuple(merged_gaps),
        probes_sent=report.probes_sent + sum(peer.probes_sent for peer in results.reports),
    )
