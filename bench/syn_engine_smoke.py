"""Smoke benchmark of the half-open scan engine (run by hand, as root; not a test).

Rebuilds the topology of research/perf-baselines.md §B: a scanner namespace and a target
namespace joined by a veth; the target has H /32 addresses on lo (198.18.x.y) and the same
16 ports on each, a seeded shuffle making 3 open, 3 filtered (nft drop) and 10 closed per
host. The scanner runs inside its namespace (this script re-executes itself there) and every
verdict is checked against the truth; nft counters in the target count the SYNs.

    python bench/syn_engine_smoke.py                 # 64 hosts x 16 ports
    python bench/syn_engine_smoke.py --hosts 1024    # 16,384 probes
    python bench/syn_engine_smoke.py --hosts 1024 --runs 9 --configs adaptive,connect \
        --baseline /tmp/base                         # paired A/B against another checkout

``--baseline DIR`` names another checkout's root (``git worktree add /tmp/base HEAD``, or
``git archive HEAD netaudit | tar -x -C /tmp/base``): every run of this tree is paired with
a run of that one, in alternating order, and the table adds the paired ratios. On a shared
machine the ratios and the scan's CPU (user and sys apart) say more than single wall times.

Only 198.18.0.0/15 is used, inside namespaces this script creates and always deletes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PORTS = (22, 80, 443, 1234, 2379, 5000, 6006, 6379, 6817, 8080, 8265, 9090, 12345, 29400, 29500, 45000)
SCAN_V4, TARGET_V4 = "198.19.0.2", "198.19.0.1"

TARGET_PY = """
import resource, socket, sys, json
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for host, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def host_address(index: int) -> str:
    return f"198.18.{index // 250}.{index % 250 + 1}"


def truth(hosts: int, seed: int = 1) -> dict[tuple[str, int], str]:
    rng = random.Random(seed)
    found: dict[tuple[str, int], str] = {}
    for index in range(hosts):
        ports = list(PORTS)
        rng.shuffle(ports)
        for rank, port in enumerate(ports):
            state = "open" if rank < 3 else "filtered" if rank < 6 else "closed"
            found[host_address(index), port] = state
    return found


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, input=stdin)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def build(prefix: str, hosts: int, expected: dict[tuple[str, int], str]) -> subprocess.Popen[str]:
    scan, target = f"{prefix}-scan", f"{prefix}-tgt"
    sh("ip", "netns", "add", scan)
    sh("ip", "netns", "add", target)
    sh("ip", "-n", scan, "link", "add", "vs", "type", "veth", "peer", "name", "vt", "netns", target)
    for ns, dev, address in ((scan, "vs", SCAN_V4), (target, "vt", TARGET_V4)):
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", scan, "route", "add", "198.18.0.0/16", "via", TARGET_V4)
    batch = "".join(f"addr add {host_address(i)}/32 dev lo\n" for i in range(hosts))
    sh("ip", "-n", target, "-batch", "-", stdin=batch)
    filtered = ", ".join(f"{h} . {p}" for (h, p), s in expected.items() if s == "filtered")
    sh(
        "ip", "netns", "exec", target, "nft", "-f", "-",
        stdin=f"""table inet bench {{
counter syn {{ }}
set blocked {{ type ipv4_addr . inet_service; elements = {{ {filtered} }} }}
chain input {{
type filter hook input priority 0; policy accept;
tcp flags & (syn | ack) == syn counter name "syn"
ip daddr . tcp dport @blocked drop
}}
}}
""",
    )  # fmt: skip
    opened = [[h, p] for (h, p), s in expected.items() if s == "open"]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", target, sys.executable, "-c", TARGET_PY, json.dumps(opened)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    return listener


def syn_counter(prefix: str) -> int:
    out = sh("ip", "netns", "exec", f"{prefix}-tgt", "nft", "-j", "list", "counter", "inet", "bench", "syn")
    return next(i["counter"]["packets"] for i in json.loads(out)["nftables"] if "counter" in i)


def inside(hosts: int, limits: dict[str, object]) -> None:
    """Runs in the scanner namespace: one scan, one JSON line on stdout."""
    started = time.monotonic()
    from netaudit.scan.connectscan import connect_scan
    from netaudit.scan.probe_types import ProbeSpec, ScanLimits
    from netaudit.scan.synscan import syn_scan

    engine = connect_scan if limits.pop("engine", "syn") == "connect" else syn_scan
    # A benchmark raises limits explicitly (DESIGN.md §5): here the descriptor limit, so that
    # the connect scan may hold its 4,096 sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    expected = truth(hosts)
    specs = [ProbeSpec(SCAN_V4, h, p) for h, p in expected]
    before = resource.getrusage(resource.RUSAGE_SELF)
    scan_started = time.monotonic()
    scanned = engine(specs, ScanLimits(**limits))  # type: ignore[arg-type]
    results = {(o.spec.address, o.spec.port): o.state.value for o in scanned}
    ended = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    correct = sum(results.get(key) == state for key, state in expected.items())
    print(
        json.dumps(
            {
                "scan_s": ended - scan_started,
                "process_s": ended - started,
                "accuracy": correct / len(expected),
                # CPU of the whole process (imports included): robust to a busy machine,
                # unlike wall time, and the part of the cost that is ours.
                "cpu_s": usage.ru_utime + usage.ru_stime,
                # The scan's own CPU, Python (user) and the kernel's packet work (sys) apart.
                "scan_user_s": usage.ru_utime - before.ru_utime,
                "scan_sys_s": usage.ru_stime - before.ru_stime,
            }
        )
    )


CONFIGS = {
    "fixed 1 s, no retry": {"timeout_s": 1.0, "retries": 0, "is_adaptive": False},
    "scan_bench's adaptive (0.5 s, floor 0.1 s) + 1 retry": {
        "timeout_s": 0.5,
        "min_timeout_s": 0.1,
        "retries": 1,
    },
    "adaptive (1 s, floor 0.1 s) + 1 retry": {"timeout_s": 1.0, "min_timeout_s": 0.1, "retries": 1},
    "defaults (2000/s, 64/host, 1 s adaptive, 1 retry)": {},
    "connect scan, adaptive (1 s, floor 0.1 s) + 1 retry": {
        "engine": "connect",
        "timeout_s": 1.0,
        "min_timeout_s": 0.1,
        "retries": 1,
    },
}


def _one_run(prefix: str, hosts: int, limits: dict[str, object], tree: Path) -> dict[str, float]:
    before = syn_counter(prefix)
    started = time.monotonic()
    out = sh(
        "ip", "netns", "exec", f"{prefix}-scan", "env", f"PYTHONPATH={tree}",
        sys.executable, __file__, "--hosts", str(hosts), "--inside", json.dumps(limits),
    )  # fmt: skip
    result: dict[str, float] = json.loads(out)
    result["wall_s"] = time.monotonic() - started
    result["syns"] = syn_counter(prefix) - before
    return result


def _line(name: str, runs: list[dict[str, float]], probes: int) -> str:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    scans = [r["scan_s"] for r in runs]
    return (
        f"{name:58s} scan {median('scan_s'):.3f} s ({min(scans):.3f}-{max(scans):.3f})  "
        f"{probes / median('scan_s'):7.0f} probes/s  scan CPU user {median('scan_user_s'):.3f} "
        f"sys {median('scan_sys_s'):.3f}  process {median('process_s'):.3f} s  "
        f"SYNs {median('syns'):.0f}  accuracy {min(r['accuracy'] for r in runs):.3f} "
        f"(median of {len(runs)})"
    )


def _ratio(key: str, runs: list[dict[str, float]], base: list[dict[str, float]]) -> str:
    ratios = [r[key] / b[key] for r, b in zip(runs, base, strict=True) if b[key] > 0]
    if not ratios:
        return f"{key} —"
    return f"{key} {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1e6, help="rate_per_s for the fast configs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--configs",
        help="comma-separated words; only the configurations whose name contains one of them",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout's root, run paired with this one")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside is not None:
        inside(args.hosts, json.loads(args.inside))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    if args.baseline is not None and not (args.baseline / "netaudit" / "scan").is_dir():
        print(f"--baseline {args.baseline}: no netaudit/scan there", file=sys.stderr)
        return 2
    words = [w for w in (args.configs or "").split(",") if w]
    chosen = {n: c for n, c in CONFIGS.items() if not words or any(w in n for w in words)}
    expected = truth(args.hosts)
    prefix = f"nabench{os.getpid()}"
    listener = None
    try:
        listener = build(prefix, args.hosts, expected)
        print(f"{args.hosts} hosts x {len(PORTS)} ports = {len(expected)} probes")
        for name, config in chosen.items():
            limits = dict(config)
            if limits:
                limits.setdefault("rate_per_s", args.rate)
            runs: list[dict[str, float]] = []
            base: list[dict[str, float]] = []
            for index in range(args.runs):
                if args.baseline is None:
                    runs.append(_one_run(prefix, args.hosts, dict(limits), REPO))
                    continue
                # Alternate which goes first, so that neither always runs on a warmer machine.
                pair = [(runs, REPO), (base, args.baseline)]
                for found, tree in pair if index % 2 == 0 else pair[::-1]:
                    found.append(_one_run(prefix, args.hosts, dict(limits), tree))
            print(_line(name, runs, len(expected)))
            if base:
                print(_line("  baseline", base, len(expected)))
                keys = ("scan_s", "scan_user_s", "scan_sys_s")
                print(
                    "  this / baseline, paired median (min-max): "
                    + "; ".join(_ratio(k, runs, base) for k in keys)
                )
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        for ns in (f"{prefix}-scan", f"{prefix}-tgt"):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
