"""Fan-out for a whole-cluster audit, every scan run inside a lab namespace:

- the command-template method over tens of namespaces, with nodes that fail in every way
  (garbage, foreign JSON, silent exit, hang), then the scheduled-audit cycle on top of it:
  baseline new -> unchanged -> resolved, textfile metrics, per-node verdicts read by the gate;
- real sshd in node namespaces, through plain ssh and through ClusterShell's library, with a
  refused, a hanging and a babbling node;
- peers that run the scan themselves (fanout.scan_from), merged with the vantage named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.netlab import Lab, cluster, lab_fixture, module_lab_fixture  # noqa: F401
from tests.lab.sshlab import SshLab, start_sshlab
from tests.lab.torchjobs import JOBS, TorchJob

pytestmark = [pytest.mark.requires_root, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PYTHON = f"/usr/bin/env PYTHONPATH={REPO} {sys.executable} -m netaudit"
NODES = 24
DISPATCH = """\
import os, sys, time
name = sys.argv[1]
if name.endswith("-garbage"):
    print("Traceback (most recent call last): this is not an inventory")
elif name.endswith("-foreign"):
    print('{"kind": "something.else", "schema_version": 1}')
elif name.endswith("-silent"):
    sys.exit(7)
elif name.endswith("-hang"):
    time.sleep(600)
else:
    os.execvp("ip", ["ip", "netns", "exec", name, sys.executable, "-m", "netaudit", "probe",
                     "--format", "json", "--namespaces", "own"])
"""


def netaudit(ns: Any, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return ns.run([sys.executable, "-m", "netaudit", *argv], check=False, timeout=timeout,
                  env={"PYTHONPATH": str(REPO)}, hostname=False)  # fmt: skip


def metrics(path: Path) -> dict[str, float]:
    return {
        sample.name + json.dumps(sample.labels, sort_keys=True): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


@pytest.mark.requires_torch
def test_command_template_fanout_and_the_scheduled_audit_cycle(lab: Lab, tmp_path: Path) -> None:
    switch = lab.switch("mgmt")
    admin = lab.namespace("admin")
    lab.attach(admin, switch, ["198.51.100.2/24"])
    nodes = []
    for index in range(1, NODES + 1):
        ns = lab.namespace(f"n{index:02d}")
        lab.attach(ns, switch, [f"198.51.100.{10 + index}/24"])
        nodes.append(ns)
    prefix = nodes[0].name.removesuffix("-n01")
    dispatcher = tmp_path / "dispatch.py"
    dispatcher.write_text(DISPATCH)
    state = tmp_path / "state"
    textfile = tmp_path / "textfile"
    verdicts = tmp_path / "verdicts"
    for directory in (state, textfile, verdicts):
        directory.mkdir()
    targets = ", ".join(f'"198.51.100.{10 + i}"' for i in range(1, NODES + 1))
    config = tmp_path / "cron.toml"
    config.write_text(
        'intended_subnets = ["198.18.0.0/24"]\n'
        f"[scan]\ntargets = [{targets}]\ntimeout_s = 0.5\nmax_inventory_age_s = 300\n"
        f'[fanout]\nmethod = "command"\nnodes = "{prefix}-n[01-{NODES}],{prefix}-garbage,{prefix}-foreign,'
        f'{prefix}-silent,{prefix}-hang"\n'
        f'command = "{sys.executable} {dispatcher} %h"\nwidth = 16\ntimeout_s = 10\n'
        f'[output]\nbaseline = "{state}/baseline.json"\ntextfile_dir = "{textfile}"\n'
        f'[gate]\nverdict_path = "{verdicts}/%h.json"\n'
    )
    store = TorchJob(tmp_path / "store", [str(JOBS / "tcpstore_server.py"), "--port", "29500"],
                     popen=lambda cmd, **kw: nodes[0].popen(cmd, hostname=False, **kw))  # fmt: skip
    try:
        store.wait_ready()
        # First run: everything is news
        first = netaudit(admin, "scan", "--config", str(config), "--format", "json")
        report = json.loads(first.stdout)
        assert first.returncode == 1, first.stderr
        failures = {item.split(": ", 1)[0]: item for item in report["incomplete"] if item.startswith(prefix)}
        assert set(failures) == {f"{prefix}-{kind}" for kind in ("garbage", "foreign", "silent", "hang")}
        assert "bad JSON" in failures[f"{prefix}-garbage"]
        assert "foreign JSON" in failures[f"{prefix}-foreign"] and "kind" in failures[f"{prefix}-foreign"]
        assert "exit 7 and no output" in failures[f"{prefix}-silent"]
        assert "timed out after 10 s" in failures[f"{prefix}-hang"]
        assert sorted(report["failed_hosts"]) == sorted(failures)
        store_findings = [f for f in report["findings"] if f["rule_id"] == "NA001"]
        assert (
            store_findings and store_findings[0]["host"] == f"{prefix}-n01" and store_findings[0]["confirmed"]
        ), json.dumps([e for e in report["endpoints"] if e["port"] == 29500])
        assert store_findings[0]["baseline_state"] == "new"
        assert report["changes"]["is_first_run"] is True
        # every healthy node was probed: its listeners were considered (none but the store)
        assert {e["host"] for e in report["endpoints"]} == {f"{prefix}-n01"}
        scraped = metrics(textfile / "netaudit.prom")
        assert scraped['netaudit_findings{"service": "tcpstore", "severity": "critical"}'] >= 1
        assert scraped["netaudit_failed_hosts{}"] == 4
        assert json.loads((verdicts / f"{prefix}-n01.json").read_text())["critical"]
        assert json.loads((verdicts / f"{prefix}-n02.json").read_text())["critical"] == []
        assert (state / "baseline.json").stat().st_mode & 0o777 == 0o600

        # The gate of node n01 reads its verdict and fails; n02's passes
        gate_config = tmp_path / "gate.toml"
        gate_config.write_text("[gate]\ndeadline_s = 10\n")

        def gate(node: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "netaudit", "gate", "--verdict", str(verdicts / "%h.json"),
                 "--config", str(gate_config), "--format", "json"],
                env={"PYTHONPATH": str(REPO), "SLURMD_NODENAME": node}, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip

        # (this machine also runs the lab's store outside any Slurm job: the gate reports that
        # too, as a stale listener; the verdict's reason must be there besides)
        failing = gate(f"{prefix}-n01")
        assert failing.returncode == 1, failing.stderr
        details = json.loads(failing.stdout)["details"]
        assert any(d.startswith("unresolved critical exposure: NA001 tcpstore") for d in details), details
        passing = json.loads(gate(f"{prefix}-n02").stdout)["details"]
        assert not any(d.startswith("unresolved critical exposure") for d in passing)

        # Second run, nothing changed: the table is empty (cron mails nothing), exit 0
        second = netaudit(admin, "scan", "--config", str(config), "--format", "table")
        assert second.returncode == 0, second.stderr
        assert second.stdout == ""
    finally:
        store.finish()
    # Third run: the store is gone, reported as resolved
    third = netaudit(admin, "scan", "--config", str(config), "--format", "table")
    assert third.returncode == 0
    assert "RESOLVED" in third.stdout and f"NA001|{prefix}-n01|tcpstore|ipv" in third.stdout
    scraped = metrics(textfile / "netaudit.prom")
    assert scraped["netaudit_findings_resolved{}"] >= 1
    assert json.loads((verdicts / f"{prefix}-n01.json").read_text())["critical"] == []


@pytest.fixture(scope="module")
def sshlab(module_lab: Lab) -> SshLab:
    c = cluster(module_lab, nodes=4, ipv6=True)
    return start_sshlab(module_lab, c)


def _ssh_config(tmp_path: Path, ssh: SshLab, method: str, extra: str = "") -> Path:
    nodes = ",".join(sorted(ssh.nodes))
    options = json.dumps(ssh.noconfig_args if method == "ssh" else ["-F", str(ssh.config_path)])
    targets = json.dumps([address for node in ssh.cluster.nodes for address in node.addresses()])
    config = tmp_path / f"{method}.toml"
    config.write_text(
        'intended_subnets = ["198.18.0.0/24", "2001:db8:18::/64"]\n'
        f"[scan]\ntargets = {targets}\ntimeout_s = 0.5\n"
        f'[fanout]\nmethod = "{method}"\nnodes = "{nodes}"\ntimeout_s = 8\nwidth = 8\n'
        f"ssh_options = {options}\n"
        f'remote_command = "{PYTHON} probe --format json --namespaces own"\n{extra}'
    )
    return config


@pytest.mark.parametrize("method", ["ssh", "clustershell"])
def test_ssh_fanout_survives_broken_nodes(sshlab: SshLab, tmp_path: Path, method: str) -> None:
    sshlab.stop_node("node1")
    sshlab.hang_node("node2")
    sshlab.bad_output_node("node3", "Welcome to node3! {not json")
    try:
        result = netaudit(sshlab.client_ns, "scan", "--config", str(_ssh_config(tmp_path, sshlab, method)),
                          "--format", "json")  # fmt: skip
    finally:
        for name in ("node1", "node2", "node3"):
            sshlab.reset_node(name)
        sshlab.start_node("node1")
        sshlab.kill_sessions("node2")
    report = json.loads(result.stdout)
    failures = {item.split(": ", 1)[0]: item for item in report["incomplete"] if item.startswith("node")}
    assert set(failures) == {"node1", "node2", "node3"}, report["incomplete"]
    assert "Connection refused" in failures["node1"] or "exit 255" in failures["node1"]
    assert "timed out after 8 s" in failures["node2"]
    assert "bad JSON" in failures["node3"]
    assert result.returncode == 3  # incomplete, and nothing on node0 is exposed
    assert report["failed_hosts"] == ["node1", "node2", "node3"]


@pytest.mark.requires_torch
def test_peers_scan_from_their_own_addresses(sshlab: SshLab, tmp_path: Path) -> None:
    extra = f'scan_from = ["node0"]\nremote_scan_command = "{PYTHON} scan"\n'
    config = _ssh_config(tmp_path, sshlab, "ssh", extra)
    node3 = sshlab.cluster.nodes[3]
    with TorchJob(tmp_path / "store", [str(JOBS / "tcpstore_server.py"), "--port", "29500"],
                  popen=node3.ns.popen) as store:  # fmt: skip
        store.wait_ready()
        result = netaudit(sshlab.client_ns, "scan", "--config", str(config), "--format", "json")
    report = json.loads(result.stdout)
    vantages = {a["vantage"] for e in report["endpoints"] for a in e["attempts"]}
    assert "node0" in vantages and len(vantages) == 2, (vantages, report["incomplete"], report["notes"])
    from_peer = [a for e in report["endpoints"] if e["port"] == 29500 and e["address"] == node3.mgmt_v4
                 for a in e["attempts"] if a["vantage"] == "node0"]  # fmt: skip
    # node0's fabric source has no route of its own to a management address (not tested);
    # its management source reaches the store and confirms it
    by_source = {a["source"]: a for a in from_peer}
    assert set(by_source) == {sshlab.cluster.nodes[0].fabric_v4, sshlab.cluster.nodes[0].mgmt_v4}
    assert by_source[sshlab.cluster.nodes[0].mgmt_v4]["state"] == "open"
    assert by_source[sshlab.cluster.nodes[0].mgmt_v4]["confirmed"] is True
    assert by_source[sshlab.cluster.nodes[0].fabric_v4]["reason"].startswith("no route from")
    peer_findings = [f for f in report["findings"] if f["vantage"] == "node0" and f["port"] == 29500]
    assert peer_findings and peer_findings[0]["rule_id"] == "NA001"
