"""The lab behind tests/integration/test_front_door.py: three compute nodes, a router and an
outside vantage (tests.lab.netlab.cluster, fabric routed through mgmt so that listeners bound
to a fabric address are reachable from outside), IPv4 and IPv6, real torch jobs.

- node0 hosts a two-node Gloo job's store on 29500 (torchrun, static rendezvous) and rank 0's
  Gloo listener on its fabric address;
- node1 hosts rank 1 of that job and a two-worker RPC job (torchrun --standalone, whose agent
  holds its own store), TensorPipe listeners on the fabric address;
- node2 holds only a wildcard TCPStore behind an nft table that drops it over IPv4 from every
  network: from an IPv4-only vantage nothing is found, and IPv6 is where it answers.

No other process listens in a node namespace, so `ss` there is the ground truth against which
the scan's findings are checked. Every node counts the SYNs that arrive from the outside
network (nft counter ``outside_syn``), so a test can prove that nothing was sent.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.test_scan_cluster import netaudit
from tests.lab.netlab import OUTSIDE_V4, OUTSIDE_V6, Cluster, Lab, Namespace, Node, cluster
from tests.lab.torchjobs import JOBS, TorchJob, torchrun

FABRIC_V4_CIDR = "198.18.0.0/24"
FABRIC_V6_CIDR = "2001:db8:18::/64"
INTENDED = ["--intended-subnet", FABRIC_V4_CIDR, "--intended-subnet", FABRIC_V6_CIDR]
FAST = ["--timeout", "0.5", "--retries", "1"]
STORE_PORT = 29500
V4_DROPPED_STORE_PORT = 29600
RULE_OF_SERVICE = {"tcpstore": "NA001", "c10d-gloo": "NA003", "rpc-tensorpipe": "NA002"}
TENSORPIPE_LISTENERS_PER_WORKER = 17
COUNTER_TABLE = "fd_count"

_SS_PEER = re.compile(r'\("[^"]*",pid=(\d+),fd=\d+\)')


@dataclass(frozen=True, slots=True)
class Socket:
    """One TCP listener as `ss -ltnp` shows it inside a node namespace."""

    address: str  # "*" / "0.0.0.0" / "[::]" wildcards are kept as ss prints them
    port: int
    pids: tuple[int, ...]

    @property
    def is_wildcard(self) -> bool:
        return self.address in ("*", "0.0.0.0", "[::]", "::")


@dataclass
class World:
    cluster: Cluster
    workdir: Path
    inventories: dict[str, Path]  # node0, node1, node2
    gloo: tuple[TorchJob, TorchJob]
    rpc: TorchJob
    ready: dict[str, Any]
    listeners_before: dict[str, tuple[Socket, ...]]  # node0, node1 right after the probes

    @property
    def node0(self) -> Node:
        return self.cluster.nodes[0]

    @property
    def node1(self) -> Node:
        return self.cluster.nodes[1]

    @property
    def node2(self) -> Node:
        return self.cluster.nodes[2]

    @property
    def outside(self) -> Namespace:
        return self.cluster.outside.ns


def listening(ns: Namespace) -> tuple[Socket, ...]:
    """Every TCP listener in ``ns`` with its owning pids (ss, not netaudit: ground truth)."""
    out = ns.run(["ss", "-Hltnp"], hostname=False).stdout
    sockets = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        local = fields[3]
        address, _, port = local.rpartition(":")
        address = address.split("%", 1)[0]  # "[::]%lo" style scope suffixes
        pids = tuple(int(pid) for pid in _SS_PEER.findall(line))
        sockets.append(Socket(address, int(port), pids))
    return tuple(sockets)


def listeners_of(ns: Namespace, pid: int) -> list[Socket]:
    return [s for s in listening(ns) if pid in s.pids]


def outside_syns(node: Node) -> int:
    """SYNs from the outside network that reached ``node`` since the lab was built."""
    out = node.ns.run(["nft", "-j", "list", "counter", "inet", COUNTER_TABLE, "outside_syn"]).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError(f"no outside_syn counter in {node.hostname}: {out}")


def probe_inventory(node: Node, path: Path) -> Path:
    """`netaudit probe --format json` inside the node, as the operator would run it."""
    result = netaudit(node.ns, "probe", "--format", "json", "--namespaces", "own", *INTENDED)
    assert result.returncode in (0, 3), (
        f"expected `netaudit probe` on {node.hostname} to exit 0 or 3, got {result.returncode}: "
        f"{result.stderr}"
    )
    path.write_text(result.stdout)
    return path


def _counter(node: Node) -> None:
    node.ns.nft(
        f"table inet {COUNTER_TABLE} {{\n"
        "  counter outside_syn { }\n"
        "  chain input {\n"
        "    type filter hook input priority -10; policy accept;\n"
        f"    ip saddr {OUTSIDE_V4} tcp flags & (syn | ack) == syn counter name outside_syn\n"
        f"    ip6 saddr {OUTSIDE_V6} tcp flags & (syn | ack) == syn counter name outside_syn\n"
        "  }\n"
        "}\n"
    )


def build(lab: Lab, workdir: Path) -> Iterator[World]:
    """Generator for a module fixture: the world while the jobs hold, then they are stopped."""
    c = cluster(lab, nodes=3, ipv6=True, route_fabric_via_mgmt=True)
    node0, node1, node2 = c.nodes
    for node in c.nodes:
        _counter(node)
    node2.ns.nft(
        "table ip fd_v4_only {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        # the store's own client connects over 127.0.0.1: only the network is refused
        f'    iifname != "lo" tcp dport {V4_DROPPED_STORE_PORT} drop\n'
        "  }\n"
        "}\n"
    )
    env = {"GLOO_SOCKET_IFNAME": "fabric", "TP_SOCKET_IFNAME": "fabric"}
    jobs: list[TorchJob] = []
    try:
        gloo_args = [
            "--nnodes=2",
            "--nproc-per-node=1",
            "--rdzv-id=frontdoor",
            f"--master-addr={node0.fabric_v4}",
            f"--master-port={STORE_PORT}",
            str(JOBS / "gloo_worker.py"),
        ]
        gloo = tuple(
            TorchJob(
                workdir / f"gloo{rank}",
                torchrun(f"--node-rank={rank}", *gloo_args),
                env=env,
                popen=node.ns.popen,
            )
            for rank, node in enumerate((node0, node1))
        )
        jobs += gloo
        rpc = TorchJob(
            workdir / "rpc",
            torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "rpc_worker.py")),
            ranks=2,
            env=env,
            popen=node1.ns.popen,
        )
        jobs.append(rpc)
        store = TorchJob(
            workdir / "v4dropped",
            [str(JOBS / "tcpstore_server.py"), "--port", str(V4_DROPPED_STORE_PORT)],
            popen=node2.ns.popen,
        )
        jobs.append(store)
        ready = {
            "gloo0": gloo[0].wait_ready(),
            "gloo1": gloo[1].wait_ready(offset=1),
            "rpc": rpc.wait_ready(),
            "v4dropped": store.wait_ready(),
        }
        inventories = {
            node.hostname: probe_inventory(node, workdir / f"{node.hostname}.json") for node in c.nodes
        }
        before = {node.hostname: listening(node.ns) for node in (node0, node1)}
        yield World(c, workdir, inventories, (gloo[0], gloo[1]), rpc, ready, before)
    finally:
        for job in jobs:
            job.release()
        for job in jobs:
            job.stop()


def expected_exposures(world: World, node: Node) -> set[tuple[str, str, int]]:
    """(rule, address, port) for every torch listener of ``node``, from `ss` and the jobs'
    own pids: a wildcard listener answers on every node address of both families (the lab
    sets no IPv6-only flag and no firewall on node0/node1), a bound one on its address."""
    gloo_pids = {world.ready[key][0]["pid"] for key in ("gloo0", "gloo1")}
    rpc_pids = {info["pid"] for info in world.ready["rpc"].values()}
    exposures = set()
    for socket_ in world.listeners_before[node.hostname]:
        if socket_.address.startswith("127.") or socket_.address == "[::1]":
            continue
        if set(socket_.pids) & gloo_pids:
            rule = RULE_OF_SERVICE["c10d-gloo"]
        elif set(socket_.pids) & rpc_pids:
            rule = RULE_OF_SERVICE["rpc-tensorpipe"]
        else:
            # the only other listeners in a node are torchrun agents: their stores
            rule = RULE_OF_SERVICE["tcpstore"]
        addresses = node.addresses() if socket_.is_wildcard else [socket_.address.strip("[]")]
        exposures |= {(rule, str(ipaddress.ip_address(a)), socket_.port) for a in addresses}
    return exposures


def run_scan(world: World, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI inside the outside namespace."""
    return netaudit(world.outside, "scan", *argv, timeout=timeout)
