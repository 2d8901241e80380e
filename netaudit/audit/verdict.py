"""Per-node verdicts: what the scheduled audit leaves for the Slurm prolog gate.

The audit (netaudit scan with gate.verdict_path in its config) writes one small JSON file per
host it covered, atomically, 0600: the host's unresolved critical exposures, if any, each with
its address and port so the gate can ask whether that listener is still there. The gate reads
only its own node's file, so it never needs the network or the audit's full report.

Schema 2 added ``exposures``; a schema 1 verdict is refused with advice to rerun the audit,
which the gate turns into a warning, never a failure.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from netaudit import atomic, docparse, hostnames, safeio
from netaudit.inventory_json import timestamp
from netaudit.models import Report, Severity
from netaudit.typedread import InputError, Table

KIND = "netaudit.verdict"
SCHEMA_VERSION = 2
_LIMIT = 1 << 20


class VerdictError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Exposure:
    """One unresolved critical exposure of the node, as the gate matches it to a listener."""

    rule_id: str
    service: str
    address: str
    port: int
    source: str  # the vantage address it was reached from; "" for static findings

    @property
    def line(self) -> str:
        endpoint = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        return f"{self.rule_id} {self.service} {endpoint} from {self.source or 'static analysis'}"


@dataclass(frozen=True, slots=True)
class Verdict:
    host: str
    generated_at: datetime
    exposures: tuple[Exposure, ...]

    def age_s(self, now: datetime) -> float:
        return (now - self.generated_at).total_seconds()


def path_for(template: str, host: str) -> str:
    """The verdict file of ``host``: inside the template's directory, whatever the name.

    Host names come from documents other nodes wrote; one that is not a host name
    (``../../etc/cron.d/x``) never becomes part of a path.
    """
    if not hostnames.is_valid_host(host):
        raise VerdictError(f"{host!r}: not a host name, so no verdict file is named after it")
    path = template.replace("%h", host)
    if os.path.dirname(path) != os.path.dirname(template.replace("%h", "x")):
        raise VerdictError(f"gate.verdict_path {template!r}: %h may appear only in the file name")
    return path


def check_template(template: str) -> None:
    """VerdictError when %h is missing or outside the file name."""
    if "%h" not in os.path.basename(template) or "%h" in os.path.dirname(template):
        raise VerdictError(f"gate.verdict_path {template!r}: needs %h in the file name, and only there")


def documents(report: Report, hosts: list[str]) -> dict[str, dict[str, Any]]:
    by_host: dict[str, set[Exposure]] = {host: set() for host in hosts}
    for finding in report.findings:
        if finding.severity is Severity.CRITICAL and finding.accepted is None:
            exposure = Exposure(
                finding.rule_id, finding.service, finding.address, finding.port, finding.source
            )
            by_host.setdefault(finding.host, set()).add(exposure)
    failed = set(report.failed_hosts) | {gap.host for gap in report.gaps}
    return {
        host: {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "host": host,
            "generated_at": timestamp(report.generated_at),
            "critical": sorted(exposure.line for exposure in exposures),
            "exposures": [
                {
                    "rule_id": e.rule_id,
                    "service": e.service,
                    "address": e.address,
                    "port": e.port,
                    "source": e.source,
                }
                for e in sorted(exposures, key=lambda e: (e.address, e.port, e.rule_id, e.source))
            ],
            "is_incomplete": host in failed,
        }
        for host, exposures in by_host.items()
    }


def write_all(template: str, report: Report, hosts: list[str]) -> tuple[list[str], list[str]]:
    """Write one verdict per valid host: (paths written, hosts skipped with the reason)."""
    written, skipped = [], []
    for host, document in sorted(documents(report, hosts).items()):
        try:
            path = path_for(template, host)
        except VerdictError as error:
            skipped.append(f"verdict not written: {error}")
            continue
        atomic.write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written, skipped


def _exposure(table: Table) -> Exposure:
    address = table.get("address", str, required=True)
    try:
        ipaddress.ip_address(address)
    except ValueError:
        table.fail("address", f"{address!r} is not an IP address")
    exposure = Exposure(
        rule_id=table.get("rule_id", str, required=True),
        service=table.get("service", str, required=True),
        address=address,
        port=table.integer("port", 1, 65535, required=True) or 0,
        source=table.get("source", str, required=True),
    )
    table.finish()
    return exposure


def read(path: str) -> Verdict:
    """Read a verdict: a regular file of at most 1 MiB (a FIFO or a device is refused before a
    byte is read); on a shared filesystem the gate's watchdog bounds a read blocked in the
    kernel."""
    try:
        raw = safeio.read_document(path, _LIMIT)
    except FileNotFoundError:
        raise VerdictError(f"{path}: no verdict (the scheduled audit has not covered this node)") from None
    except OSError as error:
        raise docparse.read_error(path, error, VerdictError) from None
    data = docparse.parse_json(raw, path, VerdictError)
    top = Table(path, "", data, VerdictError)
    top.header(KIND, SCHEMA_VERSION, "verdict", "rerun the scheduled audit with this netaudit")
    verdict = Verdict(
        host=hostnames.check_host(top.get("host", str, required=True), f"{path}: host"),
        generated_at=top.timestamp("generated_at"),
        exposures=tuple(_exposure(item) for item in top.tables("exposures", required=True)),
    )
    top.strings("critical", required=True, allow_empty=True)  # for people; the gate reads exposures
    top.get("is_incomplete", bool)
    top.finish()
    return verdict
