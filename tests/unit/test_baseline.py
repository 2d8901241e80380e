"""The scheduled audit's memory: new -> unchanged -> resolved, missing is not resolved, and a
corrupt or foreign baseline is refused and left untouched."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from netaudit.audit import baseline
from netaudit.audit.baseline import BaselineError
from netaudit.models import Gap, GapKind, Severity
from tests.unit.factories import finding, report


def run(path: Path, current):  # one scheduled run: compare, then save
    marked, state = baseline.compare(baseline.load(str(path)), current)
    baseline.save(str(path), state, "0.1.0", current.generated_at)
    return marked


def test_cycle_new_unchanged_resolved(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    store, gloo = finding(), finding(rule_id="NA003", service="c10d-gloo", port=41000, severity=Severity.HIGH)
    first = run(path, report(store, gloo))
    assert first.changes.is_first_run
    assert {f.baseline_state for f in first.findings} == {"new"}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"

    # Given the next job: same store on another port, pid and job; the Gloo listener is gone
    second = run(path, report(finding(port=29501, pid=777)))
    assert [f.baseline_state for f in second.findings] == ["unchanged"]
    assert second.changes.new == ()
    assert second.changes.resolved == (gloo.baseline_key,)

    third = run(path, report())
    assert third.changes.resolved == (store.baseline_key,)
    assert json.loads(path.read_text())["findings"] == {}


def test_a_host_without_data_keeps_its_findings(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    run(path, report(finding()))
    # node01 failed the fan-out this time: its store is unknown, not resolved
    later = run(
        path, report(failed_hosts=("node01",), gaps=(Gap("node01", GapKind.FANOUT, "timed out after 90 s"),))
    )
    assert later.changes.resolved == ()
    assert later.changes.new_failures == ("node01: timed out after 90 s",)
    assert finding().baseline_key in json.loads(path.read_text())["findings"]
    # the same failure again, with other numbers, is not news
    again = run(
        path, report(failed_hosts=("node01",), gaps=(Gap("node01", GapKind.FANOUT, "timed out after 120 s"),))
    )
    assert again.changes.new_failures == ()
    recovered = run(path, report(finding()))
    assert recovered.changes.resolved_failures == ("node01: timed out after 120 s",)


def test_first_seen_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    run(path, report(finding()))
    first_seen = json.loads(path.read_text())["findings"][finding().baseline_key]["first_seen"]
    from datetime import UTC, datetime

    run(path, report(finding(), generated_at=datetime(2026, 11, 26, tzinfo=UTC)))
    entry = json.loads(path.read_text())["findings"][finding().baseline_key]
    assert entry["first_seen"] == first_seen and entry["last_seen"].startswith("2026-11-26")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "corrupt baseline (not JSON"),
        ('{"kind": "netaudit.report", "schema_version": 1}', "not a netaudit baseline"),
        (
            '{"kind": "netaudit.baseline", "schema_version": 9, "findings": {}, "failures": {}}',
            "this netaudit reads 1, got 9",
        ),
        (
            '{"kind": "netaudit.baseline", "schema_version": 1, "findings": {"k": 3}, "failures": {}}',
            "corrupt entries",
        ),
    ],
)
def test_bad_baselines_are_refused_and_untouched(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=re.escape(message)) as error:
        baseline.load(str(path))
    assert str(error.value).startswith(str(path))
    assert path.read_text() == content
