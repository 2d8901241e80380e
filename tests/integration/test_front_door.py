"""Acceptance tests for `netaudit scan`'s front door (issue 7), through the real CLI run inside
the outside namespace of a lab cluster (tests/integration/_front_door_lab.py: three nodes,
fabric and management networks, a router, IPv4 and IPv6, real torch jobs).

The natural command is inventories plus intended subnets and nothing else: its scope is the
inventories' own node addresses, both families. Inventories are untrusted input, a gap is
reported as a gap, and no scan may disturb a job.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration._front_door_lab import (
    FABRIC_V4_CIDR,
    FABRIC_V6_CIDR,
    FAST,
    INTENDED,
    RULE_OF_SERVICE,
    STORE_PORT,
    TENSORPIPE_LISTENERS_PER_WORKER,
    V4_DROPPED_STORE_PORT,
    World,
    build,
    expected_exposures,
    listeners_of,
    listening,
    outside_syns,
    probe_inventory,
    run_scan,
)
from tests.lab.netlab import (  # noqa: F401
    OUTSIDE_HOST_V4,
    OUTSIDE_HOST_V6,
    ROUTER_MGMT_V4,
    ROUTER_MGMT_V6,
    Lab,
    module_lab_fixture,
)
from tests.lab.torchjobs import JOBS, TorchJob, torchrun

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_torch, pytest.mark.slow]

JSON = ["--format", "json"]
OUTSIDE_SOURCES = (OUTSIDE_HOST_V4, OUTSIDE_HOST_V6)
# An address on the management network with no host behind it: nothing answers ARP or NDP,
# so the router says host-unreachable.
NOBODY = ("198.51.100.99", "2001:db8:51::99")
# A source with no route of its own to the nodes, as docker0 or virbr0 on a real scanner.
STRAY_IF, STRAY_PEER, STRAY_V4 = "stray0", "stray1", "203.0.113.77"


@pytest.fixture(scope="module")
def world(module_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build(module_lab, tmp_path_factory.mktemp("front_door"))


def inventory_args(*paths: Path) -> list[str]:
    return [arg for path in paths for arg in ("--inventory", str(path))]


def natural_args(world: World) -> list[str]:
    """The natural command: both nodes' inventories, the intended subnets, nothing else."""
    return [*inventory_args(world.inventories["node0"], world.inventories["node1"]), *INTENDED]


def report_of(result: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    assert result.stdout.strip(), (
        f"expected a JSON report on stdout from {what}; exit {result.returncode}, stderr: {result.stderr}"
    )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"expected JSON on stdout from {what}: {error}: {result.stdout[:500]}") from None


def gap_texts(report: dict[str, Any]) -> list[str]:
    """Everything the report says it could not inspect, as text: ``incomplete`` sentences
    and ``gaps`` items ({host, reason, ...}), whichever the report carries."""
    texts = [str(item) for item in report.get("incomplete") or []]
    for gap in report.get("gaps") or []:
        texts.append(
            " ".join(str(v) for v in gap.values() if v is not None) if isinstance(gap, dict) else str(gap)
        )
    return texts


def exposures_found(report: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {(f["rule_id"], str(ipaddress.ip_address(f["address"])), f["port"]) for f in report["findings"]}


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if not path.is_dir()}


@pytest.fixture(scope="module")
def natural(world: World) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    result = run_scan(world, *natural_args(world), *FAST, *JSON)
    report = json.loads(result.stdout) if result.stdout.strip() else None
    return result, report


def _natural_report(
    natural: tuple[subprocess.CompletedProcess[str], dict[str, Any] | None],
) -> dict[str, Any]:
    result, report = natural
    assert report is not None, (
        "expected the natural command (inventories + intended subnets, no targets) to scan and "
        f"print a report; it exited {result.returncode}: {result.stderr.strip()}"
    )
    return report


# ---------------------------------------------------------------------------------------------
# the natural command


def test_natural_command_exits_1_and_states_its_scope(natural: Any) -> None:
    result, _ = natural
    report = _natural_report(natural)
    assert result.returncode == 1, (
        f"expected exit 1 (critical exposures found), got {result.returncode}: {result.stderr.strip()}"
    )
    scope = report.get("scope")
    assert isinstance(scope, dict), f"expected a top-level 'scope' object in the report, got {scope!r}"
    assert scope.get("nodes") == 2, f"expected scope.nodes == 2 (two inventories), got {scope!r}"
    addresses = scope.get("addresses") or {}
    # each node has a fabric and a management address per family
    assert addresses.get("ipv4") == 4 and addresses.get("ipv6") == 4, (
        f"expected scope.addresses == {{ipv4: 4, ipv6: 4}} (fabric + mgmt of two nodes), got {scope!r}"
    )


def test_natural_command_finds_every_listener_on_every_address(natural: Any, world: World) -> None:
    report = _natural_report(natural)
    found = exposures_found(report)
    for node in (world.node0, world.node1):
        expected = expected_exposures(world, node)
        assert expected, f"lab precondition: torch listeners on {node.hostname}"
        missing = sorted(expected - found)
        assert not missing, (
            f"expected a finding for every torch listener on every address of {node.hostname} "
            f"(both families; rule, address, port); missing {len(missing)}: {missing[:12]}"
        )
    families = {(f["host"], f["family"]) for f in report["findings"] if f["rule_id"] == "NA001"}
    assert {("node0", "ipv4"), ("node0", "ipv6"), ("node1", "ipv4"), ("node1", "ipv6")} <= families, (
        f"expected store findings over IPv4 and IPv6 on both nodes, got {sorted(families)}"
    )
    node_addresses = {str(ipaddress.ip_address(a)) for n in (world.node0, world.node1) for a in n.addresses()}
    strays = sorted({e["address"] for e in report["endpoints"]} - node_addresses)
    assert not strays, f"expected only the nodes' own addresses in scope, the scan planned {strays}"


def test_natural_command_confirms_the_stores(natural: Any) -> None:
    report = _natural_report(natural)
    stores = [f for f in report["findings"] if f["rule_id"] == RULE_OF_SERVICE["tcpstore"]]
    assert stores, "expected TCPStore findings (NA001) from the natural command"
    unconfirmed = sorted((f["host"], f["address"], f["port"]) for f in stores if f["confirmed"] is not True)
    assert not unconfirmed, f"expected every store finding confirmed read-only, not: {unconfirmed}"
    master = [f for f in stores if f["port"] == STORE_PORT and f["host"] == "node0"]
    assert master and all(f["severity"] == "critical" for f in master), (
        f"expected the 2-node job's store on node0:{STORE_PORT} as critical, got {master}"
    )


def test_natural_command_leaves_every_listener_in_place(natural: Any, world: World) -> None:
    _natural_report(natural)
    for node in (world.node0, world.node1):
        before = {(s.address, s.port) for s in world.listeners_before[node.hostname]}
        after = {(s.address, s.port) for s in listening(node.ns)}
        assert before <= after, (
            f"expected every listener of {node.hostname} still listening after the scan; gone: "
            f"{sorted(before - after)}"
        )
    pids = [world.ready[k][0]["pid"] for k in ("gloo0", "gloo1")] + [
        i["pid"] for i in world.ready["rpc"].values()
    ]
    dead = [pid for pid in pids if not is_alive(pid)]
    assert not dead, f"expected every torch worker alive after the scan; dead pids: {dead}"


# ---------------------------------------------------------------------------------------------
# honest gaps


def test_vantage_without_ipv6_says_so_and_exits_3(world: World) -> None:
    # node2's only listener is a wildcard store that its nft table drops over IPv4: from an
    # IPv4 source nothing is found, and the family where it answers cannot be tested.
    result = run_scan(
        world,
        *inventory_args(world.inventories["node2"]),
        *INTENDED,
        "--source",
        OUTSIDE_HOST_V4,
        *FAST,
        *JSON,
    )
    report = report_of(result, "a scan from an IPv4-only source")
    assert not [f for f in report["findings"] if f["rule_id"] == RULE_OF_SERVICE["tcpstore"]], (
        f"lab precondition: the store on node2:{V4_DROPPED_STORE_PORT} is dropped over IPv4, "
        f"yet found: {report['findings']}"
    )
    assert result.returncode == 3, (
        f"expected exit 3 (IPv6 endpoints of node2 could not be tested), got {result.returncode}: "
        f"{result.stderr.strip()}"
    )
    assert report["summary"]["is_complete"] is False, "expected summary.is_complete == false"
    node2_v6 = [a for a in world.node2.addresses() if ":" in a]
    texts = gap_texts(report)
    about_ipv6 = [
        t
        for t in texts
        if re.search(r"ipv6", t, re.IGNORECASE) and ("node2" in t or any(a in t for a in node2_v6))
    ]
    assert about_ipv6, f"expected a gap naming IPv6 not tested for node2, got {texts}"


def test_down_host_is_incomplete_not_filtered(world: World) -> None:
    # The router ARPs (NDP) for these in vain and answers host-unreachable after about 3 s.
    result = run_scan(
        world, *NOBODY, "--port", str(STORE_PORT), *INTENDED, "--timeout", "2", "--retries", "1", *JSON
    )
    report = report_of(result, "a scan of addresses with no host behind them")
    assert report["findings"] == [], (
        f"expected no finding for hosts that do not exist, got {report['findings']}"
    )
    assert result.returncode == 3, (
        f"expected exit 3 (hosts down or unreachable: nothing could be inspected), got "
        f"{result.returncode}; attempts: {[e['attempts'] for e in report['endpoints']]}"
    )
    texts = gap_texts(report)
    for address in NOBODY:
        assert any(address in t for t in texts), f"expected a gap naming the down host {address}, got {texts}"


def test_no_route_source_is_not_blamed_when_another_source_tested(world: World) -> None:
    outside = world.outside
    # a veth whose peer stays in the same namespace: an address with no route of its own
    outside.ip("link", "add", STRAY_IF, "type", "veth", "peer", "name", STRAY_PEER)
    try:
        outside.ip("link", "set", STRAY_IF, "up")
        outside.ip("link", "set", STRAY_PEER, "up")
        outside.add_address(STRAY_IF, f"{STRAY_V4}/32")
        targets = [a for n in (world.node0, world.node1) for a in n.addresses()]
        runs = {
            "the natural command": (natural_args(world), None),
            "the natural command with the node addresses as targets": (
                [*natural_args(world), *targets],
                None,
            ),
            # nothing listens there: the router answers RST, so the run is clean and complete
            "a clean target": ([ROUTER_MGMT_V4, ROUTER_MGMT_V6, "--port", str(STORE_PORT), *INTENDED], 0),
        }
        problems = []
        for what, (argv, status) in runs.items():
            result = run_scan(world, *argv, *FAST, *JSON)
            if not result.stdout.strip():
                problems.append(
                    f"{what}: expected a report, exit {result.returncode}: {result.stderr.strip()}"
                )
                continue
            report = report_of(result, what)
            untested = [
                (e["address"], e["port"])
                for e in report["endpoints"]
                if not any(
                    a["source"] in OUTSIDE_SOURCES and a["state"] != "not-tested" for a in e["attempts"]
                )
            ]
            assert report["endpoints"] and not untested, (
                f"precondition for {what}: the uplink sources test every endpoint; untested: {untested[:8]}"
            )
            blamed = [t for t in gap_texts(report) if STRAY_V4 in t or STRAY_IF in t]
            if blamed:
                problems.append(
                    f"{what}: expected no gap blaming the no-route source {STRAY_V4}, got {blamed[:3]}"
                )
            if result.returncode == 3 or (status is not None and result.returncode != status):
                problems.append(
                    f"{what}: expected exit {status if status is not None else '0 or 1'}, not "
                    f"{result.returncode} (the no-route source alone is no gap)"
                )
        assert not problems, "\n".join(problems)
    finally:
        outside.ip("link", "del", STRAY_IF)


# ---------------------------------------------------------------------------------------------
# inventories are untrusted


def _forge(inventory: dict[str, Any], tensorpipe: dict[str, Any]) -> dict[str, Any]:
    """Node A's inventory, claiming a high-confidence store at B's TensorPipe listener."""
    forged = json.loads(json.dumps(inventory))
    store = next(item for item in forged["listeners"] if item["service"] == "tcpstore")
    claim = dict(store)
    for key in ("address", "family", "port", "v6only", "exposure"):
        claim[key] = tensorpipe[key]
    claim.update(
        service="tcpstore",
        signature="tcpstore",
        handshake="tcpstore-ping",
        connect_safe=True,
        do_not_touch=False,
        confidence="high",
    )
    forged["listeners"].append(claim)
    forged["collected_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return forged


def test_forged_inventory_cannot_kill_a_job(world: World, tmp_path: Path) -> None:
    node1 = world.node1
    rpc = TorchJob(
        tmp_path / "rpc",
        torchrun("--standalone", "--nproc-per-node=2", str(JOBS / "rpc_worker.py")),
        ranks=2,
        env={"TP_SOCKET_IFNAME": "fabric"},
        popen=node1.ns.popen,
    )
    try:
        worker = rpc.wait_ready()[0]["pid"]
        mine = listeners_of(node1.ns, worker)
        assert len(mine) == TENSORPIPE_LISTENERS_PER_WORKER, (
            f"lab precondition: 17 TensorPipe listeners, {mine}"
        )
        victim = mine[0]
        b_inventory = probe_inventory(node1, tmp_path / "node1.json")
        b_listeners = json.loads(b_inventory.read_text())["listeners"]
        tensorpipe = next(item for item in b_listeners if item["port"] == victim.port)
        assert tensorpipe["service"] == "rpc-tensorpipe", (
            f"lab precondition: B's probe names it: {tensorpipe}"
        )

        forged = _forge(json.loads(world.inventories["node0"].read_text()), tensorpipe)
        forged_path = tmp_path / "node0-forged.json"
        forged_path.write_text(json.dumps(forged))
        # A node that also lies about its own interfaces (claims B's address) is beyond what
        # one document can be checked against; docs/scanning.md names that limit and its
        # mitigation (scan with every node's inventory: the stricter claim then wins).
        runs = {
            "the forged inventory and B's own": inventory_args(forged_path, b_inventory),
            "the forged inventory with B's address as target": [
                *inventory_args(forged_path),
                node1.fabric_v4,
            ],
        }
        problems = []
        for what, argv in runs.items():
            result = run_scan(world, *argv, *INTENDED, *FAST, *JSON)
            alive = is_alive(worker)
            still = len(listeners_of(node1.ns, worker))
            if result.returncode not in (0, 1, 3):
                problems.append(
                    f"{what}: expected the scan to run and report (exit 0, 1 or 3), got "
                    f"{result.returncode}: {result.stderr.strip()[:300]}"
                )
            if not alive or still != TENSORPIPE_LISTENERS_PER_WORKER:
                touched = [
                    {
                        k: e.get(k)
                        for k in ("host", "service", "handshake", "connect_safe", "do_not_touch", "attempts")
                    }
                    for e in (json.loads(result.stdout)["endpoints"] if result.stdout.strip() else [])
                    if e["port"] == victim.port and e["address"] == node1.fabric_v4
                ]
                problems.append(
                    f"{what}: expected RPC worker {worker} alive with all 17 listeners, "
                    f"alive={alive}, listeners={still}; the report on {node1.fabric_v4}:{victim.port}: {touched}"
                )
                break
        assert not problems, "\n".join(problems)
        assert rpc.finish() == 0, f"expected the RPC job to finish cleanly after the scans:\n{rpc.output()}"
        again = rpc.wait_ready(timeout_s=5, offset=1000)
        assert again[0]["answer"] == 9 and again[1]["answer"] == 9, f"expected RPC to still work, got {again}"
    finally:
        rpc.release()
        rpc.stop()


def _hostile(world: World, tmp_path: Path) -> Path:
    inventory = json.loads(world.inventories["node0"].read_text())
    inventory["host"] = "../../escaped"
    path = tmp_path / "in" / "hostile.json"
    path.parent.mkdir()
    path.write_text(json.dumps(inventory))
    return path


def test_host_names_are_not_file_names(world: World, tmp_path: Path) -> None:
    hostile = _hostile(world, tmp_path)
    out = tmp_path / "out"
    verdicts = out / "a" / "verdicts"  # "../../escaped" from here would land in out/
    verdicts.mkdir(parents=True)
    config = tmp_path / "in" / "audit.toml"
    config.write_text(f'[gate]\nverdict_path = "{verdicts}/%h.json"\n')
    targets = [a for n in (world.node0, world.node1) for a in n.addresses()]
    runs = {
        "the natural command": [],
        "the natural command with the node addresses as targets": targets,
    }
    problems = []
    for what, extra in runs.items():
        argv = [
            "--config",
            str(config),
            *inventory_args(hostile, world.inventories["node1"]),
            *INTENDED,
            *extra,
        ]
        result = run_scan(world, *argv, *FAST, *JSON)
        escaped = sorted(str(p.relative_to(tmp_path)) for p in files_under(out) if verdicts not in p.parents)
        if escaped:
            problems.append(f"{what}: expected no file outside {verdicts}, found {escaped}")
        if result.returncode == 2:
            message = result.stderr.strip()
            if "\n" in message or str(hostile) not in message or not re.search(r"\bhost\b", message):
                problems.append(
                    f"{what}: expected exit 2 to be one line naming {hostile} and its field `host`, "
                    f"got {message!r}"
                )
        elif result.returncode not in (0, 1, 3) or not result.stdout.strip():
            problems.append(
                f"{what}: expected exit 2, or a report with exit 0, 1 or 3; got {result.returncode}: "
                f"{result.stderr.strip()[:300]}"
            )
        else:
            report = report_of(result, what)
            said = [t for t in [*report["notes"], *gap_texts(report)] if "escaped" in t or hostile.name in t]
            if not said:
                problems.append(
                    f"{what}: expected a note or gap saying the host of {hostile.name} was refused"
                )
            names = sorted(p.name for p in files_under(verdicts))
            if any(".." in name for name in names):
                problems.append(f"{what}: expected verdict names without '..', got {names}")
    assert not problems, "\n".join(problems)


def test_cidr_target_in_the_cron_audit(world: World, tmp_path: Path) -> None:
    verdicts = tmp_path / "verdicts"
    verdicts.mkdir()
    baseline = tmp_path / "baseline.json"
    config = tmp_path / "cron.toml"
    config.write_text(
        f'intended_subnets = ["{FABRIC_V4_CIDR}", "{FABRIC_V6_CIDR}"]\n'
        f'[scan]\ntargets = ["{FABRIC_V4_CIDR}"]\n'
        f'[output]\nbaseline = "{baseline}"\n'
        f'[gate]\nverdict_path = "{verdicts}/%h.json"\n'
    )
    argv = ["--config", str(config), *inventory_args(world.inventories["node0"], world.inventories["node1"])]
    first = run_scan(world, *argv, *FAST, *JSON)
    second = run_scan(world, *argv, *FAST, *JSON)
    crashed = [
        f"{n}: {r.stderr.strip()}" for n, r in (("first", first), ("second", second)) if r.returncode == 4
    ]
    assert not crashed, f"expected no internal error (exit 4) in either cron run: {crashed}"
    report1 = report_of(first, "the first cron run")
    report2 = report_of(second, "the second cron run")

    fabric = {world.node0.fabric_v4, world.node1.fabric_v4}
    planned = {e["address"] for e in report1["endpoints"]}
    assert planned and planned <= fabric, (
        f"expected the CIDR target to filter the nodes' addresses to {sorted(fabric)}, never to be swept; "
        f"planned {sorted(planned)[:10]}"
    )
    expected = {x for n in (world.node0, world.node1) for x in expected_exposures(world, n) if x[1] in fabric}
    missing = sorted(expected - exposures_found(report1))
    assert not missing, f"expected every fabric IPv4 exposure found on the first run; missing {missing[:12]}"
    assert first.returncode == 1, f"expected exit 1 on the first run, got {first.returncode}"

    written = files_under(tmp_path) - {config, baseline}
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == ["verdicts/node0.json", "verdicts/node1.json"], (
        f"expected one verdict per node inside verdicts/ and nothing else, got {names}"
    )
    assert baseline.exists(), "expected the baseline saved after a complete run"

    changes1, changes2 = report1.get("changes") or {}, report2.get("changes") or {}
    assert changes1.get("is_first_run") is True and changes1.get("new"), (
        f"expected the first run to report its findings as new, got {changes1}"
    )
    assert changes2.get("is_first_run") is False, (
        f"expected the second run to read the baseline, got {changes2}"
    )
    assert not changes2.get("resolved") and not changes2.get("new"), (
        f"expected the first run's findings unchanged on the second run, not new or resolved: {changes2}"
    )
    assert len(changes2.get("unchanged") or []) == len(changes1["new"]), (
        f"expected every finding of the first run unchanged on the second: {changes1['new']} -> {changes2}"
    )
    assert len(report2["findings"]) == len(report1["findings"]), (
        "expected the same findings on the second run"
    )
    # docs/operations.md: with a baseline the exit status counts news only
    news = 3 if changes2.get("new_failures") else 0
    assert second.returncode == news, (
        f"expected the second run to exit {news} (no new finding), got {second.returncode}: {second.stderr.strip()}"
    )


# ---------------------------------------------------------------------------------------------
# the dry run


def test_dry_run_never_sends(world: World) -> None:
    nodes = (world.node0, world.node1)
    before = {n.hostname: outside_syns(n) for n in nodes}
    result = run_scan(world, *natural_args(world), "--dry-run", *JSON)
    after = {n.hostname: outside_syns(n) for n in nodes}
    assert after == before, f"expected no SYN from outside during --dry-run; counters {before} -> {after}"
    assert result.returncode == 0, (
        f"expected --dry-run to exit 0, got {result.returncode}: {result.stderr.strip()}"
    )
    report = report_of(result, "the natural command with --dry-run")
    planned = {(e["host"], e["family"]) for e in report["endpoints"]}
    wanted = {(n.hostname, family) for n in nodes for family in ("ipv4", "ipv6")}
    assert wanted <= planned, f"expected a plan with both families for both nodes, got {sorted(planned)}"
    assert report["summary"]["probes_sent"] == 0, "expected probes_sent == 0 on a dry run"
    # the counter does count: a real probe moves it
    real = run_scan(world, world.node0.mgmt_v4, "--port", str(STORE_PORT), *INTENDED, *FAST, *JSON)
    assert real.returncode in (0, 1, 3), real.stderr
    assert outside_syns(world.node0) > after["node0"], "control: a real scan must move the SYN counter"


# ---------------------------------------------------------------------------------------------
# last: the jobs the scans above touched still work


def test_jobs_still_work_after_every_scan(natural: Any, world: World) -> None:
    for job in (*world.gloo, world.rpc):
        job.release()
    assert world.rpc.finish() == 0, (
        f"expected the RPC job to finish cleanly after the scans:\n{world.rpc.output()}"
    )
    again = world.rpc.wait_ready(timeout_s=5, offset=1000)
    assert again[0]["answer"] == 9 and again[1]["answer"] == 9, f"expected RPC to still work, got {again}"
    for rank, job in enumerate(world.gloo):
        assert job.finish() == 0, f"expected Gloo rank {rank} to pass its barrier and exit 0:\n{job.output()}"
    result, _ = natural
    assert result.returncode not in (2, 4), (
        f"expected the natural command to have scanned the jobs (so that their survival means "
        f"something); it exited {result.returncode}: {result.stderr.strip()}"
    )
