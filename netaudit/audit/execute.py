"""Carry out a scan plan: the half-open scan (or the connect fallback), canaries for silent
paths, then read-only handshakes on what answered. Returns endpoints with every attempt.

A stop event (set on Ctrl-C) stops sending at once; what was learned is kept, the rest is
"not-tested: interrupted".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netaudit.audit.plan import Plan, PlannedProbe
from netaudit.models import Attempt, Endpoint, Method, PortState, with_attempts
from netaudit.scan import handshake
from netaudit.scan.probe_types import ProbeOutcome, ProbeSpec, ScanLimits

Engine = Callable[[Iterable[ProbeSpec], ScanLimits, threading.Event | None], Iterator[ProbeOutcome]]
_HANDSHAKE_WORKERS = 8


@dataclass(frozen=True, slots=True)
class Execution:
    endpoints: tuple[Endpoint, ...]
    probes_sent: int
    is_interrupted: bool


# Destination unreachable codes that say the host (or its network) is not there, rather
# than that a filter refused the port: RFC 792 (3/0 net, 3/1 host, 3/6 and 3/7 unknown) and
# RFC 4443 (1/0 no route, 1/3 address unreachable: the neighbour did not answer). They come
# from a router or from our own kernel when ARP or neighbour discovery fails.
_HOST_DOWN_REASONS = frozenset({"icmp 3/0", "icmp 3/1", "icmp 3/6", "icmp 3/7", "icmp6 1/0", "icmp6 1/3"})
# connect(): the kernel folds host-unreachable (and, for IPv4, admin-prohibited) into
# EHOSTUNREACH; "host down" is only believed when nothing else on that path answered.
_CONNECT_HOST_DOWN = frozenset({"unreachable (EHOSTUNREACH)", "unreachable (ENETUNREACH)"})
HOST_DOWN_PREFIX = "host unreachable"


def is_host_down(reason: str) -> bool:
    return reason in _HOST_DOWN_REASONS or reason in _CONNECT_HOST_DOWN


def _is_answer(outcome: ProbeOutcome) -> bool:
    """An answer from the target's side proves the path works: a SYN-ACK, a RST, a
    port-unreachable or admin-prohibited ICMP error ("icmp 3/13", "icmp6 1/4"). Silence does
    not, and neither does host-unreachable: the host was not there to answer."""
    if outcome.state in (PortState.OPEN, PortState.CLOSED):
        return True
    return outcome.reason.startswith(("icmp", "unreachable")) and not is_host_down(outcome.reason)


def _run_engine(
    engine: Engine, specs: list[ProbeSpec], limits: ScanLimits, stop: threading.Event
) -> dict[ProbeSpec, ProbeOutcome]:
    results: dict[ProbeSpec, ProbeOutcome] = {}
    if not specs:
        return results
    for outcome in engine(specs, limits, stop):
        results[outcome.spec] = outcome
    return results


def _confirm(name: str, address: str, port: int, source: str, timeout_s: float) -> handshake.HandshakeResult:
    if name == "tcpstore-ping":
        return handshake.tcpstore_ping(address, port, source=source, timeout_s=timeout_s)
    if name == "http-get-root":
        return handshake.http_get_root(address, port, source=source, timeout_s=timeout_s)
    from netaudit.scan import exchange  # a signature's declared exchange, by its name

    if exchange.is_exchange_name(name):
        return exchange.confirm(name, address, port, source=source, timeout_s=timeout_s)
    return handshake.HandshakeResult(False, f"unknown handshake {name!r}")


def execute(
    plan: Plan,
    limits: ScanLimits,
    engines: dict[Method, Engine],
    stop: threading.Event,
    handshake_timeout_s: float,
    vantage: str = "",
) -> Execution:
    by_method: dict[Method, list[ProbeSpec]] = {Method.SYN: [], Method.CONNECT: []}
    for probe in plan.probes:
        if probe.method in by_method:
            by_method[probe.method].append(probe.spec)
    outcomes: dict[ProbeSpec, ProbeOutcome] = {}
    for method, specs in by_method.items():
        if not stop.is_set():
            outcomes.update(_run_engine(engines[method], specs, limits, stop))
    verified = {(spec.source, spec.address) for spec, outcome in outcomes.items() if _is_answer(outcome)}
    # Canaries: a path where something timed out and nothing answered gets one more probe to
    # a port that should answer (a non-PyTorch listener, else a closed port), so "filtered"
    # means "a filter", not "this source's packets go nowhere".
    silent = {
        (spec.source, spec.address)
        for spec, outcome in outcomes.items()
        if outcome.state is PortState.FILTERED
    } - verified
    canary_specs = [
        ProbeSpec(source, address, plan.canary_ports[(source, address)])
        for source, address in sorted(silent)
        if (source, address) in plan.canary_ports
    ]
    canary_outcomes: dict[ProbeSpec, ProbeOutcome] = {}
    if canary_specs and not stop.is_set():
        canary_outcomes = _run_engine(engines[Method.SYN], canary_specs, limits, stop)
    verified |= {
        (spec.source, spec.address) for spec, outcome in canary_outcomes.items() if _is_answer(outcome)
    }
    sent = sum(outcome.syns_sent for outcome in (*outcomes.values(), *canary_outcomes.values()))
    outcomes = {spec: _host_down_as_untested(outcome, verified) for spec, outcome in outcomes.items()}

    confirmations = _handshakes(plan, outcomes, handshake_timeout_s, stop)
    attempts: dict[int, list[Attempt]] = {}
    for probe in plan.probes:
        attempts.setdefault(probe.endpoint, []).append(
            _attempt(probe, outcomes.get(probe.spec), plan, verified, confirmations, stop, vantage)
        )
    for index, reason in plan.untestable.items():
        attempts[index] = [untestable_attempt(reason, vantage)]
    endpoints = tuple(
        with_attempts(endpoint, tuple(attempts.get(index, ())))
        for index, endpoint in enumerate(plan.endpoints)
    )
    return Execution(endpoints, sent, stop.is_set())


def untestable_attempt(reason: str, vantage: str) -> Attempt:
    """The attempt that was never made: no source of the endpoint's family."""
    return Attempt("", PortState.NOT_TESTED, Method.NONE, f"not tested: {reason}", None, False, False,
                   vantage=vantage)  # fmt: skip


def _host_down_as_untested(outcome: ProbeOutcome, verified: set[tuple[str, str]]) -> ProbeOutcome:
    """A host-unreachable answer says nothing about a filter: the port was not tested. On a
    path where something else answered, the same ICMP code is a filter's (connect() cannot
    tell them apart), and stays filtered."""
    spec = outcome.spec
    if not is_host_down(outcome.reason) or (spec.source, spec.address) in verified:
        return outcome
    return ProbeOutcome(spec, PortState.NOT_TESTED, f"{HOST_DOWN_PREFIX} ({outcome.reason})", outcome.rtt_s,
                        outcome.syns_sent)  # fmt: skip


def _handshakes(
    plan: Plan,
    outcomes: dict[ProbeSpec, ProbeOutcome],
    timeout_s: float,
    stop: threading.Event,
) -> dict[ProbeSpec, handshake.HandshakeResult]:
    """One handshake per open endpoint that may have one, from the first source that reached
    it, preferring a source outside the intended subnets and a path that leaves the host."""
    chosen: list[tuple[ProbeSpec, str]] = []
    specs_of: dict[int, list[ProbeSpec]] = {}
    for probe in plan.probes:
        if probe.endpoint in plan.handshakes:
            specs_of.setdefault(probe.endpoint, []).append(probe.spec)
    for index, name in sorted(plan.handshakes.items()):
        candidates = [
            spec
            for spec in specs_of.get(index, ())
            if (outcome := outcomes.get(spec)) is not None and outcome.state is PortState.OPEN
        ]
        if not candidates:
            continue
        candidates.sort(key=lambda spec: (spec.address in plan.local_addresses, spec.source))
        chosen.append((candidates[0], name))
    if not chosen or stop.is_set():
        return {}
    with ThreadPoolExecutor(max_workers=min(_HANDSHAKE_WORKERS, len(chosen))) as pool:
        futures = {
            spec: pool.submit(_confirm, name, spec.address, spec.port, spec.source, timeout_s)
            for spec, name in chosen
        }
        return {spec: future.result() for spec, future in futures.items()}


def _is_loopback(address: str) -> bool:
    # Addresses here are canonical text (from ipaddress or inet_ntop): no parsing needed.
    return address.startswith("127.") or address == "::1"


def _attempt(
    probe: PlannedProbe,
    outcome: ProbeOutcome | None,
    plan: Plan,
    verified: set[tuple[str, str]],
    confirmations: dict[ProbeSpec, handshake.HandshakeResult],
    stop: threading.Event,
    vantage: str,
) -> Attempt:
    spec = probe.spec
    is_local = spec.address in plan.local_addresses or _is_loopback(spec.address)
    if probe.method is Method.NONE:
        return Attempt(
            spec.source,
            PortState.NOT_TESTED,
            Method.NONE,
            probe.reason or "not tested",
            None,
            is_local,
            False,
            vantage=vantage,
        )
    if outcome is None:
        reason = "interrupted" if stop.is_set() else "no outcome"
        return Attempt(
            spec.source, PortState.NOT_TESTED, probe.method, reason, None, is_local, False, vantage=vantage
        )
    confirmation = confirmations.get(spec)
    return Attempt(
        source=spec.source,
        state=outcome.state,
        method=probe.method if outcome.syns_sent else Method.NONE,
        reason=outcome.reason,
        rtt_ms=None if outcome.rtt_s is None else round(outcome.rtt_s * 1000, 3),
        is_local_path=is_local,
        is_path_verified=(spec.source, spec.address) in verified,
        confirmed=None if confirmation is None else confirmation.confirmed,
        detail=None if confirmation is None else confirmation.detail,
        vantage=vantage,
        authentication=None if confirmation is None else confirmation.authentication,
        version=None if confirmation is None else confirmation.version,
    )
