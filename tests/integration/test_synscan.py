"""The half-open scanner against real kernels in network namespaces (see _scanlab.py)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import _scanlab as topo
from tests.integration._scanlab import (
    A4,
    A6,
    B4,
    B6,
    BULK_CLOSED,
    BULK_DROP,
    C4,
    C6,
    CLOSED,
    DROPPED,
    OPEN,
    REJECTED,
    SIDE_A4,
    SIDE_A6,
    ScanLab,
    delta,
)
from tests.lab.netlab import Lab, module_lab_fixture  # noqa: F401

pytestmark = pytest.mark.requires_root


@pytest.fixture(scope="module")
def net(module_lab: Lab) -> Iterator[ScanLab]:
    yield topo.build(module_lab)


def by_key(outcomes: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    keyed = {(o["source"], o["address"], o["port"]): o for o in outcomes}
    assert len(keyed) == len(outcomes), "a probe produced more than one outcome"
    return keyed


def test_states_over_ipv4_ipv6_and_loopback_without_any_accept(net: ScanLab) -> None:
    # Given open, closed, dropped and ICMP-rejected ports in B, and a listener on A's loopback
    specs = [
        (src, dst, port)
        for src, dst in ((A4, B4), (A6, B6))
        for port in (*OPEN, *CLOSED, *DROPPED, *REJECTED)
    ]
    specs += [("127.0.0.1", "127.0.0.1", OPEN[0]), ("::1", "::1", OPEN[0])]
    specs += [("127.0.0.1", "127.0.0.1", CLOSED[0])]
    before = net.counters()

    # When A scans them half-open
    outcomes, summary = net.run_scan(specs, timeout_s=0.5)

    # Then every probe has exactly one outcome with the right state
    found = by_key(outcomes)
    assert set(found) == set(specs)
    for src, dst in ((A4, B4), (A6, B6)):
        for port in OPEN:
            assert (found[src, dst, port]["state"], found[src, dst, port]["reason"]) == (
                "open",
                "syn-ack",
            )
        for port in CLOSED:
            assert (found[src, dst, port]["state"], found[src, dst, port]["reason"]) == (
                "closed",
                "rst",
            )
        for port in DROPPED:
            assert (found[src, dst, port]["state"], found[src, dst, port]["reason"]) == (
                "filtered",
                "timeout",
            )
            assert found[src, dst, port]["rtt_s"] is None
    assert found[A4, B4, REJECTED[0]]["reason"] == "icmp 3/13"
    assert found[A6, B6, REJECTED[0]]["reason"] == "icmp6 1/1"
    assert {found[a, b, REJECTED[0]]["state"] for a, b in ((A4, B4), (A6, B6))} == {"filtered"}
    assert found["127.0.0.1", "127.0.0.1", OPEN[0]]["state"] == "open"
    assert found["::1", "::1", OPEN[0]]["state"] == "open"
    assert found["127.0.0.1", "127.0.0.1", CLOSED[0]]["state"] == "closed"
    answered = [o for o in outcomes if o["state"] != "filtered" or o["reason"] != "timeout"]
    assert all(o["rtt_s"] is not None and 0 < o["rtt_s"] < 0.5 for o in answered)

    # And the target saw one SYN per answered port and 1 + retries per dropped port
    seen = delta(before, net.counters())
    for tag in "46":
        for port in (*OPEN, *CLOSED, *REJECTED):
            assert seen[f"syn{tag}_{port}"] == 1, (tag, port)
        for port in DROPPED:
            assert seen[f"syn{tag}_{port}"] == 2, (tag, port)
    assert sum(o["syns_sent"] for o in outcomes if o["address"] in (B4, B6)) == sum(
        seen[f"syn{tag}_{port}"] for tag in "46" for port in topo.COUNTED
    )

    # And no listener ever had a connection to accept(): the handshakes stayed half-open
    assert net.listeners.pending() == 0
    assert net.scan_listeners.pending() == 0
    # An adaptive timeout: B answered within microseconds, so the dropped ports took
    # 2 x max(0.1 s, 4 x RTT), not 2 x 0.5 s.
    assert summary["scan_s"] < 0.8


@pytest.mark.parametrize("retries", [0, 2])
def test_syns_per_filtered_port_follow_retries(net: ScanLab, retries: int) -> None:
    specs = [(A4, B4, port) for port in DROPPED] + [(A6, B6, port) for port in DROPPED]
    before = net.counters()
    outcomes, _ = net.run_scan(specs, timeout_s=0.1, retries=retries)
    seen = delta(before, net.counters())
    assert {o["syns_sent"] for o in outcomes} == {1 + retries}
    assert {seen[f"syn{tag}_{port}"] for tag in "46" for port in DROPPED} == {1 + retries}
    assert {(o["state"], o["reason"]) for o in outcomes} == {("filtered", "timeout")}


def test_rate_limit_spaces_the_probes(net: ScanLab) -> None:
    specs = [(A4, B4, port) for port in BULK_CLOSED[:200]]
    outcomes, summary = net.run_scan(specs, rate_per_s=1000, in_flight_per_host=1000)
    assert Counter(o["state"] for o in outcomes) == {"closed": 200}
    # 200 probes at 1,000/s with a 10 ms burst: about 0.19 s of sending.
    assert summary["scan_s"] >= 0.15
    assert summary["scan_s"] < 0.6  # and no idle wait once every answer is in


def test_first_answer_shortens_the_timeout_for_the_whole_burst(net: ScanLab) -> None:
    # 64 dropped ports and one open port, all sent in one burst before any answer came back
    specs = [(A4, B4, OPEN[0])] + [(A4, B4, port) for port in BULK_DROP[:64]]
    outcomes, summary = net.run_scan(specs, timeout_s=3.0, min_timeout_s=0.1, retries=0)
    states = Counter(o["state"] for o in outcomes)
    assert states == {"open": 1, "filtered": 64}
    # The open port's RTT shrank the 3 s timeout to 0.1 s for probes already in flight.
    assert summary["scan_s"] < 1.0


def test_stop_event_stops_sending_and_reports_the_rest_interrupted(net: ScanLab) -> None:
    specs = [(A4, B4, port) for port in BULK_DROP[:400]]
    before = net.counters()
    outcomes, summary = net.run_scan(
        specs, stop_after_s=0.3, rate_per_s=500, timeout_s=5.0, in_flight_per_host=1000
    )
    seen = delta(before, net.counters())
    assert summary["scan_s"] < 1.0
    assert len(by_key(outcomes)) == 400
    assert {(o["state"], o["reason"]) for o in outcomes} == {("not-tested", "interrupted")}
    sent = sum(o["syns_sent"] for o in outcomes)
    assert 0 < sent < 400  # it had started, and stopped well before the end
    assert any(o["syns_sent"] == 0 for o in outcomes)
    assert seen["bulk"] == sent  # nothing left the scanner after the stop


def test_duplicate_answers_produce_one_outcome(net: ScanLab) -> None:
    # B sends every SYN-ACK and RST twice (nft dup in its output hook)
    for family, us in (("ip", A4), ("ip6", A6)):
        net.target.nft(
            f"""table {family} nadup {{
chain output {{
type filter hook output priority 0; policy accept;
tcp flags & (syn | ack) == syn | ack dup to {us} device "{net.target_if}"
tcp flags & rst == rst dup to {us} device "{net.target_if}"
}}
}}
"""
        )
    try:
        specs = [(A4, B4, p) for p in (*OPEN, *CLOSED)] + [(A6, B6, p) for p in (*OPEN, *CLOSED)]
        before = net.scan_counters()
        outcomes, _ = net.run_scan(specs, timeout_s=0.5)
        arrived = delta(before, net.scan_counters())
    finally:
        net.target.nft("delete table ip nadup\ndelete table ip6 nadup\n")
    assert arrived["synack4"] == 2 * len(OPEN)  # the duplicates really arrived
    assert arrived["synack6"] == 2 * len(OPEN)
    found = by_key(outcomes)
    assert len(found) == len(specs)
    assert Counter(o["state"] for o in outcomes) == {"open": 6, "closed": 4}
    assert net.listeners.pending() == 0


def test_sources_without_their_own_route_send_nothing(net: ScanLab) -> None:
    specs = [
        (SIDE_A4, B4, OPEN[0]),  # B is routed through the other interface
        (SIDE_A6, B6, OPEN[0]),
        (A4, "198.19.200.1", OPEN[0]),  # no route at all
        (A6, "2001:db8:ffff::1", OPEN[0]),
        ("198.18.9.9", B4, OPEN[0]),  # not an address of A
        (A6, B4, OPEN[0]),  # families differ
    ]
    before = net.counters()
    outcomes, _ = net.run_scan(specs, timeout_s=0.3)
    seen = delta(before, net.counters())
    found = by_key(outcomes)
    assert {o["state"] for o in outcomes} == {"not-tested"}
    assert {o["syns_sent"] for o in outcomes} == {0}
    assert found[SIDE_A4, B4, OPEN[0]]["reason"].startswith(f"no route from {SIDE_A4}")
    assert found[SIDE_A6, B6, OPEN[0]]["reason"].startswith(f"no route from {SIDE_A6}")
    assert found[A4, "198.19.200.1", OPEN[0]]["reason"].startswith(f"no route from {A4}")
    assert found[A6, "2001:db8:ffff::1", OPEN[0]]["reason"].startswith(f"no route from {A6}")
    assert "not an address of this host" in found["198.18.9.9", B4, OPEN[0]]["reason"]
    assert "different families" in found[A6, B4, OPEN[0]]["reason"]
    assert seen["from_side4"] == seen["from_side6"] == 0
    assert seen["syn4_1001"] == seen["syn6_1001"] == 0


def test_each_source_uses_its_own_interface(net: ScanLab) -> None:
    specs = [(A4, B4, OPEN[0]), (SIDE_A4, C4, OPEN[0]), (A6, B6, OPEN[0]), (SIDE_A6, C6, OPEN[0])]
    outcomes, _ = net.run_scan(specs, timeout_s=0.5)
    assert {(o["source"], o["state"]) for o in outcomes} == {
        (A4, "open"),
        (SIDE_A4, "open"),
        (A6, "open"),
        (SIDE_A6, "open"),
    }
    assert net.side_listeners.pending() == 0
    assert net.listeners.pending() == 0


UNPRIVILEGED = """
import json, socket
from netaudit.scan.probe_types import ProbeSpec
from netaudit.scan.synscan import raw_available, syn_scan
try:
    list(syn_scan([ProbeSpec("127.0.0.1", "127.0.0.1", 9)]))
    raised = None
except PermissionError as error:
    raised = type(error).__name__
print(json.dumps({"raw": raw_available(), "raised": raised}))
"""


def test_raw_available_follows_privilege(net: ScanLab) -> None:
    from netaudit.scan.synscan import raw_available

    assert raw_available()  # root here
    # As nobody (no CAP_NET_RAW), inside the scanner namespace: False, and syn_scan says so
    # with PermissionError rather than per-probe outcomes, so the caller picks the fallback.
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", UNPRIVILEGED]
    # nobody may not read the checkout (a 0700 clone directory): give it a readable copy
    readable = Path(tempfile.mkdtemp(prefix="netaudit-nobody-"))
    try:
        readable.chmod(0o755)
        shutil.copytree(topo.REPO / "netaudit", readable / "netaudit")
        result = net.scan.run(argv, env={"PYTHONPATH": str(readable)}, hostname=False)
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert json.loads(result.stdout) == {"raw": False, "raised": "PermissionError"}
