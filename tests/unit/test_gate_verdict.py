"""The gate's verdict path fails a node only for an exposure that is still there and that no
active job owns (node01 of the CLI fixtures: a dual-stack store of slurm job 4242 on port
29500, Gloo on 198.18.0.1:40001, sshd on 22 with no visible owner)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from netaudit import gate
from netaudit.audit.verdict import Exposure
from tests.cli.inventories import node

STORE_V4 = Exposure("NA001", "tcpstore", "198.18.0.1", 29500, "203.0.113.9")
STORE_V6 = Exposure("NA001", "tcpstore", "2001:db8:18::1", 29500, "2001:db8:99::9")


def judge(exposures: tuple[Exposure, ...], active: set[str], tmp_path: Path) -> tuple[list[str], list[str]]:
    return gate.verdict_reasons(node("node01", 1), exposures, active, proc=str(tmp_path))


def test_still_there_and_its_job_is_gone_fails(tmp_path: Path) -> None:
    reasons, warnings = judge((STORE_V4, STORE_V6), active=set(), tmp_path=tmp_path)
    assert reasons == [
        "unresolved critical exposure: NA001 tcpstore 198.18.0.1:29500 from 203.0.113.9 "
        "(pid 100 pt_elastic, user alice; slurm job 4242 is not active here)",
        "unresolved critical exposure: NA001 tcpstore [2001:db8:18::1]:29500 from 2001:db8:99::9 "
        "(pid 100 pt_elastic, user alice; slurm job 4242 is not active here)",
    ]
    assert warnings == []


def test_owned_by_a_running_job_only_warns(tmp_path: Path) -> None:
    reasons, warnings = judge((STORE_V4,), active={"4242"}, tmp_path=tmp_path)
    assert reasons == []
    assert warnings == [
        "critical exposure NA001 tcpstore 198.18.0.1:29500 from 203.0.113.9 belongs to running slurm job 4242"
    ]


def test_closed_since_the_audit_is_no_reason(tmp_path: Path) -> None:
    gone = (replace(STORE_V4, port=29501), replace(STORE_V4, address="198.18.0.2"))
    assert judge(gone, active=set(), tmp_path=tmp_path) == ([], [])


def test_a_specific_bind_matches_only_its_own_address(tmp_path: Path) -> None:
    gloo = Exposure("NA003", "c10d-gloo", "198.18.0.1", 40001, "203.0.113.9")
    assert len(judge((gloo,), set(), tmp_path)[0]) == 1
    # The same port at the node's IPv6 address is another socket, not this one.
    assert judge((replace(gloo, address="2001:db8:18::1"),), set(), tmp_path) == ([], [])


def test_an_owner_that_cannot_be_seen_warns_and_never_fails(tmp_path: Path) -> None:
    sshd = Exposure("NA099", "unknown", "198.18.0.1", 22, "203.0.113.9")
    reasons, warnings = judge((sshd,), set(), tmp_path)
    assert reasons == [] and warnings == [f"critical exposure {sshd.line}: its owner cannot be seen"]
