"""`netaudit scan` and `netaudit gate` streams and exit statuses that need no network."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from netaudit import inventory_json
from tests.cli.helpers import run
from tests.unit.test_inventory_json import sample


def write_inventory(path: Path, **changes: object) -> Path:
    document = inventory_json.to_json(sample())
    document.update(changes)
    path.write_text(json.dumps(document))
    return path


def test_local_audit_says_proof_needs_a_peer() -> None:
    result = run("scan", "--format", "json")
    report = result.json()
    assert report["vantage"]["mode"] == "local"
    assert report["vantage"]["sources"] == []
    assert any("proving what is reachable needs a peer" in note for note in report["notes"])
    assert result.status in (0, 3)
    assert (result.status == 3) == bool(report["incomplete"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("scan", "--inventory", "/nonexistent.json", "198.18.0.1"), "/nonexistent.json: cannot read"),
        (("scan", "198.18.0.0/15", "--dry-run"), "131,072 addresses to sweep (198.18.0.0/15)"),
        (("scan", "198.18.0.0/24", "--port", "1-65535", "--dry-run"), "more than scan.max_endpoints"),
        (("scan", "127.0.0.1", "--dry-run"), "127.0.0.1: a loopback address is not a scan target"),
        (("scan", "fe80::1", "--dry-run"), "fe80::1: a link-local address is not a scan target"),
        (("scan", "fe80::1%eth0", "--dry-run"), "fe80::1%eth0: a link-local address is not a scan target"),
        (("scan", "198.18.0.1", "--timeout", "nan", "--dry-run"), "--timeout: expected a number"),
        (("scan", "198.18.0.1", "--timeout", "inf", "--dry-run"), "--timeout: expected a number"),
        (("scan", "198.18.0.1", "--rate", "nan", "--dry-run"), "--rate: expected a number"),
        (("scan", "not a host!", "--dry-run"), "'not a host!' is not a host name"),
        (("scan", "node[1-", "--dry-run"), "is not a hostlist expression"),
        (
            ("scan", "198.18.0.1", "--source", "nosuchif0", "--dry-run"),
            "--source nosuchif0: no such interface",
        ),
        (("scan", "198.18.0.1", "--source", "198.18.99.99", "--dry-run"), "not an address of this host"),
        (("scan", "198.18.0.1", "--port", "70000", "--dry-run"), "--port: '70000'"),
        (("scan", "198.18.0.1", "--rate", "0", "--dry-run"), "--rate: expected a number in 1..1e+07"),
        (("scan", "--textfile", "/nonexistent-dir"), "--textfile: /nonexistent-dir: not a directory"),
    ],
)
def test_scan_usage_errors(argv: tuple[str, ...], message: str) -> None:
    result = run(*argv)
    assert result.status == 2, result.stderr
    assert message in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1


def test_inventories_are_their_own_scope(tmp_path: Path) -> None:
    # Given an inventory and no target, when scanned (dry run), then its node addresses are the
    # scope and the report says what it derived.
    path = write_inventory(tmp_path / "n.json")
    result = run("scan", "--inventory", str(path), "--dry-run", "--format", "json")
    assert result.status == 0, result.stderr
    report = result.json()
    assert report["scope"]["derived_from"] == "inventories" and report["scope"]["nodes"] == 1
    assert report["scope"]["addresses"] == {"ipv4": 1, "ipv6": 0}
    assert {(e["address"], e["port"]) for e in report["endpoints"]} == {("198.18.0.1", 29500)}


def test_foreign_inventory_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"kind": "netaudit.report", "schema_version": 1}))
    result = run("scan", "--inventory", str(path), "198.18.0.1")
    assert result.status == 2 and f"{path}: kind: not a netaudit inventory" in result.stderr


def test_inventory_bundle_on_stdin_and_dry_run_plan(tmp_path: Path) -> None:
    bundle = json.dumps([inventory_json.to_json(sample())])
    result = run(
        "scan",
        "--inventory",
        "-",
        "198.18.0.0/24",
        "198.51.100.0/24",
        "--dry-run",
        "--format",
        "json",
        stdin=bundle,
    )
    assert result.status == 0, result.stderr
    report = result.json()
    assert report["vantage"]["mode"] == "dry-run" and report["summary"]["probes_sent"] == 0
    # the store answers on the namespace's one routable address; with an inventory a CIDR only
    # filters (never expanded), and every attempt says what would be sent
    addresses = {(e["address"], e["port"]) for e in report["endpoints"] if e["service"]}
    assert addresses == {("198.18.0.1", 29500)}
    assert not [e for e in report["endpoints"] if e["service"] is None]
    assert any("CIDR targets filter the inventories' addresses" in n for n in report["notes"])
    # a named address without an inventory is swept on the default ports
    named = run("scan", "--inventory", "-", "198.51.100.7", "--dry-run", "--format", "json", stdin=bundle)
    plain = [(e["host"], e["port"]) for e in named.json()["endpoints"] if e["service"] is None]
    assert sorted(plain) == sorted(("198.51.100.7", port) for port in (29500, 29400, 25999, 28028, 23456))
    # an inventory address outside the targets is not scanned, and the report says so
    narrow = run("scan", "--inventory", "-", "198.51.100.0/30", "--dry-run", "--format", "json", stdin=bundle)
    assert not [e for e in narrow.json()["endpoints"] if e["service"]]
    assert any("outside the targets were not scanned: 198.18.0.1" in n for n in narrow.json()["notes"])


def test_corrupt_baseline_stops_the_run_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text("{garbage")
    result = run("scan", "198.18.0.1", "--baseline", str(path), "--dry-run")
    assert result.status == 2 and "corrupt baseline" in result.stderr
    assert path.read_text() == "{garbage"


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_gate_refuses_a_fifo_verdict_at_once(tmp_path: Path, on_error: str) -> None:
    fifo = tmp_path / "verdict.json"
    os.mkfifo(fifo)  # nobody ever writes: reading it would block forever
    result = run("gate", "--verdict", str(fifo), "--deadline-s", "30", "--on-error", on_error)
    # not an auditor fault but a verdict that cannot be used: a warning, whatever --on-error says
    assert result.status == 0 and result.stdout == ""
    assert f"{fifo}: cannot read: a FIFO, not a regular file" in result.stderr


# The work hangs in the kernel (a hung NFS read of the verdict, a /proc read of a process in
# D state): neither can be made to happen here on demand, so the worker's evaluate() is
# replaced by a sleep; the fork, the pipe, the watchdog and the kill are the real ones.
_HUNG_GATE = """import sys, time
import netaudit.gate
netaudit.gate.evaluate = lambda *args, **kwargs: time.sleep(60)
from netaudit import cli
sys.exit(cli.main(["gate", "--deadline-s", "1.0", "--on-error", sys.argv[1]]))
"""


@pytest.mark.parametrize(("on_error", "status"), [("open", 0), ("closed", 1)])
def test_gate_deadline_kills_a_hung_worker(on_error: str, status: int) -> None:
    import subprocess
    import time

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _HUNG_GATE, on_error],
        env={"PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    assert result.returncode == status, result.stderr
    if on_error == "closed":
        assert result.stdout.startswith("netaudit: gate error (closed): deadline of 1 s exceeded")
    else:
        assert result.stdout == "" and "passing the node because --on-error=open" in result.stderr


def test_gate_runs_with_no_path_and_imports_nothing_heavy(tmp_path: Path) -> None:
    # The parent only waits on its worker: the check itself, and everything it imports, live
    # in the forked worker (tests/unit/test_gate_fast.py follows that one's imports).
    import subprocess

    probe = (
        "import sys, runpy; sys.argv=['netaudit','gate']\n"
        "try:\n    runpy.run_module('netaudit', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = [m for m in ('scapy', 'asyncio', 'tabulate', 'ClusterShell', 'concurrent.futures',\n"
        "    'netaudit.gate', 'netaudit.gatescan', 'netaudit.inventory', 'netaudit.signatures',\n"
        "    'netaudit.classify', 'netaudit.audit.verdict') if m in sys.modules]\n"
        "print('HEAVY', heavy, 'CODE', code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "HEAVY [] CODE" in result.stdout, result.stdout + result.stderr
