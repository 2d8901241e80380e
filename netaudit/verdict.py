"""Per-node verdicts: what the scheduled audit leaves for the Slurm prolog gate.

The audit (netaudit scan with gate.verdict_path in its config) writes one small JSON file per
host it covered, atomically, 0600: the host's unresolved critical exposures, if any. The gate
reads only its own node's file, so it never needs the network or the audit's full report.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from netaudit import atomic
from netaudit.inventory_json import timestamp
from netaudit.models import Report, Severity
from netaudit.typedread import InputError, Table

KIND = "netaudit.verdict"
SCHEMA_VERSION = 1
_LIMIT = 1 << 20


class VerdictError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Verdict:
    host: str
    generated_at: datetime
    critical: tuple[str, ...]  # one line each: rule service address:port from source

    def age_s(self, now: datetime) -> float:
        return (now - self.generated_at).total_seconds()


def path_for(template: str, host: str) -> str:
    return template.replace("%h", host)


def documents(report: Report, hosts: list[str]) -> dict[str, dict[str, Any]]:
    by_host: dict[str, list[str]] = {host: [] for host in hosts}
    for finding in report.findings:
        if finding.severity is Severity.CRITICAL and finding.accepted is None:
            by_host.setdefault(finding.host, []).append(
                f"{finding.rule_id} {finding.service} {finding.address}:{finding.port} "
                f"from {finding.source or 'static analysis'}"
            )
    return {
        host: {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "host": host,
            "generated_at": timestamp(report.generated_at),
            "critical": sorted(set(lines)),
            "is_incomplete": host in report.failed_hosts,
        }
        for host, lines in by_host.items()
    }


def write_all(template: str, report: Report, hosts: list[str]) -> list[str]:
    written = []
    for host, document in sorted(documents(report, hosts).items()):
        path = path_for(template, host)
        atomic.write(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def read(path: str) -> Verdict:
    """Read a verdict. The open is an ordinary blocking one on purpose: on a shared filesystem
    any read can block in the kernel, so the gate's watchdog, not a flag, is what bounds it."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise VerdictError(f"{path}: not a regular file")
            raw = handle.read(_LIMIT + 1)
    except FileNotFoundError:
        raise VerdictError(f"{path}: no verdict (the scheduled audit has not covered this node)") from None
    except OSError as error:
        raise VerdictError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(raw) > _LIMIT:
        raise VerdictError(f"{path}: larger than {_LIMIT} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VerdictError(f"{path}: not JSON: {error}") from None
    top = Table(path, "", data, VerdictError)
    top.header(KIND, SCHEMA_VERSION, "verdict")
    generated_at = top.timestamp("generated_at")
    verdict = Verdict(
        host=top.get("host", str, required=True),
        generated_at=generated_at,
        critical=top.strings("critical", required=True, allow_empty=True) or (),
    )
    top.get("is_incomplete", bool)
    top.finish()
    return verdict
