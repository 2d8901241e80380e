"""Golden files: every renderer's output for one rich, fixed report (and the inventory table
for one small inventory), compared byte for byte with tests/golden/.

A renderer change shows up here as a diff a reviewer can read. When the change is meant,
rewrite the files with ``NETAUDIT_UPDATE_GOLDEN=1 python -m pytest -q tests/unit/test_golden_reports.py``
and read the diff before committing it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netaudit import jsonout
from netaudit.models import (
    Attempt,
    BaselineChanges,
    BindScope,
    Classification,
    Confidence,
    CveEvidence,
    Endpoint,
    ExposureHint,
    Family,
    Finding,
    Gap,
    GapKind,
    InterfaceAddress,
    Inventory,
    JobIdentity,
    Listener,
    ListenerSource,
    Method,
    NetNamespace,
    PortState,
    Privilege,
    ProcessInfo,
    Report,
    ScopeSummary,
    Severity,
    VantageSource,
)
from netaudit.report import inventory_table, junit, prometheus, report_json, report_table, sarif
from netaudit.status import ExitStatus

GOLDEN = Path(__file__).parents[1] / "golden"
UPDATE = os.environ.get("NETAUDIT_UPDATE_GOLDEN") == "1"
WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NETNS = 4026531840
OUT_V4, OUT_V6, INSIDE_V4 = "203.0.113.10", "2001:db8:113::10", "198.51.100.5"
NET_V4, NET_V6 = "203.0.113.0/24", "2001:db8:113::/64"


def _process(pid: int, name: str, job: JobIdentity, *cmdline: str) -> ProcessInfo:
    return ProcessInfo(
        pid=pid, ppid=1, name=name, uid=1000, user="alice", cmdline=cmdline, netns=NETNS,
        environment=(), threads=(), libraries=("libtorch_cpu.so",), cgroup=None, job=job,
    )  # fmt: skip


def _classification(
    service: str, variant: str, risk: Severity, *, do_not_touch: bool = False
) -> Classification:
    return Classification(
        signature=service, service=service, variant=variant, confidence=Confidence.HIGH,
        evidence=(f"process {variant}",), risk=risk, is_do_not_touch=do_not_touch,
        is_connect_safe=not do_not_touch, handshake="tcpstore-ping" if service == "tcpstore" else None,
    )  # fmt: skip


def _listener(
    family: Family, address: str, port: int, process: ProcessInfo, found: Classification
) -> Listener:
    return Listener(
        netns=NETNS, family=family, address=address, port=port, inode=port, source=ListenerSource.NETLINK,
        v6only=False if family is Family.IPV6 else None, backlog=128, uid=1000, pid=process.pid,
        pids=(process.pid,), process=process, classification=found,
    )  # fmt: skip


def _attempt(source: str, state: PortState, reason: str, **extra: object) -> Attempt:
    method = Method.NONE if state is PortState.NOT_TESTED else Method.SYN
    verified = state in (PortState.OPEN, PortState.CLOSED)
    fields: dict[str, object] = {"rtt_ms": None, "is_local_path": False, "is_path_verified": verified}
    fields.update(extra)
    return Attempt(source, state, method, reason, vantage="admin", **fields)  # type: ignore[arg-type]


def _finding(rule: str, title: str, severity: Severity, endpoint: Endpoint, attempt: Attempt,
             network: str, evidence: tuple[str, ...], **extra: object) -> Finding:  # fmt: skip
    found = endpoint.classification
    assert found is not None
    listener = endpoint.listener
    process = listener.process if listener else None
    fields: dict[str, object] = {
        "rule_id": rule, "title": title, "severity": severity, "service": found.service,
        "variant": found.variant, "host": endpoint.host, "address": endpoint.address,
        "family": endpoint.family, "port": endpoint.port, "source": attempt.source,
        "source_network": network, "state": attempt.state, "confirmed": attempt.confirmed,
        "pid": process.pid if process else None, "process_name": process.name if process else None,
        "user": process.user if process else None, "job": process.job if process else None,
        "remediation": f"bind {found.service} to the fabric and firewall it",
        "doc": f"docs/rules/{rule}.md", "evidence": evidence, "vantage": "admin",
    }  # fmt: skip
    fields.update(extra)
    return Finding(**fields)  # type: ignore[arg-type]


def rich_report() -> Report:
    """Two nodes over IPv4 and IPv6 from an outside vantage: every state, a filter that no
    canary verified, an accepted finding, an NA010, gaps, notes and baseline changes."""
    job = JobIdentity(slurm_job_id="4242", slurm_job_user="alice", rank=0, world_size=2,
                      master_addr="node01", master_port=29500, torch_version="2.13.0+cpu")  # fmt: skip
    trainer = _process(4242, "python3", job, "torchrun", "--nproc-per-node=1", "train.py")
    rpc = _process(
        4250, "python3", JobIdentity(slurm_job_id="4243", torch_version="2.2.1"), "python3", "rpc_worker.py"
    )
    gloo = _process(
        5001, "python3", JobIdentity(slurm_job_id="4242", rank=1, world_size=2), "python3", "train.py"
    )
    store = _listener(
        Family.IPV6, "::", 29500, trainer, _classification("tcpstore", "rank0-store", Severity.CRITICAL)
    )
    tensorpipe = _listener(
        Family.IPV4, "198.51.100.11", 41001, rpc,
        _classification("rpc-tensorpipe", "worker", Severity.CRITICAL, do_not_touch=True),
    )  # fmt: skip
    gloo_v4 = _listener(
        Family.IPV4, "198.51.100.12", 38001, gloo, _classification("c10d-gloo", "pair", Severity.HIGH)
    )
    gloo_v6 = _listener(
        Family.IPV6, "2001:db8:51::12", 38002, gloo, _classification("c10d-gloo", "pair", Severity.HIGH)
    )
    no_route = "not tested: no route from 2001:db8:113::10: 2001:db8:51::11 is routed through eth0, not eth1"
    endpoints = (
        Endpoint("node01", "198.51.100.11", Family.IPV4, 29500, store, 12.25, True, (
            _attempt(OUT_V4, PortState.OPEN, "syn-ack", rtt_ms=0.412, confirmed=True,
                     detail="VALIDATE+PING: nonce echoed"),
            _attempt(INSIDE_V4, PortState.OPEN, "syn-ack", rtt_ms=0.108),
        )),
        Endpoint("node01", "198.51.100.11", Family.IPV4, 41001, tensorpipe, 12.25, True, (
            _attempt(OUT_V4, PortState.OPEN, "syn-ack", rtt_ms=0.398),
        )),
        Endpoint("node01", "2001:db8:51::11", Family.IPV6, 29500, store, 12.25, True, (
            _attempt(OUT_V6, PortState.OPEN, "syn-ack", rtt_ms=0.5, confirmed=True,
                     detail="VALIDATE+PING: nonce echoed"),
        )),
        Endpoint("node01", "2001:db8:51::11", Family.IPV6, 41001, tensorpipe, 12.25, True, (
            _attempt(OUT_V6, PortState.NOT_TESTED, no_route),
        )),
        Endpoint("node02", "198.51.100.12", Family.IPV4, 29400, None, None, True, (
            _attempt(OUT_V4, PortState.CLOSED, "rst", rtt_ms=0.301),
        )),
        Endpoint("node02", "198.51.100.12", Family.IPV4, 38001, gloo_v4, 30.0, True, (
            _attempt(OUT_V4, PortState.FILTERED, "no answer within 1.000 s (1 retry)"),
        )),
        Endpoint("node02", "2001:db8:51::12", Family.IPV6, 29400, None, None, True, (
            _attempt(OUT_V6, PortState.FILTERED, "icmp6 admin-prohibited from 2001:db8:51::1",
                     is_path_verified=True),
        )),
        Endpoint("node02", "2001:db8:51::12", Family.IPV6, 38002, gloo_v6, 30.0, True, (
            _attempt(OUT_V6, PortState.OPEN, "syn-ack", rtt_ms=0.47),
        )),
    )  # fmt: skip
    e_store4, e_rpc4, e_store6, _rpc6, _default4, e_gloo4, _default6, e_gloo6 = endpoints
    findings = (
        _finding("NA001", "TCPStore reachable from outside the intended subnets", Severity.CRITICAL,
                 e_store4, e_store4.attempts[0], NET_V4,
                 ("syn from 203.0.113.10 (eth1, 203.0.113.0/24): open (syn-ack), rtt 0.412 ms",
                  "handshake: VALIDATE+PING: nonce echoed", "inventory: tcpstore/rank0-store (high)",
                  "listener bound to [::]:29500 on node01"), baseline_state="unchanged"),
        _finding("NA001", "TCPStore reachable from outside the intended subnets", Severity.CRITICAL,
                 e_store6, e_store6.attempts[0], NET_V6,
                 ("syn from 2001:db8:113::10 (eth1, 2001:db8:113::/64): open (syn-ack), rtt 0.500 ms",
                  "handshake: VALIDATE+PING: nonce echoed", "inventory: tcpstore/rank0-store (high)",
                  "listener bound to [::]:29500 on node01"), baseline_state="new"),
        _finding("NA002", "RPC (TensorPipe) listener reachable from outside", Severity.CRITICAL,
                 e_rpc4, e_rpc4.attempts[0], NET_V4,
                 ("syn from 203.0.113.10 (eth1, 203.0.113.0/24): open (syn-ack), rtt 0.398 ms",
                  "inventory: rpc-tensorpipe/worker (high)"), baseline_state="new",
                 cves=(CveEvidence("CVE-2024-5480", "torch", "2.2.1", "local", "2.2.2", False,
                                   "torch.distributed.rpc runs the functions a caller sends",
                                   "https://nvd.nist.gov/vuln/detail/CVE-2024-5480"),)),
        _finding("NA003", "c10d Gloo listener reachable from outside", Severity.HIGH,
                 e_gloo6, e_gloo6.attempts[0], NET_V6,
                 ("syn from 2001:db8:113::10 (eth1, 2001:db8:113::/64): open (syn-ack), rtt 0.470 ms",),
                 accepted="lab subnet, ticket OPS-1234", accepted_until="2027-01-31",
                 baseline_state="unchanged"),
        _finding("NA010", "listener answers on outside addresses, only a firewall stops it", Severity.MEDIUM,
                 e_gloo4, e_gloo4.attempts[0], NET_V4,
                 ("syn from 203.0.113.10 (eth1, 203.0.113.0/24): filtered (no answer within 1.000 s (1 retry))",
                  "filtered from outside on 1 attempts (203.0.113.10 -> 198.51.100.12)",
                  "unverified: no canary answered on these paths, so a firewall dropping "
                  "everything and a path that goes nowhere look the same"), baseline_state="new",
                 is_unverified=True),
    )  # fmt: skip
    gaps = (
        Gap("node03", GapKind.HOST_DOWN, "host unreachable (ICMP from 198.51.100.1): the host is down"),
        Gap(None, GapKind.NOT_TESTED, "1 endpoint(s) that no outside source of their family could test"),
    )
    changes = BaselineChanges(
        new=tuple(sorted(f.baseline_key for f in findings if f.baseline_state == "new")),
        unchanged=tuple(sorted(f.baseline_key for f in findings if f.baseline_state == "unchanged")),
        resolved=("NA003|node02|c10d-gloo|ipv4|203.0.113.0/24",),
        new_failures=(gaps[0].text,),
        resolved_failures=("node04: host unreachable (ICMP from 198.51.100.1): the host is down",),
        is_first_run=False,
    )
    return Report(
        generated_at=WHEN, netaudit_version="0.1.0", vantage_host="admin", mode="syn",
        sources=(VantageSource(OUT_V4, "eth1", NET_V4, False), VantageSource(OUT_V6, "eth1", NET_V6, False),
                 VantageSource(INSIDE_V4, "eth0", "198.51.100.0/24", True)),
        intended_subnets=("198.51.100.0/24", "2001:db8:51::/48"), trust_scope="subnet",
        fail_on=Severity.HIGH, findings=tuple(sorted(findings, key=lambda f: f.sort_key)),
        endpoints=endpoints, gaps=gaps,
        notes=("CIDR targets filter the inventories' addresses and are not swept: hosts without an "
               "inventory are swept only when named",),
        duration_s=2.5, probes_sent=9, failed_hosts=("node03",), changes=changes,
        scope=ScopeSummary(derived_from="inventories+targets", nodes=2, addresses_ipv4=2, addresses_ipv6=2,
                           filters=("node03",), swept_addresses=1),
    )  # fmt: skip


def small_inventory() -> Inventory:
    job = JobIdentity(
        slurm_job_id="4242", rank=0, world_size=2, master_port=29500, torch_version="2.13.0+cpu"
    )
    trainer = _process(4242, "pt_elastic", job, "python3", "-m", "torch.distributed.run", "train.py")
    store = Listener(
        netns=NETNS, family=Family.IPV6, address="::", port=29500, inode=7, source=ListenerSource.NETLINK,
        v6only=False, backlog=4096, uid=1000, pid=4242, pids=(4242,), process=trainer,
        classification=_classification("tcpstore", "agent-store", Severity.CRITICAL),
        exposure=ExposureHint(BindScope.DUAL_STACK, ("198.51.100.11", "203.0.113.11"), ("203.0.113.11",),
                              "dual-stack wildcard"),
    )  # fmt: skip
    rpc = Listener(
        netns=NETNS, family=Family.IPV4, address="198.51.100.11", port=41001, inode=8,
        source=ListenerSource.NETLINK, v6only=None, backlog=128, uid=1000, pid=4242, pids=(4242,),
        process=trainer, classification=_classification("rpc-tensorpipe", "worker", Severity.CRITICAL,
                                                        do_not_touch=True),
        exposure=ExposureHint(BindScope.SPECIFIC, ("198.51.100.11",), (), "weak host model"),
    )  # fmt: skip
    sshd = Listener(
        netns=NETNS, family=Family.IPV4, address="0.0.0.0", port=22, inode=9, source=ListenerSource.PROCFS,
        v6only=None, backlog=None, uid=0, pid=None, pids=(), process=None,
        exposure=ExposureHint(BindScope.WILDCARD_V4, ("198.51.100.11",), (), "wildcard"),
    )  # fmt: skip
    interfaces = (
        InterfaceAddress("eth0", Family.IPV4, "198.51.100.11", 24, False, False),
        InterfaceAddress("eth1", Family.IPV4, "203.0.113.11", 24, False, False),
        InterfaceAddress("lo", Family.IPV4, "127.0.0.1", 8, True, False),
    )
    return Inventory(
        host="node01", collected_at=WHEN, netaudit_version="0.1.0",
        privilege=Privilege(is_root=False, can_enter_namespaces=False, can_read_all_processes=False),
        intended_subnets=("198.51.100.0/24",),
        namespaces=(NetNamespace(NETNS, True, (), 120, ListenerSource.NETLINK, interfaces),),
        listeners=(store, rpc, sshd), gaps=("not root: owners of other users' sockets are not visible",),
    )  # fmt: skip


RENDERINGS = {
    "report.table.txt": lambda: report_table.render(rich_report()),
    "report.changes.txt": lambda: report_table.render_changes(rich_report()),
    "report.json": lambda: jsonout.dumps(report_json.to_json(rich_report()), len(rich_report().endpoints)),
    "report.sarif.json": lambda: jsonout.dumps(sarif.to_sarif(rich_report()), len(rich_report().findings)),
    "report.junit.xml": lambda: junit.to_junit(rich_report()),
    "report.prom": lambda: prometheus.render(rich_report(), ExitStatus.FINDINGS),
    "inventory.table.txt": lambda: inventory_table.render(small_inventory()),
}


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_rendering_matches_its_golden_file(name: str) -> None:
    rendered = RENDERINGS[name]().encode()
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(rendered)
        pytest.skip(f"rewrote {path}")
    assert path.exists(), f"{path} is missing: run with NETAUDIT_UPDATE_GOLDEN=1 to create it"
    expected = path.read_bytes()
    assert rendered.decode().splitlines() == expected.decode().splitlines()  # a readable diff first
    assert rendered == expected


def test_a_peer_reads_back_every_report_this_netaudit_writes() -> None:
    """fanout.scan_from merges the JSON reports peers print: the reader must take every key
    the writer writes, or a peer's whole contribution is lost to one new field."""
    from netaudit.report import report_read

    original = rich_report()
    read = report_read.loads(jsonout.dumps(report_json.to_json(original), len(original.endpoints)), "peer")
    assert [(e.host, e.address, e.port) for e in read.endpoints] == [
        (e.host, e.address, e.port) for e in original.endpoints
    ]
    assert [a for e in read.endpoints for a in e.attempts] == [
        a for e in original.endpoints for a in e.attempts
    ]
    assert [(f.rule_id, f.is_unverified) for f in read.findings] == [
        (f.rule_id, f.is_unverified) for f in original.findings
    ]
    assert read.gaps == original.gaps
