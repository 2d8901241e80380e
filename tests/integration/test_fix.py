"""`netaudit fix` closes what the scan found, in a lab: two nodes with a two-node Gloo job (its
store on 29500 of node0, Gloo listeners on the fabric) and an RPC job on node1 (TensorPipe on
ephemeral ports, its torchrun store on a random one), all in one cgroup as Slurm's
slurmstepd.scope would hold them; an outside vantage reaches the fabric through the router.

The generated ruleset is applied in the nodes' namespaces. Then the outside scan must find
nothing open on either family, the running jobs must finish their work, and a new Gloo job
between the nodes (new connections from the intended subnet to new ephemeral ports) must run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netaudit import cgroupmap
from tests.integration._front_door_lab import FAST, INTENDED, probe_inventory
from tests.integration.test_scan_cluster import netaudit
from tests.lab.netlab import Lab, Node, cluster, module_lab_fixture  # noqa: F401
from tests.lab.torchjobs import JOBS, TorchJob, torchrun

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_torch, pytest.mark.slow]

EXPOSURE_RULES = {"NA001", "NA002", "NA003", "NA006", "NA007"}
ENV = {"GLOO_SOCKET_IFNAME": "fabric", "TP_SOCKET_IFNAME": "fabric"}


def _job_cgroup() -> Iterator[str]:
    mount = cgroupmap.node_mount()
    if mount is None or not os.access(mount, os.W_OK):
        pytest.skip("needs a writable cgroup v2 mount (nft's `socket cgroupv2` match)")
    name = f"/netaudit-fix-{uuid.uuid4().hex[:8]}"
    os.mkdir(mount + name)
    try:
        yield name
    finally:
        # SIGKILLed jobs leave their cgroup a moment after their leader is reaped
        deadline = time.monotonic() + 15
        while True:
            try:
                os.rmdir(mount + name)
                break
            except OSError as error:
                if time.monotonic() > deadline:  # a process we started is still in it: say so
                    pytest.fail(f"cgroup {name} left behind: {error}")
                time.sleep(0.1)


def in_cgroup(node: Node, cgroup: str) -> Any:
    """A popen for TorchJob: the job starts in ``node``'s network namespace and in ``cgroup``.
    nsenter --net, unlike `ip netns exec`, keeps the host's /sys, so the cgroup tree is there."""
    procs = f"{cgroupmap.node_mount()}{cgroup}/cgroup.procs"

    def popen(command: list[str], **kw: Any) -> subprocess.Popen[Any]:
        argv = ["nsenter", f"--net=/run/netns/{node.ns.name}", "--", "sh", "-c",
                'echo $$ > "$0" && exec "$@"', procs, *command]  # fmt: skip
        return subprocess.Popen(argv, start_new_session=True, **kw)

    return popen


def gloo_job(workdir: Path, nodes: tuple[Node, Node], cgroup: str, port: int) -> tuple[TorchJob, TorchJob]:
    args = ["--nnodes=2", "--nproc-per-node=1", f"--rdzv-id=fix{port}", f"--master-addr={nodes[0].fabric_v4}",
            f"--master-port={port}", str(JOBS / "gloo_worker.py")]  # fmt: skip
    return tuple(  # type: ignore[return-value]
        TorchJob(
            workdir / f"gloo{port}-{rank}",
            torchrun(f"--node-rank={rank}", *args),
            env=ENV,
            popen=in_cgroup(node, cgroup),
        )
        for rank, node in enumerate(nodes)
    )


def open_exposures(report: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (f["rule_id"], f["address"], f["port"])
        for f in report["findings"]
        if f["rule_id"] in EXPOSURE_RULES and f["state"] == "open"
    }


def test_the_generated_ruleset_closes_every_exposure_and_the_jobs_keep_running(
    module_lab: Lab, tmp_path: Path
) -> None:
    c = cluster(module_lab, nodes=2, ipv6=True, route_fabric_via_mgmt=True)
    node0, node1 = c.nodes
    jobs: list[TorchJob] = []
    cgroup_context = _job_cgroup()
    cgroup = next(cgroup_context)
    try:
        gloo = gloo_job(tmp_path, (node0, node1), cgroup, 29500)
        jobs += gloo
        rpc = TorchJob(tmp_path / "rpc", torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "rpc_worker.py")),
                       ranks=2, env=ENV, popen=in_cgroup(node1, cgroup))  # fmt: skip
        jobs.append(rpc)
        gloo[0].wait_ready()
        gloo[1].wait_ready(offset=1)
        rpc.wait_ready()
        inventories = [probe_inventory(node, tmp_path / f"{node.hostname}.json") for node in c.nodes]
        inventory_args = [arg for path in inventories for arg in ("--inventory", str(path))]

        before = run_scan_json(c, inventory_args)
        exposed = open_exposures(before)
        families = {":" in address for _rule, address, _port in exposed}
        assert {rule for rule, _a, _p in exposed} >= {"NA001", "NA002", "NA003"}, exposed
        assert families == {False, True}, f"lab precondition: exposures over both families, got {exposed}"

        report_path = tmp_path / "before.json"
        report_path.write_text(json.dumps(before))
        rules = tmp_path / "netaudit.nft"
        made = subprocess.run(
            ["nsenter", f"--net=/run/netns/{node0.ns.name}", "--", *PYTHON_NETAUDIT, "fix", "--report",
             str(report_path), *INTENDED, "--cgroup", cgroup, "--output", str(rules)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        text = rules.read_text()
        assert (
            f'socket cgroupv2 level 1 "{os.path.relpath(cgroupmap.node_mount() + cgroup, "/sys/fs/cgroup")}"'
            in text
        )
        assert "ip6 saddr != @allowed_v6" in text and "elements = { 2001:db8:18::/64 }" in text
        for node in c.nodes:
            applied = subprocess.run(["nsenter", f"--net=/run/netns/{node.ns.name}", "--", "nft", "-f", str(rules)],
                                     capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
            assert applied.returncode == 0, applied.stderr

        after = run_scan_json(c, inventory_args)
        assert open_exposures(after) == set(), "still open after the ruleset was applied"
        closed = {(e["address"], e["port"]) for e in after["endpoints"]
                  if any(a["state"] == "filtered" for a in e["attempts"])}  # fmt: skip
        assert {(address, port) for _rule, address, port in exposed} <= closed

        # the running jobs finish their work over the intended subnet (a barrier needs both ranks)
        for job in gloo:
            job.release()
        assert gloo[0].finish() == 0 and gloo[1].finish() == 0, gloo[0].output() + gloo[1].output()
        rpc.release()
        again = rpc.wait_ready(timeout_s=30, offset=1000)
        assert again[0]["answer"] == 9 and again[1]["answer"] == 9
        assert rpc.finish() == 0, rpc.output()
        # and a new job opens new ephemeral ports between the nodes
        fresh = gloo_job(tmp_path, (node0, node1), cgroup, 29501)
        jobs += fresh
        ready = [fresh[0].wait_ready(), fresh[1].wait_ready(offset=1)]
        assert ready[0][0]["sum"] == 2.0 and ready[1][0]["sum"] == 2.0
        for job in fresh:
            job.release()
        assert fresh[0].finish() == 0 and fresh[1].finish() == 0
    finally:
        for job in jobs:
            job.release()
        for job in jobs:
            job.stop()
        next(cgroup_context, None)


PYTHON_NETAUDIT = [
    "env",
    f"PYTHONPATH={Path(__file__).resolve().parents[2]}",
    sys.executable,
    "-m",
    "netaudit",
]


def run_scan_json(c: Any, inventory_args: list[str]) -> dict[str, Any]:
    result = netaudit(
        c.outside.ns, "scan", *inventory_args, *INTENDED, *FAST, "--format", "json", timeout=180
    )
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)
