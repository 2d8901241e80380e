"""The connect() fallback: over loopback without privilege, and in namespaces (see _scanlab.py)
for filtering, rejects and a tight RLIMIT_NOFILE."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from netaudit.models import PortState
from netaudit.scan.connectscan import connect_scan, descriptor_budget
from netaudit.scan.probe_types import ProbeSpec, ScanLimits
from tests.integration import _scanlab as topo
from tests.integration._scanlab import (
    A4,
    A6,
    B4,
    B6,
    BULK_DROP,
    CLOSED,
    DROPPED,
    OPEN,
    REJECTED,
    ScanLab,
)
from tests.lab.netlab import Lab, module_lab_fixture  # noqa: F401


def _listener(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


@pytest.fixture
def loopback_ports() -> Iterator[dict[str, tuple[socket.socket, socket.socket]]]:
    """Per address: a listening socket and a bound, non-listening one (a closed port)."""
    found = {}
    for host in ("127.0.0.1", "::1"):
        listening = _listener(host)
        closed = socket.socket(listening.family, socket.SOCK_STREAM)
        closed.bind((host, 0))
        found[host] = (listening, closed)
    yield found
    for pair in found.values():
        for sock in pair:
            sock.close()


def test_loopback_open_and_closed_without_privilege(
    loopback_ports: dict[str, tuple[socket.socket, socket.socket]],
) -> None:
    specs = []
    for host, (listening, closed) in loopback_ports.items():
        specs.append(ProbeSpec(host, host, listening.getsockname()[1]))
        specs.append(ProbeSpec(host, host, closed.getsockname()[1]))
    spelled_otherwise = ProbeSpec("::1", "0:0:0:0:0:0:0:1", loopback_ports["::1"][0].getsockname()[1])
    outcomes = {o.spec: o for o in connect_scan([*specs, spelled_otherwise], ScanLimits(timeout_s=1.0))}
    assert len(outcomes) == 5
    assert outcomes[spelled_otherwise].state is PortState.OPEN  # probed once, reported twice
    for host, (listening, closed) in loopback_ports.items():
        opened = outcomes[ProbeSpec(host, host, listening.getsockname()[1])]
        refused = outcomes[ProbeSpec(host, host, closed.getsockname()[1])]
        assert (opened.state, opened.reason, opened.syns_sent) == (PortState.OPEN, "connected", 1)
        assert opened.rtt_s is not None
        assert (refused.state, refused.reason) == (PortState.CLOSED, "refused")
        # Unlike the SYN scan this completed a handshake: the listener has one to accept,
        # already reset by our SO_LINGER 0 close, and no byte was sent.
        listening.settimeout(1.0)
        conn, _ = listening.accept()
        with conn:
            conn.settimeout(1.0)
            with contextlib.suppress(ConnectionResetError):
                assert conn.recv(16) == b""


def test_stop_event_before_start_reports_everything_interrupted() -> None:
    stop = threading.Event()
    stop.set()
    specs = [ProbeSpec("127.0.0.1", "127.0.0.1", port) for port in (1, 2, 3)]
    outcomes = list(connect_scan(specs, ScanLimits(), stop))
    assert [(o.state, o.reason, o.syns_sent) for o in outcomes] == [
        (PortState.NOT_TESTED, "interrupted", 0)
    ] * 3


def test_descriptor_budget_stays_under_the_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = descriptor_budget(ScanLimits(in_flight_total=10**6))
    assert 1 <= budget < soft


@pytest.fixture(scope="module")
def net(module_lab: Lab) -> Iterator[ScanLab]:
    yield topo.build(module_lab)


@pytest.mark.requires_root
def test_states_in_namespaces(net: ScanLab) -> None:
    specs = [
        (src, dst, port)
        for src, dst in ((A4, B4), (A6, B6))
        for port in (OPEN[0], CLOSED[0], *DROPPED, *REJECTED)
    ]
    before = net.counters()
    outcomes, summary = net.run_scan(specs, engine="connect", timeout_s=0.3)
    found = {(o["source"], o["address"], o["port"]): o for o in outcomes}
    assert len(found) == len(specs) == len(outcomes)
    for src, dst in ((A4, B4), (A6, B6)):
        assert found[src, dst, OPEN[0]]["state"] == "open"
        assert found[src, dst, CLOSED[0]]["state"] == "closed"
        for port in (*DROPPED, *REJECTED):
            assert found[src, dst, port]["state"] == "filtered"
    # IPv4 admin-prohibited aborts the connect() at once; Linux keeps an IPv6 SYN_SENT socket
    # waiting on the same ICMPv6 error, so that one reads as a timeout.
    assert found[A4, B4, REJECTED[0]]["reason"] == "unreachable (EHOSTUNREACH)"
    seen = topo.delta(before, net.counters())
    for tag in "46":
        for port in DROPPED:
            assert seen[f"syn{tag}_{port}"] == 2  # default 1 retry, below the kernel's 1 s RTO
    # The open ports' handshakes completed (unlike the SYN scan); drain them for the next test.
    assert net.listeners.pending() == 2
    assert summary["scan_s"] < 1.5


@pytest.mark.requires_root
def test_tight_descriptor_limit_waves_instead_of_failing(net: ScanLab) -> None:
    # Given a process allowed 96 descriptors and 100 dropped ports on one host
    specs = [(A4, B4, port) for port in BULK_DROP[:100]]
    started = time.monotonic()
    outcomes, summary = net.run_scan(
        specs,
        engine="connect",
        ulimit_nofile=96,
        timeout_s=0.1,
        retries=0,
        in_flight_per_host=1000,
        rate_per_s=100000,
    )
    # Then no probe failed for lack of descriptors: they queued in waves of what fits
    assert Counter((o["state"], o["reason"]) for o in outcomes) == {("filtered", "timeout"): 100}
    # Fewer than 96 - 64 (reserve) sockets at once: at least 4 waves of 0.1 s.
    assert summary["scan_s"] >= 0.3
    assert time.monotonic() - started < 10


@pytest.mark.requires_root
def test_connect_stop_event(net: ScanLab) -> None:
    specs = [(A4, B4, port) for port in BULK_DROP[:300]]
    outcomes, summary = net.run_scan(specs, engine="connect", stop_after_s=0.2, rate_per_s=500, timeout_s=5.0)
    assert summary["scan_s"] < 1.0
    assert len(outcomes) == 300
    assert {(o["state"], o["reason"]) for o in outcomes} == {("not-tested", "interrupted")}
    assert 0 < sum(o["syns_sent"] for o in outcomes) < 300
