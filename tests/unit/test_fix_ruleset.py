"""`netaudit fix` without a lab: what it closes, how it names cgroups, and a ruleset that the real
nft accepts (checked with `nft -c` in a network namespace of its own)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from netaudit import cgroupmap, inventory_json, signatures
from netaudit.fix import cgroups, closing, nftables
from tests.cli.helpers import run
from tests.cli.inventories import node, two_nodes, write
from tests.unit.factories import finding

LOADED = signatures.load()


def test_findings_to_close_skip_accepted_and_name_what_a_subnet_rule_cannot_close() -> None:
    found = closing.from_findings(
        [
            finding(),  # NA001 tcpstore on 29500: a fixed port
            finding(rule_id="NA003", service="c10d-gloo", port=41234),
            finding(rule_id="NA003", service="c10d-gloo", port=41234, source="203.0.113.11"),  # same listener
            finding(port=29501, accepted="ticket OPS-1", accepted_until="2027-01-01"),
            finding(rule_id="NA011", port=29502),
            finding(rule_id="NA030", port=29503),  # the gate's: not a network exposure
        ],
        LOADED,
    )
    assert [(o.service, o.port, o.is_fixed_port) for o in found.openings] == [
        ("tcpstore", 29500, True),
        ("c10d-gloo", 41234, False),
    ]
    assert len(found.notes) == 1 and found.notes[0].startswith("1 NA011 finding(s) not closed")


def test_inventories_close_what_answers_beyond_loopback_with_its_cgroup(tmp_path: Path) -> None:
    first, _second = two_nodes(tmp_path)
    inventory = inventory_json.from_json(json.loads(first.read_text()), str(first))
    found = closing.from_inventories([inventory], LOADED)
    assert {(o.service, o.port) for o in found.openings} == {("tcpstore", 29500), ("c10d-gloo", 40001)}
    assert cgroups.infer(o.cgroup for o in found.openings) == ("/system.slice/slurmstepd.scope",)


@pytest.mark.parametrize(
    ("cgroup", "ancestor"),
    [
        ("/system.slice/slurmstepd.scope/job_42/step_0/user/task_0", "/system.slice/slurmstepd.scope"),
        ("/slurm/uid_1000/job_42/step_batch", "/slurm/uid_1000"),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/job_42", None),
    ],
)
def test_job_ancestor(cgroup: str, ancestor: str | None) -> None:
    assert cgroups.job_ancestor(cgroup) == ancestor


def test_job_cgroup_paths_for_nft() -> None:
    pure = cgroups.job_cgroup("/system.slice/slurmstepd.scope", "/sys/fs/cgroup")
    assert pure == cgroups.JobCgroup("/system.slice/slurmstepd.scope", 2, "system.slice/slurmstepd.scope")
    hybrid = cgroups.job_cgroup("/system.slice/slurmstepd.scope", "/sys/fs/cgroup/unified")
    assert hybrid == cgroups.JobCgroup(
        "/system.slice/slurmstepd.scope", 2, "unified/system.slice/slurmstepd.scope"
    )
    assert "outside /sys/fs/cgroup" in str(cgroups.job_cgroup("/x", "/mnt/cg2"))
    assert "without '..'" in str(cgroups.job_cgroup("/a/../../etc", "/sys/fs/cgroup"))
    assert "not a cgroup path" in str(cgroups.job_cgroup('/a"b', "/sys/fs/cgroup"))


def _ruleset(**changes: object) -> nftables.Ruleset:
    base = nftables.Ruleset(
        allowed=(ipaddress.ip_network("198.18.0.0/16"), ipaddress.ip_network("2001:db8:18::/48")),
        fixed_ports=(29500, 29400, 29401),
        cgroups=(),
        job_ports=(40001, 40002, 40003, 45000),
        comments=("a comment",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_render_judges_only_new_connections_and_both_families() -> None:
    text = nftables.render(_ruleset())
    assert text.startswith("# a comment\ntable inet netaudit\ndelete table inet netaudit\n")
    assert "elements = { 29400-29401, 29500 }" in text and "elements = { 40001-40003, 45000 }" in text
    assert "tcp flags & (fin | syn | rst | ack) != syn accept" in text
    for ports in ("@fixed_ports", "@job_ports"):
        assert f"tcp dport {ports} meta nfproto ipv4 ip saddr != @allowed_v4 counter drop" in text
        assert f"tcp dport {ports} meta nfproto ipv6 ip6 saddr != @allowed_v6 counter drop" in text


def test_no_ipv6_subnet_allows_no_ipv6_source() -> None:
    text = nftables.render(_ruleset(allowed=(ipaddress.ip_network("198.18.0.0/16"),)))
    v6_set = text.split("set allowed_v6 {", 1)[1].split("}", 1)[0]
    assert "elements" not in v6_set  # an empty set: every IPv6 source is outside
    assert "ip6 saddr != @allowed_v6 counter drop" in text


needs_nft = pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs root, nft and unshare (nft -c in a network namespace of its own)",
)


@needs_nft
def test_nft_accepts_the_ruleset_with_a_cgroup_rule() -> None:
    mount = cgroupmap.node_mount()
    if mount is None:
        pytest.skip("no cgroup v2 mount")
    assert isinstance(cgroups.job_cgroup("/", mount), str)  # the root itself is refused
    child = f"/netaudit-unit-{uuid.uuid4().hex[:8]}"
    os.mkdir(mount + child)
    try:
        job = cgroups.job_cgroup(child, mount)
        assert isinstance(job, cgroups.JobCgroup)
        text = nftables.render(_ruleset(cgroups=(job,), job_ports=()))
        checked = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=text, capture_output=True,
                                 text=True, timeout=30, check=False)  # fmt: skip
    finally:
        os.rmdir(mount + child)
    assert checked.returncode == 0, checked.stderr
    assert f'socket cgroupv2 level 1 "{job.nft_path}"' in text


@needs_nft
def test_fix_cli_from_inventories(tmp_path: Path) -> None:
    first, second = two_nodes(tmp_path)
    out = tmp_path / "netaudit.nft"
    result = run("fix", "--inventory", str(first), "--inventory", str(second), "--intended-subnet", "198.18.0.0/16",
                 "--intended-subnet", "2001:db8:18::/48", "--output", str(out))  # fmt: skip
    assert result.status == 0, result.stderr
    text = out.read_text()
    assert "GLOO_SOCKET_IFNAME=fabric" in text  # the interface of the intended subnet, from the inventory
    assert 'socket cgroupv2 level 2 "' in text and "slurmstepd.scope" in text
    assert (out.stat().st_mode & 0o777) == 0o600


def test_fix_cli_refuses_without_intended_subnets_and_bad_reports(tmp_path: Path) -> None:
    first, _ = two_nodes(tmp_path)
    result = run("fix", "--inventory", str(first))
    assert result.status == 2 and "--intended-subnet: needed" in result.stderr
    bad = tmp_path / "report.json"
    bad.write_text('{"kind": "netaudit.report", "schema_version": 1, "findings": [')
    result = run("fix", "--report", str(bad), "--intended-subnet", "198.18.0.0/16")
    assert result.status == 2 and str(bad) in result.stderr and "Traceback" not in result.stderr
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    result = run("fix", "--report", str(fifo), "--intended-subnet", "198.18.0.0/16")
    assert result.status == 2 and "a FIFO, not a regular file" in result.stderr


def test_fix_writes_cgroup_paths_for_the_mount_the_nodes_recorded(tmp_path: Path) -> None:
    # Given nodes whose probe recorded a hybrid v1/v2 host's mount (RHEL 8's default layout)
    hybrid = [replace(node(f"node0{i}", i), cgroup2_mount="/sys/fs/cgroup/unified") for i in (1, 2)]
    paths = [write(tmp_path / f"{n.host}.json", n) for n in hybrid]
    out = tmp_path / "hybrid.nft"
    args = ["fix", "--intended-subnet", "198.18.0.0/16", "--no-check", "--output", str(out)]
    result = run(*args, *(f"--inventory={p}" for p in paths))
    # then the rule's path carries unified/ and the level counts from the v2 root
    assert result.status == 3, result.stderr  # 3: --no-check, so not checked
    text = out.read_text()
    assert 'socket cgroupv2 level 2 "unified/system.slice/slurmstepd.scope"' in text
    assert "assume cgroup v2 mounted at /sys/fs/cgroup/unified" in text
    # and when the nodes disagree, the most common mount wins and the others are named
    mixed = [*hybrid, replace(node("node03", 3), cgroup2_mount="/sys/fs/cgroup")]
    paths = [write(tmp_path / f"{n.host}.json", n) for n in mixed]
    result = run(*args, *(f"--inventory={p}" for p in paths))
    assert result.status == 3, result.stderr  # 3: --no-check, so not checked
    text = out.read_text()
    assert '"unified/system.slice/slurmstepd.scope"' in text
    assert "write one with --cgroup-mount for node03" in text
    # and --cgroup-mount still decides
    result = run(*args, "--cgroup-mount", "/sys/fs/cgroup", *(f"--inventory={p}" for p in paths))
    assert result.status == 3 and 'level 2 "system.slice/slurmstepd.scope"' in out.read_text()


def test_an_inventorys_cgroup2_mount_must_be_an_absolute_path(tmp_path: Path) -> None:
    for bad in (
        "sys/fs/cgroup",
        "/sys/fs/../../etc",
        "/sys/fs/cgroup\nx",
        '/sys/fs/cgroup/unified"accept#',
        "/a\\b",
    ):
        document = inventory_json.to_json(replace(node("node01", 1), cgroup2_mount=bad))
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(document))
        result = run("fix", "--intended-subnet", "198.18.0.0/16", "--no-check", "--inventory", str(path))
        assert result.status == 2, result.stderr
        assert f"{path}: cgroup2_mount: " in result.stderr and "is not an absolute path" in result.stderr


def test_nothing_that_could_end_the_rules_quoted_path_reaches_it() -> None:
    for path in ('/system.slice/a"accept#', "/system.slice/a\\b", "/system.slice/a b"):
        assert isinstance(cgroups.job_cgroup(path, "/sys/fs/cgroup"), str), path
    assert isinstance(cgroups.job_cgroup("/system.slice/slurmstepd.scope", '/sys/fs/cgroup/u"x#'), str)
    job = cgroups.job_cgroup("/system.slice/slurmstepd.scope", "/sys/fs/cgroup/unified")
    assert isinstance(job, cgroups.JobCgroup) and job.nft_path == "unified/system.slice/slurmstepd.scope"
