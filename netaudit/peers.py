"""Scanning from peers (fanout.scan_from): chosen nodes run the scan themselves, each from its
own source addresses, with the inventories this run gathered sent on stdin; their reports come
back and are merged, every attempt and finding naming the vantage it came from."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from netaudit import hostlist, inventory_json
from netaudit.fanout import gather
from netaudit.models import Endpoint, Inventory, Report
from netaudit.report import report_read
from netaudit.typedread import InputError

if TYPE_CHECKING:
    from netaudit.cmd_scan import Settings
    from netaudit.config import Config


@dataclass(frozen=True, slots=True)
class PeerResults:
    reports: tuple[Report, ...]
    failures: tuple[str, ...]
    failed_peers: tuple[str, ...]


def remote_command(config: Config, found: Settings) -> str:
    """The peers' scan: the same scope, subnets and limits as this run, JSON out."""
    scan = found.scan
    words = [*shlex.split(config.fanout.remote_scan_command), "--format", "json", "--inventory", "-"]
    for network in found.intended:
        words += ["--intended-subnet", str(network)]
    words += ["--rate", str(scan.rate_per_s), "--in-flight", str(scan.in_flight_per_host),
              "--timeout", str(scan.timeout_s), "--retries", str(scan.retries),
              "--max-inventory-age", str(scan.max_inventory_age_s),
              "--fail-on", scan.fail_on.value, "--trust-scope", scan.trust_scope]  # fmt: skip
    for port in scan.ports:
        words += ["--port", str(port)]
    words += list(found.targets)
    return shlex.join(words)


def scan(config: Config, found: Settings, inventories: list[Inventory]) -> PeerResults:
    names = [name for expression in config.fanout.scan_from for name in hostlist.expand(expression, 4096)]
    bundle = json.dumps([inventory_json.to_json(item) for item in inventories]).encode()
    reports, failures, failed = [], [], []
    for output in gather.run(config.fanout, names, remote_command(config, found), stdin=bundle):
        if output.error is not None or not output.stdout.strip():
            tail = output.stderr.decode("utf-8", "replace").strip().splitlines()
            reason = output.error or f"exit {output.returncode}, no report" + (
                f": {tail[-1]}" if tail else ""
            )
            failures.append(f"peer {output.node}: {reason}")
            failed.append(output.node)
            continue
        try:
            reports.append(report_read.loads(output.stdout, f"peer {output.node}"))
        except InputError as error:
            failures.append(f"peer {output.node}: {error}")
            failed.append(output.node)
    return PeerResults(tuple(reports), tuple(failures), tuple(failed))


def merge(report: Report, results: PeerResults) -> Report:
    endpoints: dict[tuple[str, str, int], Endpoint] = {
        (e.host, e.address, e.port): e for e in report.endpoints
    }
    findings = list(report.findings)
    incomplete = list(report.incomplete) + list(results.failures)
    for peer in results.reports:
        findings += peer.findings
        incomplete += [f"peer {peer.vantage_host}: {item}" for item in peer.incomplete]
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
    return replace(
        report,
        findings=tuple(sorted(findings, key=lambda f: (*f.sort_key, f.vantage))),
        endpoints=tuple(sorted(endpoints.values(), key=lambda e: (e.host, e.family, e.address, e.port))),
        incomplete=tuple(incomplete),
        failed_hosts=tuple(sorted({*report.failed_hosts, *results.failed_peers})),
        probes_sent=report.probes_sent + sum(peer.probes_sent for peer in results.reports),
    )
