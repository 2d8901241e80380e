"""`netaudit scan`: prove from this host's source addresses which PyTorch distributed ports
answer from outside the intended subnets, confirm what answers read-only, report findings.

With no targets and no inventory it audits this host alone without sending to any
non-loopback address, and says that proof needs a peer.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

from netaudit import (
    __version__,
    bindscope,
    exposure,
    inventory_json,
    jsonout,
    netlink,
    options,
    plan,
    policy,
    scanrun,
    targets,
    vantage,
)
from netaudit.config import Config, ScanSettings
from netaudit.environment import Environment
from netaudit.models import (
    Attempt,
    BindScope,
    Confidence,
    Endpoint,
    Family,
    Finding,
    Inventory,
    Method,
    PortState,
    Report,
    Severity,
    with_attempts,
)
from netaudit.scan import connectscan, handshake, synscan
from netaudit.scan.probe_types import ScanLimits
from netaudit.signatures import Signature
from netaudit.status import ExitStatus
from netaudit.typedread import InputError

if TYPE_CHECKING:
    from netaudit.fanout.results import NodeFailure

PEER_NOTE = (
    "this host was audited over loopback only: a bind address is a hint, and proving what is "
    "reachable needs a peer. Save `netaudit probe --format json` here and run `netaudit scan "
    "--inventory FILE TARGETS` from a host outside the intended subnets."
)
_INVENTORY_LIMIT = 2 << 30  # a bundle of 4,096 nodes is ~0.5 GB; past 2 GiB, split the scan


@dataclass(frozen=True, slots=True)
class Settings:
    """Config and flags resolved: flags win."""

    scan: ScanSettings
    intended: tuple[exposure.Network, ...]
    targets: tuple[str, ...]
    sources: tuple[str, ...]
    limits: ScanLimits


def _ports(texts: Sequence[str]) -> tuple[int, ...]:
    ports: list[int] = []
    for text in texts:
        low, sep, high = text.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise InputError(f"--port {text}: expected PORT or LOW-HIGH") from None
        if not 1 <= first <= last <= 65535:
            raise InputError(f"--port {text}: expected ports in 1..65535")
        ports.extend(range(first, last + 1))
    return tuple(ports)


def settings(args: argparse.Namespace, config: Config) -> Settings:
    base = config.scan
    extra = _ports(args.port) + tuple(port for low, high in base.port_ranges for port in range(low, high + 1))
    scan = replace(
        base,
        ports=tuple(dict.fromkeys(base.ports + extra)),
        rate_per_s=args.rate if args.rate is not None else base.rate_per_s,
        in_flight_per_host=args.in_flight if args.in_flight is not None else base.in_flight_per_host,
        timeout_s=args.timeout if args.timeout is not None else base.timeout_s,
        retries=args.retries if args.retries is not None else base.retries,
        max_inventory_age_s=(
            args.max_inventory_age if args.max_inventory_age is not None else base.max_inventory_age_s
        ),
        allow_connect=args.allow_connect or base.allow_connect,
        fail_on=Severity(args.fail_on) if args.fail_on else base.fail_on,
        trust_scope=args.trust_scope or base.trust_scope,
    )
    try:
        limits = ScanLimits(
            rate_per_s=scan.rate_per_s,
            in_flight_per_host=scan.in_flight_per_host,
            timeout_s=scan.timeout_s,
            min_timeout_s=min(0.1, scan.timeout_s),
            retries=scan.retries,
        )
    except ValueError as error:
        raise InputError(f"scan limits: {error}") from None
    return Settings(
        scan=scan,
        intended=options.intended_subnets(args.intended_subnet, config),
        targets=tuple(args.targets) or scan.targets,
        sources=tuple(args.source) or scan.sources,
        limits=limits,
    )


def load_inventories(paths: Sequence[str], env: Environment) -> list[Inventory]:
    """Every --inventory file; '-' reads stdin. A malformed one stops the run (exit 2)."""
    loaded = []
    for path in paths:
        try:
            if path == "-":
                text = env.stdin.read(_INVENTORY_LIMIT + 1)
                name = "<stdin>"
            else:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read(_INVENTORY_LIMIT + 1)
                name = path
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
        if len(text) > _INVENTORY_LIMIT:
            raise inventory_json.InventoryError(f"{name}: larger than {_INVENTORY_LIMIT >> 20} MiB")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise inventory_json.InventoryError(f"{name}: not JSON: {error}") from None
        # A list is a bundle: what the central run of a fan-out sends its scanning peers.
        documents = data if isinstance(data, list) else [data]
        for index, document in enumerate(documents):
            label = f"{name}[{index}]" if isinstance(data, list) else name
            loaded.append(inventory_json.from_json(document, label))
    return loaded


def _local_addresses() -> frozenset[str]:
    return frozenset(item.address for item in netlink.interface_addresses())


# The local audit --------------------------------------------------------------------------


def _loopback_for(scope: BindScope, family: Family, address: str) -> str | None:
    if scope in (BindScope.DUAL_STACK, BindScope.WILDCARD_V4):
        return "127.0.0.1"
    if scope is BindScope.WILDCARD_V6:
        return "::1"
    if scope is BindScope.LOOPBACK:
        return address
    return None


def _local_attempt(endpoint: Endpoint, timeout_s: float) -> tuple[Attempt, ...]:
    listener = endpoint.listener
    found = endpoint.classification
    if listener is None or found is None:
        return ()
    loopback = _loopback_for(
        bindscope.scope_of(listener.family, listener.address, listener.v6only, False),
        listener.family,
        listener.address,
    )
    if (
        loopback is None
        or found.handshake is None
        or found.is_do_not_touch
        or found.confidence is not Confidence.HIGH
    ):
        return ()
    if found.handshake == "tcpstore-ping":
        result = handshake.tcpstore_ping(loopback, listener.port, timeout_s=timeout_s)
    else:
        result = handshake.http_get_root(loopback, listener.port, timeout_s=timeout_s)
    state = PortState.CLOSED if result.detail.startswith("connect failed") else PortState.OPEN
    return (
        Attempt(
            loopback,
            state,
            Method.HANDSHAKE,
            "loopback handshake",
            None,
            True,
            True,
            result.confirmed,
            result.detail,
        ),
    )


def _local_audit(
    args: argparse.Namespace,
    config: Config,
    found_settings: Settings,
    signatures: Sequence[Signature],
    started: float,
    now: datetime,
) -> Report:
    from netaudit import inventory

    node = inventory.collect(signatures, found_settings.intended)
    own = next((ns.inode for ns in node.namespaces if ns.is_probe_namespace), None)
    endpoints = []
    for listener in node.listeners:
        if listener.classification is None:
            continue
        endpoint = Endpoint(
            host=node.host,
            address=listener.address,
            family=listener.family,
            port=listener.port,
            listener=listener,
            inventory_age_s=0.0,
            is_outside_address=bool(listener.exposure and listener.exposure.outside_intended),
        )
        if listener.netns == own:
            endpoint = replace(endpoint, attempts=_local_attempt(endpoint, found_settings.scan.timeout_s))
        endpoints.append(endpoint)
    rules = policy.Policy(found_settings.scan.trust_scope, config.exceptions, now.date(), node.host)
    findings = policy.static_findings(endpoints, signatures, rules)
    return Report(
        generated_at=now,
        netaudit_version=__version__,
        vantage_host=node.host,
        mode="local",
        sources=(),
        intended_subnets=node.intended_subnets,
        trust_scope=found_settings.scan.trust_scope,
        fail_on=found_settings.scan.fail_on,
        findings=findings,
        endpoints=tuple(endpoints),
        incomplete=tuple(f"{node.host}: {gap}" for gap in node.gaps),
        notes=(PEER_NOTE, *policy.expired_exceptions(rules)),
        duration_s=round(time.monotonic() - started, 3),
        probes_sent=0,
    )


# The scan from peers ----------------------------------------------------------------------


def _silent_hosts(endpoints: Sequence[Endpoint], max_age_s: float) -> list[str]:
    """Names of hosts no source got any answer from (see _silent_message)."""
    # With a fresh inventory the host is known to be up, so its silence is a filter, not a
    # gap; without one it may be down.
    by_host: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_host.setdefault(endpoint.host, []).append(endpoint)
    silent = []
    for host, members in sorted(by_host.items()):
        tried = [a for e in members for a in e.attempts if a.method in (Method.SYN, Method.CONNECT)]
        if not tried or any(a.is_path_verified for a in tried):
            continue
        if any(plan.is_fresh(e, max_age_s) for e in members):
            continue
        silent.append(host)
    return silent


def _silent_message(host: str) -> str:
    return f"{host}: no answer from any source (down, unreachable, or dropping everything)"


def _dry_run(the_plan: plan.Plan) -> tuple[Endpoint, ...]:
    """The plan as endpoints whose attempts say what would be sent and how."""
    attempts: dict[int, list[Attempt]] = {}
    for probe in the_plan.probes:
        is_local = probe.spec.address in the_plan.local_addresses
        reason = probe.reason or f"dry run: would send {probe.method.value}"
        attempts.setdefault(probe.endpoint, []).append(
            Attempt(probe.spec.source, PortState.NOT_TESTED, probe.method, reason, None, is_local, False)
        )
    return tuple(
        with_attempts(endpoint, tuple(attempts.get(index, ())))
        for index, endpoint in enumerate(the_plan.endpoints)
    )


def _scan(
    args: argparse.Namespace,
    config: Config,
    found: Settings,
    signatures: Sequence[Signature],
    inventories: list[Inventory],
    started: float,
    now: datetime,
    env: Environment,
) -> Report:
    if inventories and not found.targets:
        raise InputError(
            "inventories need a target scope: name the networks or hosts to scan (e.g. "
            "`netaudit scan --inventory node1.json 198.18.0.0/24`) or set scan.targets in the config"
        )
    target_set = targets.parse(found.targets, found.scan.max_targets)
    sources = vantage.resolve(found.sources, found.intended)
    is_raw = synscan.raw_available()
    rules = plan.Rules(
        intended=found.intended,
        default_ports=found.scan.ports,
        max_inventory_age_s=found.scan.max_inventory_age_s,
        is_raw=is_raw,
        allow_connect=found.scan.allow_connect,
    )
    with _long_lived_objects():
        the_plan = plan.build(inventories, target_set, sources, signatures, rules, now, _local_addresses())
    host = socket.gethostname()
    mode = "dry-run" if args.dry_run else ("syn" if is_raw else "connect")
    findings: tuple[Finding, ...] = ()
    failed_hosts = [target.host for target in target_set.unresolved]
    if args.dry_run:
        endpoints = _dry_run(the_plan)
        probes_sent, interrupted = 0, False
        incomplete = list(the_plan.incomplete)
    else:
        if not is_raw:
            env.warn("no raw-socket privilege (CAP_NET_RAW): connect() mode, unsafe targets not tested")
        stop = threading.Event()
        engines: dict[Method, scanrun.Engine] = {
            Method.SYN: synscan.syn_scan,
            Method.CONNECT: connectscan.connect_scan,
        }
        with _stop_on_sigint(stop):
            execution = scanrun.execute(
                the_plan, found.limits, engines, stop, found.scan.timeout_s * 2, vantage=host
            )
        endpoints = execution.endpoints
        probes_sent, interrupted = execution.probes_sent, execution.is_interrupted
        rules_policy = policy.Policy(found.scan.trust_scope, config.exceptions, now.date(), host)
        by_address = {source.address: source for source in sources}
        findings = policy.evaluate(
            endpoints, by_address, signatures, rules_policy, policy.job_nodes(inventories)
        )
        incomplete = list(the_plan.incomplete)
        not_tested = [a for e in endpoints for a in e.attempts if a.state is PortState.NOT_TESTED]
        if not_tested:
            reasons = sorted({a.reason for a in not_tested})
            incomplete.append(f"{len(not_tested)} attempts not tested: {'; '.join(reasons[:3])}")
        silent = _silent_hosts(endpoints, found.scan.max_inventory_age_s)
        incomplete += [_silent_message(name) for name in silent]
        failed_hosts += silent
    if not sources:
        incomplete.append("this host has no source address that is neither loopback nor link-local")
    notes = list(the_plan.notes)
    if not the_plan.endpoints:
        notes.append("nothing to scan: no PyTorch listener and no target address in scope")
    if sources and all(s.is_inside for s in sources):
        notes.append(
            "every source is inside the intended subnets: this run can prove exposure to "
            "outsiders only if run from outside (add --source, or run from a peer)"
        )
    return Report(
        generated_at=now,
        netaudit_version=__version__,
        vantage_host=host,
        mode=mode,
        sources=sources,
        intended_subnets=tuple(str(net) for net in found.intended),
        trust_scope=found.scan.trust_scope,
        fail_on=found.scan.fail_on,
        findings=findings,
        endpoints=endpoints,
        incomplete=tuple(incomplete),
        notes=tuple(notes),
        duration_s=round(time.monotonic() - started, 3),
        probes_sent=probes_sent,
        is_interrupted=interrupted,
        failed_hosts=tuple(sorted(set(failed_hosts))),
    )


@contextmanager
def _long_lived_objects() -> Iterator[None]:
    """Build objects that live until the end of the run without the cyclic collector: it
    would walk millions of them again and again for nothing (a fifth of a 4,096-node plan,
    bench/README.md), then freeze them out of every later collection."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.freeze()


class _stop_on_sigint:  # a context manager named like the function it reads as
    """Ctrl-C sets the stop event: sending stops at once and the report still comes out.
    A second Ctrl-C interrupts for real."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.previous: object = None

    def _handler(self, _signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)  # type: ignore[arg-type]


def exit_status(report: Report) -> ExitStatus:
    """With --baseline only news counts: a new failing finding (1), a new incomplete item (3).
    The metrics and verdicts still carry the whole state."""
    if report.mode == "dry-run":
        return ExitStatus.OK  # a plan was printed; nothing was inspected, nothing failed
    if report.is_interrupted:
        return ExitStatus.INTERRUPTED
    findings = report.findings
    incomplete: tuple[str, ...] = report.incomplete
    if report.changes is not None:
        findings = tuple(f for f in findings if f.baseline_state == "new")
        incomplete = report.changes.new_failures
    if policy.failing(findings, report.fail_on):
        return ExitStatus.FINDINGS
    if incomplete:
        return ExitStatus.INCOMPLETE
    return ExitStatus.OK


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
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
    started = time.monotonic()
    now = datetime.now(UTC)
    found = settings(args, config)
    from netaudit import scan_outputs

    sinks = scan_outputs.Sinks.from_config(args, config)  # checked before anything is sent
    signatures = options.load_signatures(args, config)
    with _long_lived_objects():
        inventories = load_inventories(args.inventory, env)
    failures: list[NodeFailure] = []
    if config.fanout.method and not args.dry_run:
        from netaudit.fanout import gather

        gathered, failures = gather.inventories(config.fanout, env.environ)
        inventories += gathered
    if not found.targets and not inventories and not failures:
        report = _local_audit(args, config, found, signatures, started, now)
    else:
        report = _scan(args, config, found, signatures, inventories, started, now, env)
    if failures:
        report = replace(
            report,
            incomplete=(*report.incomplete, *(failure.text for failure in failures)),
            failed_hosts=tuple(sorted({*report.failed_hosts, *(failure.node for failure in failures)})),
        )
    if config.fanout.scan_from and not args.dry_run:
        from netaudit import peers

        report = peers.merge(report, peers.scan(config, found, inventories))
    report = replace(report, duration_s=round(time.monotonic() - started, 3))
    report = sinks.apply_baseline(report)
    status = exit_status(report)
    sinks.write(
        report, status, hosts=sorted({inv.host for inv in inventories} | {e.host for e in report.endpoints})
    )
    text = render(report, fmt)
    env.stdout.write(text)
    env.stdout.flush()
    return status
