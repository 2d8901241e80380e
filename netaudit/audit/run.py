"""One `netaudit scan`, from gathered inventories to a report: gather (fan-out), admit
(untrusted inventories), scope, plan, execute, evaluate, merge the peers' reports, and name
every gap. Returns data; the command renders it and exits (netaudit.cmd_scan)."""

from __future__ import annotations

import gc
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import FrameType

from netaudit import __version__, advisories, netlink
from netaudit.audit import execute, gaps, intake, local, plan, policy, scope, targets, vantage
from netaudit.audit.settings import ScanSettings
from netaudit.config import Config
from netaudit.models import (
    Attempt,
    Endpoint,
    Finding,
    Gap,
    GapKind,
    Inventory,
    Method,
    PortState,
    Report,
    with_attempts,
)
from netaudit.scan import privilege
from netaudit.scan.probe_types import ScanLimits
from netaudit.signatures import Signature


@dataclass(frozen=True, slots=True)
class Request:
    """A scan as the command resolved it (config and flags).

    Attributes:
        environ: the environment the fan-out's srun reads its allocation from.
        warn: where progress and warnings go (stderr).
    """

    config: Config
    scan: ScanSettings
    intended: tuple[policy.Network, ...]
    signatures: tuple[Signature, ...]
    inventories: tuple[Inventory, ...]
    is_dry_run: bool
    environ: dict[str, str]
    warn: Callable[[str], None]


def run(request: Request, started: float, now: datetime) -> tuple[Report, list[str]]:
    """The report, and the hosts it covered (inventories read or gathered, hosts scanned):
    the ones that get a verdict. A node whose fan-out failed gets none, so the verdict it
    had keeps its exposures until it ages out."""
    inventories = list(request.inventories)
    fanout_gaps: list[Gap] = []
    notes: list[str] = []
    fanout = request.config.fanout
    if fanout.method and request.is_dry_run:
        notes.append(
            f"fan-out ({fanout.method}) not run in a dry run: the plan covers only --inventory files"
        )
    elif fanout.method:
        from netaudit.fanout import gather

        gathered, failures = gather.inventories(fanout, request.environ)
        inventories += gathered
        fanout_gaps = [
            Gap(f.node, GapKind.INTERNAL if f.is_internal_error else GapKind.FANOUT, f.reason)
            for f in failures
        ]
    if not request.scan.targets and not inventories and not fanout.method:
        report = local.audit(request.config, request.scan, request.intended, request.signatures, started, now)
        return report, hosts_of(report, inventories)
    report = _scan(request, inventories, now, notes)
    report = replace(report, gaps=(*report.gaps, *fanout_gaps))
    if fanout.scan_from and not request.is_dry_run:
        from netaudit.audit import peers

        report = peers.merge(
            report, peers.scan(request, inventories), request.signatures, request.config, now
        )
    if not request.is_dry_run and not report.is_interrupted:
        report = _with_scan_gaps(report, request.scan)
    report = replace(
        report,
        failed_hosts=tuple(sorted(set(report.failed_hosts) | gaps.failed_hosts(report.gaps))),
        duration_s=round(time.monotonic() - started, 3),
    )
    return report, hosts_of(report, inventories)


def _with_scan_gaps(report: Report, scan: ScanSettings) -> Report:
    """Gaps of the endpoints, computed once every vantage (this host and the peers) is in."""
    sources = {source.address: source for source in report.sources}
    found = gaps.scan_gaps(report.endpoints, sources, scan.trust_scope, scan.max_inventory_age_s)
    return replace(report, gaps=(*report.gaps, *found))


def _local_addresses() -> frozenset[str]:
    return frozenset(item.address for item in netlink.interface_addresses())


def _scan(request: Request, inventories: list[Inventory], now: datetime, notes: list[str]) -> Report:
    scan = request.scan
    admitted = intake.admit(inventories, request.signatures)
    hosts = {inventory.host for inventory in admitted.inventories}
    named = targets.parse(scan.targets, scan.max_targets, hosts)
    expand = not admitted.inventories and not request.config.fanout.method
    the_scope = scope.derive(admitted.inventories, named, scan.max_targets, expand_networks=expand)
    sources = vantage.resolve(scan.sources, request.intended)
    is_raw = privilege.raw_available()  # without importing the engine: a dry run needs none of it
    rules = plan.Rules(
        intended=request.intended,
        default_ports=scan.ports,
        max_inventory_age_s=scan.max_inventory_age_s,
        is_raw=is_raw,
        allow_connect=scan.allow_connect,
        max_endpoints=scan.max_endpoints,
        trust_scope=scan.trust_scope,
    )
    with long_lived_objects():
        # Ages are measured when planning, after the fan-out: inventories it gathered were
        # collected after `now`, and must not look as if they came from the future.
        planned_at = max(now, datetime.now(UTC))
        the_plan = plan.build(
            admitted.inventories,
            the_scope,
            sources,
            request.signatures,
            rules,
            planned_at,
            _local_addresses(),
        )
    host = socket.gethostname()
    found_gaps = [
        Gap(t.host, GapKind.UNRESOLVED, t.error or "does not resolve") for t in the_scope.unresolved
    ]
    found_gaps += [
        Gap(
            inv.host,
            GapKind.INVENTORY,
            f"its inventory is incomplete ({len(inv.gaps)} gaps, first: {inv.gaps[0]})",
        )
        for inv in admitted.inventories
        if inv.gaps
    ]
    findings: tuple[Finding, ...] = ()
    if request.is_dry_run:
        mode = "dry-run"
        with long_lived_objects():
            endpoints = _dry_run(the_plan, host)
        probes_sent, interrupted = 0, False
    else:
        from netaudit.scan import connectscan, synscan

        mode = "syn" if is_raw else "connect"
        if not is_raw:
            request.warn("no raw-socket privilege (CAP_NET_RAW): connect() mode, unsafe targets not tested")
        stop = threading.Event()
        engines: dict[Method, execute.Engine] = {
            Method.SYN: synscan.syn_scan,
            Method.CONNECT: connectscan.connect_scan,
        }
        limits = scan_limits(scan)
        with _stop_on_sigint(stop):
            execution = execute.execute(the_plan, limits, engines, stop, scan.timeout_s * 2, vantage=host)
        endpoints = execution.endpoints
        probes_sent, interrupted = execution.probes_sent, execution.is_interrupted
        rules_policy = policy.Policy(
            scan.trust_scope, request.config.exceptions, now.date(), host, advisories.shipped()
        )
        by_address = {source.address: source for source in sources}
        findings = policy.evaluate(
            endpoints, by_address, request.signatures, rules_policy, policy.job_nodes(admitted.inventories)
        )
        notes += policy.expired_exceptions(rules_policy)
    if not sources:
        found_gaps.append(
            Gap(
                None,
                GapKind.NO_SOURCE,
                "this host has no source address that is neither loopback nor link-local",
            )
        )
    notes += [*admitted.notes, *the_plan.notes]
    if not the_plan.endpoints:
        notes.append("nothing to scan: no PyTorch listener and no target address in scope")
    if sources and all(s.is_inside for s in sources) and scan.trust_scope != "job":
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
        intended_subnets=tuple(str(net) for net in request.intended),
        trust_scope=scan.trust_scope,
        fail_on=scan.fail_on,
        findings=findings,
        endpoints=endpoints,
        gaps=tuple(found_gaps),
        notes=tuple(notes),
        duration_s=0.0,
        probes_sent=probes_sent,
        is_interrupted=interrupted,
        scope=the_scope.summary,
    )


def scan_limits(scan: ScanSettings) -> ScanLimits:
    """The engine's limits from the settings (bounds were checked where they were read)."""
    return ScanLimits(
        rate_per_s=scan.rate_per_s,
        in_flight_per_host=scan.in_flight_per_host,
        timeout_s=scan.timeout_s,
        min_timeout_s=min(0.1, scan.timeout_s),
        retries=scan.retries,
    )


def _dry_run(the_plan: plan.Plan, vantage_host: str) -> tuple[Endpoint, ...]:
    """The plan as endpoints whose attempts say what would be sent and how.

    Attempts are frozen values and a plan's are a handful (source, method, reason, local
    path or not), so equal ones are one object: a cluster's plan has 170,000 of them."""
    attempts: dict[int, list[Attempt]] = {}
    made: dict[tuple[str, Method, str | None, bool], Attempt] = {}
    local_addresses = the_plan.local_addresses
    for probe in the_plan.probes:
        spec = probe.spec
        key = (spec.source, probe.method, probe.reason, spec.address in local_addresses)
        attempt = made.get(key)
        if attempt is None:
            reason = probe.reason or f"dry run: would send {probe.method.value}"
            attempt = made[key] = Attempt(spec.source, PortState.NOT_TESTED, probe.method, reason, None,
                                          key[3], False)  # fmt: skip
        listed = attempts.get(probe.endpoint)
        if listed is None:
            attempts[probe.endpoint] = [attempt]
        else:
            listed.append(attempt)
    for index, reason in the_plan.untestable.items():
        attempts[index] = [execute.untestable_attempt(reason, vantage_host)]
    none: tuple[Attempt, ...] = ()
    return tuple(
        with_attempts(endpoint, tuple(listed) if (listed := attempts.get(index)) else none)
        for index, endpoint in enumerate(the_plan.endpoints)
    )


@contextmanager
def long_lived_objects() -> Iterator[None]:
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


def hosts_of(report: Report, inventories: Sequence[Inventory]) -> list[str]:
    return sorted({inv.host for inv in inventories} | {e.host for e in report.endpoints})
