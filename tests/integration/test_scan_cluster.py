"""`netaudit scan` across a lab cluster: two compute nodes with a fabric and a management
network, a router, and an outside vantage; IPv4 and IPv6; real torch jobs (a TCPStore, a
two-node Gloo job under torchrun, an RPC job); nftables inside the nodes, one rule IPv4-only.

Every scan runs inside a lab namespace (`ip netns exec`), as a real CLI process.

Facts this module sets up, and what the scans must find:
- node0 hosts the 2-node job's store on 29500 ([::] dual-stack), an extra TCPStore on 29501
  behind an IPv4-only nft rule, its Gloo listener on its fabric address, and an RPC job whose
  TensorPipe listeners sit on the fabric address too;
- node1 drops new connections to the ephemeral range from outside the fabric (inet rule), so
  its Gloo listener is reachable only from inside; it runs a non-torch decoy on 29400;
- the router routes node fabric addresses via their management addresses, so a listener
  bound to the fabric address is reachable from outside (the weak host model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netlab import Cluster, Lab, Node, cluster, module_lab_fixture  # noqa: F401
from tests.lab.torchjobs import JOBS, TorchJob, torchrun

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_torch, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
INTENDED = ["--intended-subnet", "198.18.0.0/24", "--intended-subnet", "2001:db8:18::/64"]
FAST = ["--timeout", "0.4", "--retries", "1"]
DECOY = (
    "import socket,time\n"
    "s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('::', 29400)); s.listen(); print('up', flush=True)\n"
    "end=time.time()+300\n"
    "while time.time()<end:\n"
    "    c,_=s.accept(); c.sendall(b'HELLO not a store\\n'); c.close()\n"
)


@dataclass
class World:
    cluster: Cluster
    inventories: list[Path]
    rpc: TorchJob
    ready: dict[str, Any]
    workdir: Path


def netaudit(
    node_ns: Any, *argv: str, timeout: float = 120, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI inside a lab namespace (as a node would, with its hostname)."""
    command = [*(prefix or []), sys.executable, "-m", "netaudit", *argv]
    return node_ns.run(command, check=False, timeout=timeout, env={"PYTHONPATH": str(REPO)})


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def world(module_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("cluster")
    c = cluster(module_lab, nodes=2, ipv6=True, route_fabric_via_mgmt=True)
    node0, node1 = c.nodes
    node1.ns.nft(
        "table inet netaudit_test {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "    ct state established,related accept\n"
        "    tcp dport 32768-60999 ip saddr != 198.18.0.0/24 ct state new drop\n"
        "    tcp dport 32768-60999 ip6 saddr != 2001:db8:18::/64 ct state new drop\n"
        "  }\n"
        "}\n"
    )
    # The classic mistake: an IPv4-only table, so IPv6 stays open.
    node0.ns.nft(
        "table ip netaudit_v4only {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        "    tcp dport 29501 ip saddr 203.0.113.0/24 drop\n"
        "  }\n"
        "}\n"
    )
    decoy = node1.ns.popen([sys.executable, "-c", DECOY], stdout=subprocess.PIPE)
    assert decoy.stdout is not None and decoy.stdout.readline().strip() == b"up"

    def popen_in(node: Node) -> Any:
        return node.ns.popen

    env = {"GLOO_SOCKET_IFNAME": "fabric", "TP_SOCKET_IFNAME": "fabric"}
    jobs: list[TorchJob] = []
    try:
        store = TorchJob(
            workdir / "store", [str(JOBS / "tcpstore_server.py"), "--port", "29501"], popen=popen_in(node0)
        )
        jobs.append(store)
        gloo_args = [
            "--nnodes=2",
            "--nproc-per-node=1",
            "--rdzv-id=gloo2node",
            f"--master-addr={node0.fabric_v4}",
            "--master-port=29500",
            str(JOBS / "gloo_worker.py"),
        ]
        gloo = [
            TorchJob(
                workdir / f"gloo{rank}",
                torchrun(f"--node-rank={rank}", *gloo_args),
                env=env,
                popen=popen_in(node),
            )
            for rank, node in enumerate(c.nodes)
        ]
        jobs += gloo
        rpc = TorchJob(
            workdir / "rpc",
            torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "rpc_worker.py")),
            ranks=2,
            env=env,
            popen=popen_in(node0),
        )
        jobs.append(rpc)
        ready = {
            "store": store.wait_ready(),
            "gloo0": gloo[0].wait_ready(),
            "gloo1": gloo[1].wait_ready(offset=1),
            "rpc": rpc.wait_ready(),
        }
        inventories = []
        for node in c.nodes:
            result = netaudit(node.ns, "probe", "--format", "json", "--namespaces", "own", *INTENDED)
            assert result.returncode in (0, 3), result.stderr
            path = workdir / f"{node.hostname}.json"
            path.write_text(result.stdout)
            inventories.append(path)
        yield World(c, inventories, rpc, ready, workdir)
    finally:
        for job in jobs:
            job.release()
        for job in jobs:
            job.stop()


def targets(c: Cluster) -> list[str]:
    return [address for node in c.nodes for address in node.addresses()]


def findings(report: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if all(f[k] == v for k, v in match.items())]


@pytest.fixture(scope="module")
def outside_scan(world: World) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    inventories = [arg for path in world.inventories for arg in ("--inventory", str(path))]
    result = netaudit(
        world.cluster.outside.ns,
        "scan",
        *inventories,
        *targets(world.cluster),
        *INTENDED,
        *FAST,
        "--format",
        "json",
    )
    return result, report_of(result)


def test_inventories_name_the_jobs(world: World) -> None:
    node0 = json.loads(world.inventories[0].read_text())
    assert node0["host"] == "node0"
    services = {(item["service"], item["variant"]) for item in node0["listeners"] if item["service"]}
    assert ("tcpstore", "agent-worker-store") in services
    assert ("rpc-tensorpipe", "listener") in services
    assert ("c10d-gloo", "pair-listener") in services
    rpc = [item for item in node0["listeners"] if item["service"] == "rpc-tensorpipe"]
    assert len(rpc) == 34 and all(item["address"] == "198.18.0.11" for item in rpc)


def test_outside_scan_finds_the_stores_and_confirms_them(outside_scan: Any, world: World) -> None:
    result, report = outside_scan
    assert result.returncode == 1, result.stderr
    assert report["vantage"]["mode"] == "syn"
    master = findings(report, rule_id="NA001", port=29500, address="198.51.100.11")
    assert master and master[0]["severity"] == "critical" and master[0]["confirmed"] is True
    assert master[0]["source"] == "203.0.113.10" and master[0]["source_network"] == "203.0.113.0/24"
    assert master[0]["variant"] == "agent-worker-store"
    assert master[0]["doc"] == "docs/rules/NA001.md"
    # dual-stack: reached over IPv6 too, through every address of the namespace
    assert findings(report, rule_id="NA001", port=29500, address="2001:db8:51::11")
    assert findings(report, rule_id="NA001", port=29500, address="198.18.0.11")


def test_ipv4_only_firewall_leaves_ipv6_exposed(outside_scan: Any) -> None:
    _result, report = outside_scan
    assert findings(report, rule_id="NA001", port=29501, address="2001:db8:51::11", confirmed=True)
    assert not findings(report, rule_id="NA001", port=29501, address="198.51.100.11")
    # the IPv4 attempts were filtered, yet no NA010: the same listener is already reached over
    # IPv6, and the critical finding says all there is to say
    v4 = [a for e in report["endpoints"] if e["port"] == 29501 and e["address"] == "198.51.100.11"
          for a in e["attempts"] if a["source"] == "203.0.113.10"]  # fmt: skip
    assert v4 and all(a["state"] == "filtered" for a in v4)
    assert not findings(report, rule_id="NA010", port=29501)


def test_weak_host_model_exposes_fabric_bound_listeners(outside_scan: Any) -> None:
    _result, report = outside_scan
    gloo = findings(report, rule_id="NA003", host="node0", address="198.18.0.11")
    assert gloo and gloo[0]["severity"] == "high" and gloo[0]["confirmed"] is None
    rpc = findings(report, rule_id="NA002", host="node0")
    assert len({f["port"] for f in rpc}) == 34  # two workers x 17 listeners, SYN only
    assert all(f["confirmed"] is None and f["state"] == "open" for f in rpc)


def test_listener_reachable_only_from_inside_is_not_reported(outside_scan: Any, world: World) -> None:
    _result, report = outside_scan
    assert not findings(report, rule_id="NA003", host="node1")
    # but the inventory says it answers on the fabric, and only a firewall stops outsiders:
    # one NA010 for the listener, whatever the number of addresses and sources that tried
    guarded = findings(report, rule_id="NA010", host="node1", service="c10d-gloo")
    assert len(guarded) == 1 and guarded[0]["state"] == "filtered" and guarded[0]["severity"] == "medium"
    inside = netaudit(
        world.cluster.nodes[0].ns,
        "scan",
        "--inventory",
        str(world.inventories[1]),
        *world.cluster.nodes[1].addresses(),
        *INTENDED,
        *FAST,
        "--source",
        "fabric",
        "--format",
        "json",
    )
    report_inside = report_of(inside)
    reached = [
        a
        for e in report_inside["endpoints"]
        if e["service"] == "c10d-gloo"
        for a in e["attempts"]
        if a["state"] == "open"
    ]
    assert reached, "the inside source must reach node1's Gloo listener"
    assert not [f for f in report_inside["findings"] if f["rule_id"] in ("NA001", "NA002", "NA003", "NA004")]


def test_trust_scope_job_reports_other_tenants(world: World) -> None:
    node1 = world.cluster.nodes[1]
    inventories = [arg for path in world.inventories for arg in ("--inventory", str(path))]
    result = netaudit(
        node1.ns,
        "scan",
        *inventories,
        world.cluster.nodes[0].fabric_v4,
        *INTENDED,
        *FAST,
        "--source",
        "fabric",
        "--trust-scope",
        "job",
        "--format",
        "json",
    )
    report = report_of(result)
    # node1 shares the 2-node Gloo job (run id gloo2node) with node0, but not node0's RPC
    # job: for that one it is another tenant inside the intended subnet.
    rpc = findings(report, rule_id="NA011", service="rpc-tensorpipe")
    assert rpc and rpc[0]["severity"] == "critical" and rpc[0]["source"] == "198.18.0.12"
    assert not findings(report, rule_id="NA011", service="c10d-gloo")
    assert not findings(report, rule_id="NA011", port=29500)


def test_rpc_job_survives_the_scan(outside_scan: Any, world: World) -> None:
    # Given the SYN scan above touched all 34 TensorPipe listeners
    assert outside_scan[0].returncode == 1
    # When the job continues, RPC between the workers still works and the job exits cleanly
    assert world.rpc.finish() == 0, world.rpc.output()
    again = world.rpc.wait_ready(timeout_s=5, offset=1000)
    assert again[0]["answer"] == 9 and again[1]["answer"] == 9


def test_plain_targets_confirm_stores_and_never_decoys(world: World) -> None:
    node0, node1 = world.cluster.nodes
    result = netaudit(
        world.cluster.outside.ns, "scan", node0.mgmt_v4, node1.mgmt_v4, *INTENDED, *FAST, "--format", "json"
    )
    report = report_of(result)
    store = findings(report, address=node0.mgmt_v4, port=29500)
    assert store and store[0]["rule_id"] == "NA001" and store[0]["confirmed"] is True
    decoy = findings(report, address=node1.mgmt_v4, port=29400)
    assert decoy and decoy[0]["rule_id"] == "NA012" and decoy[0]["confirmed"] is False
    assert decoy[0]["severity"] == "low"


def test_without_raw_sockets_only_safe_listeners_are_connected(world: World) -> None:
    inventories = [arg for path in world.inventories for arg in ("--inventory", str(path))]
    no_raw = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw"]
    result = netaudit(
        world.cluster.outside.ns,
        "scan",
        *inventories,
        *targets(world.cluster),
        *INTENDED,
        *FAST,
        "--format",
        "json",
        prefix=no_raw,
    )
    report = report_of(result)
    assert report["vantage"]["mode"] == "connect"
    assert "no raw-socket privilege" in result.stderr
    endpoints = report["endpoints"]
    tensorpipe = [a for e in endpoints if e["service"] == "rpc-tensorpipe" for a in e["attempts"]]
    assert tensorpipe and all(a["state"] == "not-tested" and a["method"] == "none" for a in tensorpipe)
    stores = [
        a
        for e in endpoints
        if e["service"] == "tcpstore" and e["port"] == 29500
        for a in e["attempts"]
        if a["source"] == "203.0.113.10"
    ]
    assert any(a["state"] == "open" and a["method"] == "connect" for a in stores)
    assert report["incomplete"], "not-tested attempts make the run incomplete"
    assert result.returncode == 1  # a critical finding outranks the incompleteness


def test_dry_run_sends_nothing(world: World) -> None:
    node0 = world.cluster.nodes[0]
    node0.ns.nft(
        "table inet netaudit_count {\n"
        "  counter syns { }\n"
        "  chain input {\n    type filter hook input priority -10;\n"
        "    tcp flags syn tcp dport 29500 counter name syns\n  }\n"
        "}\n"
    )
    result = netaudit(
        world.cluster.outside.ns,
        "scan",
        "--inventory",
        str(world.inventories[0]),
        node0.mgmt_v4,
        *INTENDED,
        "--dry-run",
        "--format",
        "json",
    )
    report = report_of(result)
    counter = node0.ns.run(["nft", "list", "counter", "inet", "netaudit_count", "syns"]).stdout
    assert "packets 0 " in counter
    assert result.returncode == 0 and report["summary"]["probes_sent"] == 0
    assert report["endpoints"] and all(
        a["state"] == "not-tested" for e in report["endpoints"] for a in e["attempts"]
    )
    real = netaudit(
        world.cluster.outside.ns,
        "scan",
        "--inventory",
        str(world.inventories[0]),
        node0.mgmt_v4,
        *INTENDED,
        *FAST,
        "--format",
        "json",
    )
    counter = node0.ns.run(["nft", "list", "counter", "inet", "netaudit_count", "syns"]).stdout
    assert "packets 0 " not in counter and real.returncode == 1
    node0.ns.run(["nft", "delete", "table", "inet", "netaudit_count"])


def test_ctrl_c_stops_cleanly_and_reports(world: World) -> None:
    node1 = world.cluster.nodes[1]
    # node1's ephemeral range is filtered from outside: a long timeout keeps the scan busy
    command = [
        "ip",
        "netns",
        "exec",
        world.cluster.outside.ns.name,
        sys.executable,
        "-m",
        "netaudit",
        "scan",
        node1.mgmt_v4,
        "--port",
        "40000-40400",
        "--timeout",
        "20",
        "--retries",
        "0",
        "--rate",
        "100",
        "--format",
        "json",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    time.sleep(1.5)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=15)
    assert time.monotonic() - started < 5
    assert process.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["summary"]["is_interrupted"] is True
    states = report["summary"]["attempts"]
    assert states["not-tested"] > 0
