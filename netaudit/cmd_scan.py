"""`netaudit scan`: resolve config and flags, read the inventories, run the audit
(netaudit.audit.run), write the sinks, render, and say the exit status.

With no targets, no inventory and no fan-out it audits this host alone without sending to
any non-loopback address, and says that proof needs a peer.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

from netaudit import docparse, options
from netaudit.audit import settings as scan_settings
from netaudit.status import ExitStatus

if TYPE_CHECKING:
    from netaudit.config import Config
    from netaudit.environment import Environment
    from netaudit.models import Inventory, Report

# A bundle of 4,096 nodes is ~0.5 GB; past 2 GiB, split the scan.
INVENTORY_LIMIT_BYTES = 2 << 30


def resolve(args: argparse.Namespace, config: Config) -> scan_settings.ScanSettings:
    """The config's [scan] with the flags applied, every bound checked the same way."""
    return scan_settings.with_flags(
        config.scan,
        {
            "targets": args.targets,
            "sources": args.source,
            "ports": args.port,
            "rate_per_s": args.rate,
            "in_flight_per_host": args.in_flight,
            "timeout_s": args.timeout,
            "retries": args.retries,
            "max_inventory_age_s": args.max_inventory_age,
            "max_targets": args.max_targets,
            "max_endpoints": args.max_endpoints,
            "allow_connect": args.allow_connect or None,
            "fail_on": args.fail_on,
            "trust_scope": args.trust_scope,
        },
    )


def load_inventories(paths: list[str], env: Environment) -> list[Inventory]:
    """Every --inventory file ('-' reads stdin); a malformed one stops the run (exit 2).

    One document at a time: parsed, validated, and its equal parts shared with those read
    before it (intake.Sharing), before the next is parsed."""
    from netaudit import inventory_json
    from netaudit.audit.intake import Sharing
    from netaudit.audit.run import long_lived_objects

    documents = docparse.iter_inventory_documents(paths, env.stdin, INVENTORY_LIMIT_BYTES, unparsed=True)
    sharing = Sharing()

    def read(label: str, document: object) -> Inventory:
        if isinstance(document, bytes):
            return inventory_json.from_text(document, label)
        return inventory_json.from_json(document, label)

    with long_lived_objects():
        return [sharing.compact(read(label, document)) for label, document in documents]


def write_report(report: Report, fmt: str, stream: IO[str]) -> None:
    """What ``render`` returns, written to ``stream``: JSON as it is encoded, one endpoint
    after another, so a cluster's report is never held whole."""
    if fmt == "json":
        from netaudit.report import report_json

        report_json.write(report, stream)
    else:
        stream.write(render(report, fmt))


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        from netaudit import jsonout
        from netaudit.report import report_json

        return jsonout.dumps(report_json.to_json(report), len(report.endpoints))
    if fmt == "sarif":
        from netaudit.report import sarif

        return jsonout.dumps(sarif.to_sarif(report), len(report.findings))
    if fmt == "junit":
        from netaudit.report import junit

        return junit.to_junit(report)
    from netaudit.report import report_table

    return report_table.render_changes(report)


def run(args: argparse.Namespace, config: Config, fmt: str, env: Environment) -> ExitStatus:
    from netaudit.audit import gaps
    from netaudit.audit import run as audit_run
    from netaudit.audit import sinks as sink_module

    started = time.monotonic()
    now = datetime.now(UTC)
    scan = resolve(args, config)
    intended = options.intended_subnets(args.intended_subnet, config)
    sinks = sink_module.Sinks.from_config(args, config)  # checked before anything is sent
    signatures = options.load_signatures(args, config)
    inventories = load_inventories(args.inventory, env)
    request = audit_run.Request(
        config=config,
        scan=scan,
        intended=intended,
        signatures=signatures,
        inventories=tuple(inventories),
        is_dry_run=args.dry_run,
        environ=dict(env.environ),
        warn=env.warn,
    )
    report, hosts = audit_run.run(request, started, now)
    if sinks.problems:
        report = replace(report, notes=(*report.notes, *sinks.problems))
    report, state = sinks.compare_baseline(report)
    status = gaps.exit_status(report)
    for problem in sinks.write(report, status, hosts):
        env.warn(problem)
    write_report(report, fmt, env.stdout)
    env.stdout.flush()
    # Last: a run that could not write its outputs must not make its findings "unchanged".
    sinks.save_baseline(report, state)
    return status
