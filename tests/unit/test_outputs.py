"""Metrics parsed back with Prometheus's own parser, syslog lines, verdicts, SARIF, JUnit."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netaudit import syslogwire
from netaudit.audit import verdict
from netaudit.models import BaselineChanges, Gap, GapKind, PortState, Severity
from netaudit.report import junit, prometheus, sarif, syslog_out
from netaudit.status import ExitStatus
from tests.unit.factories import finding, report


def test_textfile_parses_back_with_the_prometheus_parser(tmp_path: Path) -> None:
    current = report(
        finding(), finding(rule_id="NA003", service="c10d-gloo", severity=Severity.HIGH, port=1),
        finding(port=2, accepted="known", accepted_until="2027-01-01"),
        gaps=(Gap("node9", GapKind.FANOUT, "timed out"),), failed_hosts=("node9",),
    )  # fmt: skip
    path = prometheus.write(str(tmp_path), current, ExitStatus.FINDINGS)
    assert oct(Path(path).stat().st_mode & 0o777) == "0o644"
    families = {f.name: f for f in text_string_to_metric_families(Path(path).read_text())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("netaudit_findings", (("service", "tcpstore"), ("severity", "critical")))] == 1
    assert samples[("netaudit_findings", (("service", "c10d-gloo"), ("severity", "high")))] == 1
    assert samples[("netaudit_findings_accepted", ())] == 1
    assert samples[("netaudit_last_run_exit_status", ())] == 1
    assert samples[("netaudit_last_run_success", ())] == 0
    assert samples[("netaudit_failed_hosts", ())] == 1
    assert samples[("netaudit_last_run_timestamp_seconds", ())] == current.generated_at.timestamp()
    assert not list(tmp_path.glob(".netaudit-*"))  # no temporary file left behind


def test_syslog_reports_each_new_finding_once(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(2)
    new, old = finding(baseline_state="new"), finding(port=9, baseline_state="unchanged")
    changes = BaselineChanges(new=(new.baseline_key,), unchanged=(), resolved=("NA003|n|x|ipv4|net",),
                              new_failures=(), resolved_failures=(), is_first_run=False)  # fmt: skip
    syslog_out.send(report(new, old, changes=changes), address)
    messages = []
    try:
        while True:
            messages.append(receiver.recv(65536).decode())
    except TimeoutError:
        pass
    finally:
        receiver.close()
    assert len(messages) == 3  # summary, the new finding, the resolved one
    assert messages[0].startswith("<30>netaudit: scan done")  # daemon.info
    assert messages[1].startswith("<26>netaudit: NA001")  # daemon.crit for a critical finding
    assert any("NA001 critical tcpstore node01 198.51.100.11:29500" in m for m in messages)
    assert any("resolved: NA003|n|x|ipv4|net" in m for m in messages)


def test_syslog_lines_cannot_be_forged_by_a_newline(tmp_path: Path) -> None:
    address = str(tmp_path / "log.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(address)
        assert syslogwire.send([(syslogwire.ERROR, "line one\n<26>forged: two")], address, "t") is None
        assert receiver.recv(65536) == b"<27>t: line one\\x0a<26>forged: two"


def test_syslog_to_something_that_is_not_a_socket_is_one_line_not_a_traceback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "not-a-socket"
    plain.write_text("")
    assert syslog_out.send(report(finding()), str(plain)) == f"syslog socket {plain}: not a socket"
    missing = tmp_path / "missing.sock"
    assert (
        syslog_out.send(report(finding()), str(missing))
        == f"syslog socket {missing}: No such file or directory"
    )
    assert capfd.readouterr() == ("", "")


def test_verdicts_list_only_unresolved_critical_exposures(tmp_path: Path) -> None:
    current = report(finding(), finding(host="node02", severity=Severity.HIGH, rule_id="NA003", service="c10d-gloo"),
                     finding(host="node03", accepted="ok", accepted_until="2027-01-01"))  # fmt: skip
    paths, skipped = verdict.write_all(
        str(tmp_path / "%h.json"), current, ["node01", "node02", "node03", "node04"]
    )
    assert len(paths) == 4 and skipped == []
    read = verdict.read(str(tmp_path / "node01.json"))
    assert read.exposures == (verdict.Exposure("NA001", "tcpstore", "198.51.100.11", 29500, "203.0.113.10"),)
    assert read.exposures[0].line == "NA001 tcpstore 198.51.100.11:29500 from 203.0.113.10"
    for clean in ("node02", "node03", "node04"):
        assert verdict.read(str(tmp_path / f"{clean}.json")).exposures == ()


def test_a_host_name_never_leaves_the_verdict_directory(tmp_path: Path) -> None:
    verdicts = tmp_path / "verdicts"
    verdicts.mkdir()
    hostile = ["../escaped", "../../etc/cron.d/x", "a/b", "node\nfake", ".."]
    current = report(*(finding(host=host) for host in hostile), finding(host="node01"))
    paths, skipped = verdict.write_all(str(verdicts / "%h.json"), current, [*hostile, "node01"])
    assert paths == [str(verdicts / "node01.json")]
    assert len(skipped) == len(hostile) and all("not a host name" in line for line in skipped)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["node01.json"]


def test_verdict_template_needs_the_host_in_the_file_name() -> None:
    for bad in ("/srv/%h/verdict.json", "/srv/verdict.json"):
        with pytest.raises(verdict.VerdictError, match="%h in the file name"):
            verdict.check_template(bad)
    verdict.check_template("/srv/verdicts/%h.json")


def test_a_schema_1_verdict_asks_for_a_new_audit(tmp_path: Path) -> None:
    old = tmp_path / "node01.json"
    old.write_text(json.dumps({"kind": "netaudit.verdict", "schema_version": 1, "host": "node01",
                               "generated_at": "2026-12-01T00:00:00Z", "critical": []}))  # fmt: skip
    with pytest.raises(verdict.VerdictError, match="reads 2, got 1; rerun the scheduled audit"):
        verdict.read(str(old))


def test_sarif_and_junit_shapes() -> None:
    current = report(finding(), finding(rule_id="NA010", severity=Severity.MEDIUM, state=PortState.FILTERED))
    document = sarif.to_sarif(current)
    run = document["runs"][0]
    assert document["version"] == "2.1.0"
    assert {rule["id"] for rule in run["tool"]["driver"]["rules"]} == {"NA001", "NA010"}
    levels = sorted(result["level"] for result in run["results"])
    assert levels == ["error", "warning"]
    assert all(r["partialFingerprints"]["netauditKey/v1"].startswith("NA0") for r in run["results"])
    root = ET.fromstring(junit.to_junit(report(gaps=(Gap("node9", GapKind.FANOUT, "timed out"),))))
    assert root.get("tests") == "1" and root.get("errors") == "1"
    assert json.dumps(document)  # serialisable


def test_the_table_stays_readable_at_cluster_scale() -> None:
    from netaudit.report import report_table

    many = [finding(host=f"node{i:03d}", port=29500) for i in range(130)]
    many += [
        finding(rule_id="NA010", severity=Severity.MEDIUM, host=f"node{i:03d}", port=41000) for i in range(40)
    ]
    text = report_table.render(report(*sorted(many, key=lambda f: f.sort_key)))
    assert "the 100 most severe of 170 (all of them: --format json)" in text
    summary = text.split("the 100 most severe")[0]
    rows = [line.split() for line in summary.splitlines()]
    assert ["CRITICAL", "NA001", "tcpstore", "130", "130"] in rows
    assert ["MEDIUM", "NA010", "tcpstore", "40", "40"] in rows
    assert text.count("node1") < 130  # not every row is printed
