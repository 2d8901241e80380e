"""The scanner's nouns: what to probe (ProbeSpec), how hard (ScanLimits), what came back
(ProbeOutcome). Shared by the half-open scanner (synscan) and the connect fallback
(connectscan), so that callers can switch engines without touching their data.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from netaudit.models import Family, PortState

# DESIGN.md §5 "Bounded, with defaults safe on a production cluster".
DEFAULT_RATE_PER_S = 2000.0
DEFAULT_IN_FLIGHT_PER_HOST = 64
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRIES = 1
# nmap -T4 uses --min-rtt-timeout 100 ms; research/perf-baselines.md §B measured 0.1 s + 1
# resend accurate on every run over veth (RTT about 50 us).
DEFAULT_MIN_TIMEOUT_S = 0.1
# Once a host has answered, its timeout is this many times the largest RTT it showed
# (perf-baselines.md "Pitfalls" 1: max(min_floor, k x observed RTT)).
RTT_TIMEOUT_FACTOR = 4.0
# The adaptive timeout never drops below this, whatever min_timeout_s says: below 10 ms the
# scheduler's own latency (one select() round with a batch of sends) becomes part of the "RTT".
ABSOLUTE_MIN_TIMEOUT_S = 0.010
# connect() scans hold one socket per probe in flight (perf-baselines.md §B: 4,096 needs
# RLIMIT_NOFILE above 4,096; the soft limit is often 1,024). The engine lowers this further to
# fit the descriptors actually free.
DEFAULT_IN_FLIGHT_TOTAL = 4096


def address_family(address: str) -> Family:
    """The family of an IP literal; ValueError for anything else (a ``%scope`` included).

    inet_pton rather than ipaddress: a scan plan holds tens of thousands of addresses and
    ipaddress parses in Python, about 10 us each, which was a third of a 16k-probe scan.
    """
    try:
        socket.inet_pton(socket.AF_INET, address)
    except OSError:
        pass
    else:
        return Family.IPV4
    try:
        socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        raise ValueError(f"not an IP address: {address!r}") from None
    return Family.IPV6


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One probe: from ``source`` (a local address) to ``address``:``port``.

    Both addresses are IP literals (no ``%scope``: link-local addresses are never targets,
    DESIGN.md §5); the family comes from ``address``. A source of the other family makes the
    probe NOT_TESTED rather than an error.
    """

    source: str
    address: str
    port: int

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        address_family(self.address)
        address_family(self.source)

    @property
    def family(self) -> Family:
        return address_family(self.address)


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """What one probe learned.

    Attributes:
        reason: why this state, short and stable: ``syn-ack``, ``rst``, ``connected``,
            ``refused``, ``timeout``, ``icmp 3/13``, ``icmp6 1/1``, ``no route from <source>``,
            ``interrupted``, ...
        rtt_s: from the send of the attempt that was answered to its answer; None when
            nothing answered (timeout, not tested).
        syns_sent: SYNs (or connect() calls) this probe put on the wire, retries included;
            0 when it was never sent.
    """

    spec: ProbeSpec
    state: PortState
    reason: str
    rtt_s: float | None
    syns_sent: int


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """How hard a scan may push (DESIGN.md §5). Every field can be overridden.

    Attributes:
        rate_per_s: probes (first sends and retries alike) per second, all targets together.
        in_flight_per_host: probes sent to one target address and not yet finished.
        timeout_s: how long an attempt waits for an answer before a host has answered
            anything; the upper bound of the adaptive timeout afterwards.
        min_timeout_s: the lower bound of the adaptive timeout (never below 10 ms).
        retries: how many times an unanswered probe is sent again.
        in_flight_total: probes in flight over all targets (connect scan only: one socket
            each; the engine also keeps it under RLIMIT_NOFILE).
        is_adaptive: shorten the timeout to the measured round trip once a target answered.
    """

    rate_per_s: float = DEFAULT_RATE_PER_S
    in_flight_per_host: int = DEFAULT_IN_FLIGHT_PER_HOST
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_timeout_s: float = DEFAULT_MIN_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    in_flight_total: int = DEFAULT_IN_FLIGHT_TOTAL
    is_adaptive: bool = True

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        if self.in_flight_per_host < 1 or self.in_flight_total < 1:
            raise ValueError("in-flight limits must be at least 1")
        if self.timeout_s <= 0 or self.min_timeout_s < 0:
            raise ValueError("timeouts must be positive")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")

    @property
    def floor_timeout_s(self) -> float:
        """The shortest timeout the adaptive rule may choose."""
        return min(self.timeout_s, max(self.min_timeout_s, ABSOLUTE_MIN_TIMEOUT_S))

    def timeout_for(self, max_rtt_s: float | None) -> float:
        """The timeout for a host whose largest observed RTT is ``max_rtt_s`` (None: none)."""
        if max_rtt_s is None or not self.is_adaptive:
            return self.timeout_s
        return min(self.timeout_s, max(self.floor_timeout_s, RTT_TIMEOUT_FACTOR * max_rtt_s))
