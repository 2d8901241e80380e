"""A merge that streams (issue 8): inventories read one at a time and shared where equal, a
plan without per-listener copies, and a JSON report written endpoint by endpoint. Each
shortcut must give exactly what the plain path gives; the speed is bench/cluster_bench.py's."""

from __future__ import annotations

import io
import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from netaudit import cmd_scan, docparse, inventory_json, jsonout, signatures
from netaudit.audit import intake, plan, scope, targets
from netaudit.audit import run as audit_run
from netaudit.audit.settings import ScanSettings
from netaudit.environment import Environment
from netaudit.inventory_json import InventoryError
from netaudit.models import (
    Attempt,
    Family,
    InterfaceAddress,
    Inventory,
    JobIdentity,
    Method,
    PortState,
    ProcessInfo,
    Report,
    VantageSource,
)
from netaudit.report import report_json
from tests.cli.inventories import node
from tests.unit.test_golden_reports import rich_report

LOADED = signatures.load()
OUTSIDE = (
    VantageSource("203.0.113.10", "eth0", "203.0.113.0/24", False),
    VantageSource("2001:db8:203::10", "eth0", "2001:db8:203::/64", False),
)


def _streamed(report: Report) -> str:
    stream = io.StringIO()
    report_json.write(report, stream)
    return stream.getvalue()


def _as_before(report: Report) -> str:
    return jsonout.dumps(report_json.to_json(report), len(report.endpoints))


def _assert_same_text(got: str, expected: str) -> None:
    """Equal texts, or a failure that shows where they part (pytest's own diff of two
    megabyte strings takes minutes)."""
    if got == expected:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    raise AssertionError(
        f"the texts part at {at} (lengths {len(got)}, {len(expected)}):\n"
        f"  got      ...{got[max(0, at - 120) : at + 80]!r}\n  expected ...{expected[max(0, at - 120) : at + 80]!r}"
    )


# The streaming writer -------------------------------------------------------------------------


def _many(report: Report, copies: int) -> Report:
    """The rich report's endpoints and findings again and again, on other ports: past the
    threshold where the JSON stops being indented, with every kind of endpoint, attempt and
    finding in it, in lists longer than one written chunk."""
    endpoints = tuple(
        replace(endpoint, port=1 + (endpoint.port + 7919 * copy) % 65535)
        for copy in range(copies)
        for endpoint in report.endpoints
    )
    findings = tuple(replace(finding, port=1 + copy) for copy in range(copies) for finding in report.findings)
    return replace(report, endpoints=endpoints, findings=findings)


@pytest.mark.parametrize("copies", [1, 200])
def test_the_streamed_report_is_the_documents_text_byte_for_byte(copies: int) -> None:
    report = _many(rich_report(), copies)
    assert (len(report.endpoints) > jsonout.INDENT_UP_TO_ITEMS) is (copies > 1)
    _assert_same_text(_streamed(report), _as_before(report))


def test_odd_values_stream_as_the_json_module_writes_them() -> None:
    # Given values the hand-assembled pieces must escape and spell as json.dumps does:
    # non-ASCII and control characters, quotes, an integer age, NaN and infinite round trips.
    base = _many(rich_report(), 130)
    odd = []
    for index, endpoint in enumerate(base.endpoints):
        attempts = tuple(
            replace(a, reason=f'"quoted" \u00e9\u4e2d\n\t\\ {index}', detail="\x00\u2028",
                    rtt_ms=(math.nan, math.inf, -math.inf, 1e-7, 3)[index % 5])
            for a in endpoint.attempts
        )  # fmt: skip
        age = (None, 7, 0.1 + 0.2, 1e21)[index % 4]
        odd.append(replace(endpoint, host=f"n\u00f6de{index % 3}", attempts=attempts, inventory_age_s=age))
    report = replace(base, endpoints=tuple(odd), notes=("\u2603 snow",))
    _assert_same_text(_streamed(report), _as_before(report))


@pytest.mark.parametrize("kind", ["no process", "no user, no job"])
def test_a_listener_without_process_or_classification_streams_the_same(kind: str) -> None:
    base = rich_report()
    listener = base.endpoints[0].listener
    assert listener is not None and listener.process is not None
    if kind == "no process":
        bare = replace(listener, process=None, pid=None, classification=None)
    else:
        anonymous = replace(listener.process, user=None, job=JobIdentity())
        bare = replace(listener, process=anonymous, classification=None)
    endpoints = tuple(replace(e, listener=bare, port=e.port + i) for i, e in enumerate(base.endpoints * 130))
    report = replace(base, endpoints=endpoints)
    _assert_same_text(_streamed(report), _as_before(report))


def test_the_cli_writes_what_render_returns() -> None:
    report = _many(rich_report(), 150)
    stream = io.StringIO()
    cmd_scan.write_report(report, "json", stream)
    _assert_same_text(stream.getvalue(), cmd_scan.render(report, "json"))
    table = io.StringIO()
    cmd_scan.write_report(report, "table", table)
    assert table.getvalue() == cmd_scan.render(report, "table")


# Reading: one document at a time, equal parts shared -----------------------------------------


def test_listeners_of_one_process_share_one_copy_and_the_inventory_is_unchanged() -> None:
    inventory = node("node01", 1, datetime(2026, 11, 25, 12, 0, 0, 125000, tzinfo=UTC))
    document = json.loads(json.dumps(inventory_json.to_json(inventory)))
    read = inventory_json.from_json(document, "node01.json")
    compact = intake.Sharing().compact(read)
    assert compact == read == inventory
    store, gloo, _sshd = compact.listeners
    assert store.process is not None and store.process is gloo.process  # the same pid, the same facts


def test_equal_facts_are_shared_across_nodes_and_different_ones_are_not() -> None:
    sharing = intake.Sharing()
    first = sharing.compact(node("node01", 1))
    second = sharing.compact(node("node02", 2))
    one, two = first.listeners[0].process, second.listeners[0].process
    assert one is not None and two is not None
    assert one.environment is two.environment and one.job is two.job
    # A forged listener that claims the store's pid with other facts keeps its own facts.
    forged_process = replace(one, cmdline=("nc", "-l"))
    forged = replace(node("node03", 3), listeners=(
        first.listeners[0], replace(first.listeners[1], process=forged_process)))  # fmt: skip
    store, other = sharing.compact(forged).listeners
    assert store.process is not None and other.process is not None
    assert other.process.cmdline == ("nc", "-l") and store.process.cmdline != ("nc", "-l")


def _write_nodes(directory: Path, count: int) -> list[str]:
    paths = []
    for index in range(1, count + 1):
        path = directory / f"node{index:02d}.json"
        path.write_text(json.dumps(inventory_json.to_json(node(f"node{index:02d}", index))))
        paths.append(str(path))
    return paths


def test_inventories_are_read_in_order_and_shared(tmp_path: Path) -> None:
    paths = _write_nodes(tmp_path, 3)
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps([json.loads(Path(p).read_text()) for p in paths[:2]]))
    loaded = cmd_scan.load_inventories([*paths, str(bundle)], Environment(stdin=io.StringIO("")))
    assert [inv.host for inv in loaded] == ["node01", "node02", "node03", "node01", "node02"]
    assert loaded[0] == loaded[3] and loaded[0].listeners[0].process is loaded[3].listeners[0].process


def test_documents_are_parsed_as_they_are_asked_for(tmp_path: Path) -> None:
    # Given a good file and a missing one: the first document comes before the second file is
    # even opened (one document in memory at a time), and the second still fails by name.
    (good,) = _write_nodes(tmp_path, 1)
    documents = docparse.iter_inventory_documents(
        [good, str(tmp_path / "gone.json")], io.StringIO(""), 1 << 20
    )
    label, first = next(documents)
    assert label == good and isinstance(first, dict) and first["host"] == "node01"
    with pytest.raises(InventoryError, match=r"gone\.json: cannot read: No such file"):
        next(documents)


@pytest.mark.parametrize(
    "text",
    [
        '[{"a": 1}, {"b": [2, {"c": null}]}]',
        ' \n[ {"a":1} ,\t{"b":"]"}\r\n] \n',
        "[]",
        " [ ] ",
        '[{"x": "\\"["}]',
    ],
)
def test_a_bundle_gives_its_documents_one_by_one_as_json_reads_them(text: str, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(text)
    documents = list(docparse.iter_inventory_documents([str(path)], io.StringIO(""), 1 << 20))
    expected = json.loads(text)
    assert documents == [(f"{path}[{index}]", value) for index, value in enumerate(expected)]


@pytest.mark.parametrize(
    "text",
    [
        "[{}, {} {}]",
        "[{},]",
        "[{}] x",
        "[] []",
        "[{}, NaN]",
        "[{}",
        "[",
        '[{}, "open',
        "[" + "1" * 5000 + "]",
    ],
)
def test_a_malformed_bundle_fails_as_the_whole_text_would(text: str, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(text)
    with pytest.raises(InventoryError) as whole:
        docparse.parse_json(text.encode(), str(path), InventoryError)
    with pytest.raises(InventoryError) as streamed:
        list(docparse.iter_inventory_documents([str(path)], io.StringIO(""), 1 << 20))
    assert str(streamed.value) == str(whole.value)


# Planning without copies ----------------------------------------------------------------------


def _cluster(count: int) -> list[Inventory]:
    """``count`` nodes with both families, and a docker0 address that every node has."""
    nodes = []
    for index in range(1, count + 1):
        inventory = node(f"node{index:03d}", index)
        namespace = inventory.namespaces[0]
        bridge = InterfaceAddress("docker0", Family.IPV4, "203.0.113.1", 24, False, False)
        nodes.append(
            replace(inventory, namespaces=(replace(namespace, interfaces=(*namespace.interfaces, bridge)),))
        )
    return nodes


def _plan(inventories: list[Inventory], texts: tuple[str, ...] = ()) -> tuple[intake.Intake, plan.Plan]:
    admitted = intake.admit(inventories, LOADED)
    hosts = {inventory.host for inventory in admitted.inventories}
    named = targets.parse(texts, 65536, hosts)
    the_scope = scope.derive(admitted.inventories, named, 65536, expand_networks=False)
    rules = plan.Rules(intended=(), default_ports=ScanSettings().ports, max_inventory_age_s=3600, is_raw=True,
                       allow_connect=False, max_endpoints=1 << 20)  # fmt: skip
    built = plan.build(
        admitted.inventories, the_scope, OUTSIDE, LOADED, rules, datetime.now(UTC), frozenset()
    )
    return admitted, built


def test_honest_listeners_are_admitted_without_a_copy() -> None:
    inventories = _cluster(3)
    admitted, _ = _plan(inventories)
    assert all(mine is theirs for mine, theirs in zip(admitted.inventories, inventories, strict=True))


def test_every_node_address_of_both_families_is_planned_once_and_the_bridge_never() -> None:
    inventories = _cluster(40)
    _admitted, built = _plan(inventories)
    planned = {(e.host, e.address, e.port) for e in built.endpoints}
    assert len(planned) == len(built.endpoints)
    expected = set()
    for index, inventory in enumerate(inventories, start=1):
        store, gloo, _sshd = inventory.listeners
        v4, v6 = f"198.18.0.{index}", f"2001:db8:18::{index}"
        expected |= {
            (inventory.host, v4, store.port),
            (inventory.host, v6, store.port),
            (inventory.host, v4, gloo.port),
        }
    assert planned == expected
    assert not any(e.address == "203.0.113.1" for e in built.endpoints)
    assert [e.listener for e in built.endpoints if e.host == "node001" and e.port == 29500] == [
        inventories[0].listeners[0], inventories[0].listeners[0]]  # fmt: skip
    assert [e.host for e in built.endpoints] == sorted(e.host for e in built.endpoints)


def test_a_cidr_filter_keeps_only_its_addresses() -> None:
    inventories = _cluster(20)
    _admitted, built = _plan(inventories, ("198.18.0.0/29", "2001:db8:18::8/125"))
    by_family = {
        family: sorted({e.address for e in built.endpoints if e.family is family}) for family in Family
    }
    assert by_family[Family.IPV4] == [f"198.18.0.{i}" for i in range(1, 8)]
    assert by_family[Family.IPV6] == ["2001:db8:18::8", "2001:db8:18::9"]  # ::10 is 0x10, past ::f


def test_the_dry_run_attempts_are_those_of_each_probe() -> None:
    inventories = _cluster(6)
    _admitted, built = _plan(inventories)
    endpoints = audit_run._dry_run(built, "admin")
    for probe in built.probes:
        attempt = Attempt(probe.spec.source, PortState.NOT_TESTED, probe.method,
                          f"dry run: would send {probe.method.value}", None, False, False)  # fmt: skip
        assert attempt in endpoints[probe.endpoint].attempts
    assert sum(len(e.attempts) for e in endpoints) == len(built.probes)
    assert [replace(e, attempts=()) for e in endpoints] == list(built.endpoints)


def test_a_plan_with_an_untestable_family_says_why_and_streams_the_same() -> None:
    inventories = _cluster(100)  # 300 endpoints, 1,100 with the swept target below
    admitted = intake.admit(inventories, LOADED)
    hosts = {inventory.host for inventory in admitted.inventories}
    named = targets.parse(("198.51.100.7", *hosts), 65536, hosts)
    the_scope = scope.derive(admitted.inventories, named, 65536, expand_networks=False)
    rules = plan.Rules(intended=(), default_ports=tuple(range(1000, 1800)), max_inventory_age_s=60,
                       is_raw=False, allow_connect=False, max_endpoints=1 << 20)  # fmt: skip
    stale = datetime.now(UTC) + timedelta(hours=1)
    built = plan.build(admitted.inventories, the_scope, OUTSIDE[:1], LOADED, rules, stale, frozenset())
    endpoints = audit_run._dry_run(built, "admin")
    untested = [e for e in endpoints if e.family is Family.IPV6]
    assert untested and all(
        [(a.state, a.reason) for a in e.attempts] == [(PortState.NOT_TESTED, "not tested: no IPv6 source address on this host")]
        for e in untested
    )  # fmt: skip
    assert {a.method for e in endpoints for a in e.attempts} >= {Method.NONE}
    report = Report(
        generated_at=datetime(2026, 11, 25, tzinfo=UTC), netaudit_version="0.1.0", vantage_host="admin",
        mode="dry-run", sources=OUTSIDE[:1], intended_subnets=(), trust_scope="subnet",
        fail_on=rich_report().fail_on, findings=(), endpoints=endpoints, gaps=(), notes=built.notes,
        duration_s=0.5, probes_sent=0, scope=the_scope.summary,
    )  # fmt: skip
    assert len(report.endpoints) > jsonout.INDENT_UP_TO_ITEMS
    _assert_same_text(_streamed(report), _as_before(report))


def test_a_process_with_tensorpipe_marks_is_judged_per_process() -> None:
    # Given two stores of one node in one classification object: one in a plain process, one
    # in a process with TensorPipe's threads. The shared verdict must not leak between them.
    inventory = node("node01", 1)
    store = inventory.listeners[0]
    assert store.process is not None
    marked: ProcessInfo = replace(store.process, pid=777, threads=(("TP_UV_loop", 17),))
    second = replace(store, port=29501, inode=99, pid=777, pids=(777,), process=marked)
    admitted = intake.admit([replace(inventory, listeners=(store, second))], LOADED)
    plain_store, marked_store = admitted.inventories[0].listeners
    assert plain_store.classification is not None and marked_store.classification is not None
    assert plain_store.classification.handshake == "tcpstore-ping"
    assert marked_store.classification.handshake is None and not marked_store.classification.is_connect_safe
