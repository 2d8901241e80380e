"""A scanner/target namespace topology shared by the SYN and connect scan tests.

    scan (A) ──veth── target (B)     198.18.0.1/24 ─ 198.18.0.2/24, 2001:db8:18::1/64 ─ ::2/64
      └──────veth── side (C)         198.18.1.1/24 ─ 198.18.1.2/24, 2001:db8:19::1/64 ─ ::2/64

B holds listeners that never accept() (OPEN ports), nothing on CLOSED ports, an nftables
``drop`` on DROPPED ports and on BULK_DROP, and ``reject with icmpx admin-prohibited`` on
REJECTED. Named nft counters in B count the SYNs per family and port, so SYN counts are
measured by the target, not by the scanner. The scanner runs in A only, as a subprocess
(tests/integration/_scan_driver.py), so nothing is sent from the test runner's namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.netlab import Lab, Namespace

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("_scan_driver.py")

A4, B4, A6, B6 = "198.18.0.1", "198.18.0.2", "2001:db8:18::1", "2001:db8:18::2"
SIDE_A4, C4, SIDE_A6, C6 = "198.18.1.1", "198.18.1.2", "2001:db8:19::1", "2001:db8:19::2"
OPEN = (1001, 1002, 1003)
CLOSED = (1500, 1501)
DROPPED = (2001, 2002)
REJECTED = (3001,)
BULK_DROP = range(20000, 21000)
BULK_CLOSED = range(5000, 6000)
COUNTED = (*OPEN, *CLOSED, *DROPPED, *REJECTED)

# Listens on every address:port given, never accept()s; on each stdin line, tries a
# non-blocking accept() on every socket and prints how many connections were waiting.
HOLD_LISTENER = """
import json, socket, sys
socks = []
for item in sys.argv[1:]:
    host, port = item.rsplit(":", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    s.setblocking(False)
    socks.append(s)
print("ready", flush=True)
for _line in sys.stdin:
    accepted = 0
    for s in socks:
        while True:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                break
            accepted += 1
            c.close()
    print(json.dumps({"accepted": accepted}), flush=True)
"""


class HoldListener:
    """Listeners that never accept on their own; ``pending()`` says how many connections
    completed their handshake since the last call (and drains them)."""

    def __init__(self, ns: Namespace, endpoints: list[str]) -> None:
        self.proc = ns.popen(
            [sys.executable, "-c", HOLD_LISTENER, *endpoints],
            hostname=False,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def pending(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("check\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())["accepted"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """How much each counter grew."""
    return {name: after[name] - before.get(name, 0) for name in after}


def _endpoint(host: str, port: int) -> str:
    return f"{host}:{port}"


def _counter_rules() -> str:
    lines = []
    for family, tag in (("ipv4", "4"), ("ipv6", "6")):
        for port in COUNTED:
            lines.append(
                f"meta nfproto {family} tcp dport {port} tcp flags & (syn | ack) == syn "
                f'counter name "syn{tag}_{port}"'
            )
    return "\n".join(lines)


def _counter_decls() -> str:
    names = [f"syn{tag}_{port}" for tag in "46" for port in COUNTED]
    names += ["bulk", "from_side4", "from_side6", "synack4", "synack6"]
    return "\n".join(f"counter {name} {{ }}" for name in names)


@dataclass
class ScanLab:
    lab: Lab
    scan: Namespace
    target: Namespace
    side: Namespace
    target_if: str
    listeners: HoldListener
    side_listeners: HoldListener
    scan_listeners: HoldListener

    def counters(self) -> dict[str, int]:
        out = self.target.run(["nft", "-j", "list", "counters", "table", "inet", "natest"], hostname=False)
        found: dict[str, int] = {}
        for item in json.loads(out.stdout)["nftables"]:
            counter = item.get("counter")
            if counter:
                found[counter["name"]] = counter["packets"]
        return found

    def scan_counters(self) -> dict[str, int]:
        out = self.scan.run(["nft", "-j", "list", "counters", "table", "inet", "nascan"], hostname=False)
        return {
            item["counter"]["name"]: item["counter"]["packets"]
            for item in json.loads(out.stdout)["nftables"]
            if "counter" in item
        }

    def run_scan(
        self,
        specs: list[tuple[str, str, int]],
        engine: str = "syn",
        stop_after_s: float | None = None,
        ulimit_nofile: int | None = None,
        **limits: Any,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run the driver inside A; (outcome lines, summary line)."""
        request = json.dumps(
            {"engine": engine, "specs": specs, "limits": limits, "stop_after_s": stop_after_s}
        )
        argv = [sys.executable, str(DRIVER)]
        if ulimit_nofile is not None:
            argv = ["sh", "-c", f'ulimit -n {int(ulimit_nofile)} && exec "$@"', "sh", *argv]
        result = self.scan.run(argv, input=request, env={"PYTHONPATH": str(REPO)}, hostname=False, timeout=60)
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert lines and lines[-1].get("done"), result.stderr
        return lines[:-1], lines[-1]


def build(lab: Lab) -> ScanLab:
    scan = lab.namespace("scan")
    target = lab.namespace("tgt")
    side = lab.namespace("side")
    _a_if, b_if = lab.link(scan, target, [f"{A4}/24", f"{A6}/64"], [f"{B4}/24", f"{B6}/64"])
    lab.link(scan, side, [f"{SIDE_A4}/24", f"{SIDE_A6}/64"], [f"{C4}/24", f"{C6}/64"])
    # ICMP errors are rate limited per destination by default (net.ipv4.icmp_ratelimit,
    # net.ipv6.icmp.ratelimit: 1 s); the target must answer every rejected probe.
    target.sysctl("net.ipv4.icmp_ratelimit", 0)
    target.sysctl("net.ipv6.icmp.ratelimit", 0)
    bulk = f"{BULK_DROP.start}-{BULK_DROP.stop - 1}"
    dropped = ", ".join(map(str, DROPPED))
    target.nft(
        f"""table inet natest {{
{_counter_decls()}
chain input {{
type filter hook input priority 0; policy accept;
ip saddr {SIDE_A4} counter name "from_side4"
ip6 saddr {SIDE_A6} counter name "from_side6"
{_counter_rules()}
tcp dport {bulk} counter name "bulk" drop
tcp dport {{ {dropped} }} drop
tcp dport {REJECTED[0]} reject with icmpx type admin-prohibited
}}
}}
"""
    )
    # Counters on the scanner's side, to see duplicated answers arrive.
    scan.nft(
        """table inet nascan {
counter synack4 { }
counter synack6 { }
chain input {
type filter hook input priority 0; policy accept;
meta nfproto ipv4 tcp flags & (syn | ack) == syn | ack counter name "synack4"
meta nfproto ipv6 tcp flags & (syn | ack) == syn | ack counter name "synack6"
}
}
"""
    )
    endpoints = [_endpoint(host, port) for host in (B4, B6) for port in OPEN]
    listeners = HoldListener(target, endpoints)
    side_listeners = HoldListener(side, [_endpoint(C4, OPEN[0]), _endpoint(C6, OPEN[0])])
    scan_listeners = HoldListener(scan, [_endpoint("127.0.0.1", OPEN[0]), _endpoint("::1", OPEN[0])])
    return ScanLab(lab, scan, target, side, b_if, listeners, side_listeners, scan_listeners)
