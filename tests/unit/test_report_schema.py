"""The report contract: what `netaudit scan --format json` prints validates against
docs/report.schema.json in every mode, and the schema is strict enough to refuse what the
renderer does not write (unknown keys, values outside a closed set, missing keys)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netaudit.audit.settings import TRUST_SCOPES
from netaudit.models import (
    Attempt,
    BaselineChanges,
    Confidence,
    Family,
    GapKind,
    Method,
    PortState,
    Report,
    Severity,
)
from netaudit.report import report_json
from tests.unit.test_golden_reports import rich_report

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def _local() -> Report:
    """The local audit: loopback handshakes (local path, not evidence), a static NA020 finding,
    no sources, no scope."""
    rich = rich_report()
    store = rich.endpoints[0]
    loopback = Attempt("::1", PortState.OPEN, Method.HANDSHAKE, "connected over loopback", 0.05,
                       is_local_path=True, is_path_verified=True, confirmed=True,
                       detail="VALIDATE+PING: nonce echoed", vantage="node01")  # fmt: skip
    static = replace(
        rich.findings[0], rule_id="NA020", title="potentially exposed (static analysis, not yet proven)",
        severity=Severity.MEDIUM, source="", source_network="static", state=PortState.NOT_TESTED,
        baseline_state=None, vantage="node01",
    )  # fmt: skip
    return replace(
        rich, mode="local", vantage_host="node01", sources=(), findings=(static,),
        endpoints=(replace(store, address="::", attempts=(loopback,), inventory_age_s=0.0),),
        gaps=(), failed_hosts=(), changes=None, scope=None, probes_sent=0,
    )  # fmt: skip


def _dry_run() -> Report:
    rich = rich_report()
    planned = tuple(
        replace(e, attempts=tuple(replace(a, state=PortState.NOT_TESTED, method=Method.NONE,
                                          reason="dry run: not sent", rtt_ms=None, confirmed=None,
                                          detail=None, is_path_verified=False) for a in e.attempts))
        for e in rich.endpoints
    )  # fmt: skip
    return replace(rich, mode="dry-run", findings=(), endpoints=planned, gaps=(), failed_hosts=(),
                   changes=None, probes_sent=0)  # fmt: skip


def _first_baseline() -> Report:
    rich = rich_report()
    keys = tuple(sorted(f.baseline_key for f in rich.findings))
    changes = BaselineChanges(new=keys, unchanged=(), resolved=(), new_failures=rich.incomplete,
                              resolved_failures=(), is_first_run=True)  # fmt: skip
    findings = tuple(replace(f, baseline_state="new") for f in rich.findings)
    return replace(rich, findings=findings, changes=changes)


def _connect_scan() -> Report:
    rich = rich_report()
    findings = tuple(replace(f, baseline_state=None) for f in rich.findings)
    return replace(rich, mode="connect", findings=findings, changes=None)


REPORTS = {
    "local": _local,
    "syn-scan": rich_report,
    "connect-scan-no-baseline": _connect_scan,
    "dry-run": _dry_run,
    "first-baseline": _first_baseline,
}


def _errors(document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(document)]


def test_the_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_mode_validates(name: str) -> None:
    document = report_json.to_json(REPORTS[name]())
    # Through text and back, as a reader of the output would see it.
    assert _errors(json.loads(json.dumps(document))) == []


def test_the_fixtures_cover_what_the_schema_distinguishes() -> None:
    # A schema test over reports that never show a value proves nothing about it: the
    # fixtures together must show every mode, state, method and the optional objects.
    documents = [report_json.to_json(build()) for build in REPORTS.values()]
    modes = {d["vantage"]["mode"] for d in documents}
    attempts = [a for d in documents for e in d["endpoints"] for a in e["attempts"]]
    assert modes == {"syn", "connect", "local", "dry-run"}
    assert {a["state"] for a in attempts} == {s.value for s in PortState}
    assert {a["method"] for a in attempts} == {m.value for m in Method if m is not Method.CONNECT}
    assert any(a["is_unverified_filter"] for a in attempts)
    assert {d["changes"] is None for d in documents} == {True, False}
    assert {d["scope"] is None for d in documents} == {True, False}
    assert any(f["accepted"] for d in documents for f in d["findings"])
    assert any(e["listener"] is None for d in documents for e in d["endpoints"])
    assert any(g["host"] is None for d in documents for g in d["gaps"])


def _document() -> dict[str, Any]:
    return report_json.to_json(rich_report())


def _set(document: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("surprise",), 1, "Additional properties are not allowed"),
        (("findings", 0, "surprise"), 1, "Additional properties are not allowed"),
        (("endpoints", 0, "attempts", 0, "surprise"), 1, "Additional properties are not allowed"),
        (("endpoints", 0, "attempts", 0, "state"), "half-open", "is not one of"),
        (("findings", 0, "severity"), "urgent", "is not one of"),
        (("vantage", "mode"), "stealth", "is not one of"),
        (("gaps", 0, "kind"), "mystery", "is not one of"),
        (("findings", 0, "port"), 70000, "is greater than the maximum"),
        (("schema_version",), 2, "was expected"),
        (("generated_at",), "yesterday", "is not a 'date-time'"),
    ],
)
def test_the_schema_refuses_what_the_renderer_never_writes(
    path: tuple[str | int, ...], value: object, why: str
) -> None:
    errors = _errors(_set(_document(), path, value))
    assert len(errors) == 1, errors
    assert why in errors[0]


@pytest.mark.parametrize("key", ["summary", "findings", "endpoints", "incomplete", "changes"])
def test_required_keys_are_required(key: str) -> None:
    document = _document()
    del document[key]
    assert any(f"'{key}' is a required property" in e for e in _errors(document))


def test_scope_and_gaps_are_optional_and_scope_may_grow() -> None:
    # The lead is adding these two keys now: a report without them still validates, and the
    # scope object may carry keys the schema does not list yet (its notes, for one).
    document = _document()
    without = {k: v for k, v in document.items() if k not in ("scope", "gaps")}
    assert _errors(without) == []
    grown = _set(document, ("scope", "notes"), ["a CIDR target filters, it is not swept"])
    grown = _set(grown, ("scope", "per_node"), {"node01": 2})
    assert _errors(grown) == []
    assert _errors(_set(document, ("scope", "nodes"), "two")) != []


@pytest.mark.parametrize(
    ("definition", "enum"),
    [
        ("severity", Severity),
        ("state", PortState),
        ("family", Family),
    ],
)
def test_schema_enums_follow_the_models(definition: str, enum: type[StrEnum]) -> None:
    assert SCHEMA["$defs"][definition]["enum"] == [item.value for item in enum]


def test_nested_enums_follow_the_models() -> None:
    defs = SCHEMA["$defs"]
    assert defs["attempt"]["properties"]["method"]["enum"] == [m.value for m in Method]
    assert defs["gap"]["properties"]["kind"]["enum"] == [k.value for k in GapKind]
    assert defs["endpoint"]["properties"]["confidence"]["enum"] == [*(c.value for c in Confidence), None]
    assert set(SCHEMA["properties"]["trust_scope"]["enum"]) == TRUST_SCOPES
