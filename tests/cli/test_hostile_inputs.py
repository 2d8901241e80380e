"""Hostile inventories, configs and baselines through the real CLI: never an internal error,
never a traceback, never a hang, never a file outside the test's directory.

Cases are random mutations of valid documents (seeded, so a failure is reproducible by name)
plus hand-made ones for what an attacker would try first. bench/fuzz_inputs.py runs the same
generator by the thousand. Every run is `scan --dry-run` against 198.18.0.1: nothing is sent.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import os
import random
import re
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netaudit import cli, inventory_json
from netaudit.environment import Environment
from tests.unit.test_inventory_json import sample

REPO = Path(__file__).resolve().parents[2]
TARGET = "198.18.0.1"
CASE_TIMEOUT_S = 5.0
MAX_RANDOM_BYTES = 2 << 20  # hand-made cases test size; random ones test content, quickly
SPECIAL_FILES = ("fifo", "/dev/zero", "directory", "missing")
# Cases that fail because of code outside this test's owner, keyed by case name (see report).
KNOWN_FAILURES: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile input. ``role`` is where it goes (inventory, config, baseline); ``content``
    is the file's bytes, or None for a special file named by ``special``."""

    name: str
    role: str
    content: bytes | None = None
    special: str | None = None


# Valid documents to start from ------------------------------------------------------------


def valid_inventory() -> dict[str, Any]:
    return inventory_json.to_json(sample())


def valid_baseline() -> dict[str, Any]:
    seen = {"first_seen": "2026-11-24T12:00:00.000Z", "last_seen": "2026-11-25T12:00:00.000Z"}
    return {
        "kind": "netaudit.baseline",
        "schema_version": 1,
        "netaudit_version": "0.1.0",
        "updated_at": "2026-11-25T12:00:00.000Z",
        "findings": {"NA001|node01|tcpstore|ipv4|203.0.113.0/24": {**seen, "host": "node01"}},
        "failures": {"node# down": {**seen, "text": "node1 down"}},
    }


ROOT_PLACEHOLDER = "@ROOT@"


def valid_configs() -> list[tuple[str, str]]:
    """The shipped sample configs, their absolute paths moved under ROOT_PLACEHOLDER (which
    materialize replaces), so that the cases do not depend on where they run."""
    configs = []
    for path in sorted((REPO / "sample_configs").glob("*.toml")):
        text = re.sub(r'"/(?!dev/)', f'"{ROOT_PLACEHOLDER}/abs/', path.read_text())
        configs.append((path.stem, text))
    return configs


# Mutations --------------------------------------------------------------------------------

HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**64, 10**4000, 1e308, -0.0, "", " ", "../../escaped",
    "/etc/passwd", "node\nNA001 forged line", "a|b|c", "%h%h", "x" * 5000, "\x00", "\u202e",
    "8.8.8.8", "0.0.0.0", "::", "::ffff:127.0.0.1", "fe80::1%eth0", "198.18.0.0/24", "2001:db8::1",
    "2999-01-01T00:00:00.000Z", "1970-01-01T00:00:00Z", "not a date", "NaN", [], {}, [None],
    {"kind": "netaudit.inventory"}, list(range(3000)),
)  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield from _paths(item, (*prefix, index))


def _mutate_data(rng: random.Random, document: Any) -> Any:
    data = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        paths = [path for path in _paths(data) if path]
        if not paths:
            return data
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        roll = rng.random()
        if roll < 0.55:
            parent[last] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
        elif roll < 0.7 and isinstance(parent, dict):
            del parent[last]
        elif roll < 0.8 and isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = parent[last]
        elif roll < 0.9:
            parent[last] = [parent[last]] * rng.choice((2, 100, 5000))
        else:
            parent[last] = {"nested": parent[last]}
    return data


def _mutate_bytes(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    roll = rng.random()
    position = rng.randrange(len(data) + 1)
    if roll < 0.25:
        return bytes(data[:position])  # truncated
    if roll < 0.5 and data:
        data[min(position, len(data) - 1)] = rng.randrange(256)
    elif roll < 0.7:
        data[position:position] = rng.choice((b"[" * 2000, b"{" * 700, b"9" * 5000, b"\xff\xfe", b"\x00"))
    elif roll < 0.85:
        start = rng.randrange(len(data) + 1)
        data[start:start] = data[position : position + rng.randint(1, 200)] * rng.randint(1, 50)
    else:
        del data[position : position + rng.randint(1, 64)]
    return bytes(data)


TOML_VALUES = (
    "inf", "nan", "-inf", "-1", "0", "1e400", "9" * 5000, '"../../escaped"', '"x\\ny"', "[]", "{}",
    "[" * 600 + "]" * 600, "{a = " * 300 + "1" + "}" * 300, '["1-65535"]', "1979-05-27T07:32:00Z",
    "true", '"198.18.0.0/8"', '["::/0"]', '"%h/../../x"', '"/dev/zero"', "[1, 2", '"\\u0000"',
)  # fmt: skip


def _mutate_toml(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        assignments = [i for i, line in enumerate(lines) if re.match(r"\s*[A-Za-z_.]+\s*=", line)]
        roll = rng.random()
        if roll < 0.6 and assignments:
            index = rng.choice(assignments)
            key = lines[index].split("=", 1)[0]
            lines[index] = f"{key}= {rng.choice(TOML_VALUES)}"
        elif roll < 0.75 and lines:
            del lines[rng.randrange(len(lines))]
        elif roll < 0.85:
            lines.insert(rng.randrange(len(lines) + 1), f"{rng.choice(('unknown', 'a.b.c', 'x'))} = 1")
        else:
            return _mutate_bytes(rng, "\n".join(lines).encode())
    return "\n".join(lines).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def generate(count: int, seed: int) -> list[Case]:
    """``count`` random cases (about half inventories, a quarter each baselines and configs)
    and the hand-made ones. Names are stable for a given seed and count."""
    rng = random.Random(seed)
    inventory, baseline, configs = valid_inventory(), valid_baseline(), valid_configs()
    cases = hand_made(inventory, baseline, configs)
    for number in range(count):
        roll = rng.random()
        raw = b"x" * (MAX_RANDOM_BYTES + 1)
        while len(raw) > MAX_RANDOM_BYTES:  # stacked repetitions can reach gigabytes
            if roll < 0.75:
                document = inventory if roll < 0.5 else baseline
                mutated = _mutate_data(rng, document) if rng.random() < 0.6 else None
                raw = _json(mutated) if mutated is not None else _mutate_bytes(rng, _json(document))
            else:
                stem, text = rng.choice(configs)
                raw = _mutate_toml(rng, text)
        if roll < 0.5:
            cases.append(Case(f"random-inventory-{seed}-{number}", "inventory", raw))
        elif roll < 0.75:
            cases.append(Case(f"random-baseline-{seed}-{number}", "baseline", raw))
        else:
            cases.append(Case(f"random-config-{stem}-{seed}-{number}", "config", raw))
    return cases


def _with(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> bytes:
    data = copy.deepcopy(document)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return _json(data)


def hand_made(
    inventory: dict[str, Any], baseline: dict[str, Any], configs: list[tuple[str, str]]
) -> list[Case]:
    cases = [Case(f"{role}-{special.strip('/').replace('/', '-')}", role, special=special)
             for role in ("inventory", "config", "baseline") for special in SPECIAL_FILES]  # fmt: skip
    deep_json = {
        "deep-array": b"[" * 100_000 + b"]" * 100_000,
        "deep-object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "deep-unclosed": b"[" * 1_000_000,
        "long-integer": b'{"schema_version": ' + b"9" * 5000 + b"}",
        "nan": b'{"schema_version": NaN}',
        "empty": b"",
        "bom": b"\xef\xbb\xbf" + _json(inventory),
        "not-utf8": b'{"host": "\xff\xfe"}',
        "utf16": _json(inventory).decode().encode("utf-16"),
        "null": b"null",
        "string": b'"node01"',
    }
    for role in ("inventory", "baseline"):
        cases += [Case(f"{role}-{name}", role, raw) for name, raw in deep_json.items()]
    host_names = {
        "traversal": "../../escaped", "absolute": "/tmp/escaped", "newline": "node01\nNA001 forged",
        "pipe": "node|01", "percent": "%h", "empty": "", "nul": "node\x00", "long": "n" * 70_000,
        "dot": ".", "dotdot": "..", "cidr": "198.18.0.0/24",
    }  # fmt: skip
    cases += [Case(f"inventory-host-{name}", "inventory", _with(inventory, ("host",), host))
              for name, host in host_names.items()]  # fmt: skip
    cases += [
        Case("inventory-foreign-bind", "inventory", _with(inventory, ("listeners", 0, "address"), "203.0.113.9")),
        Case("inventory-foreign-interface", "inventory",
             _with(inventory, ("namespaces", 0, "interfaces", 0, "address"), "8.8.8.8")),
        Case("inventory-loopback-bind", "inventory", _with(inventory, ("listeners", 0, "address"), "127.0.0.1")),
        Case("inventory-future", "inventory", _with(inventory, ("collected_at",), "2999-01-01T00:00:00.000Z")),
        Case("inventory-ancient", "inventory", _with(inventory, ("collected_at",), "0001-01-01T00:00:00.000Z")),
        Case("inventory-forged-handshake", "inventory", _with(inventory, ("listeners", 1, "handshake"), "tcpstore-ping")),
        Case("inventory-huge-listeners", "inventory",
             _with(inventory, ("listeners",), inventory["listeners"] * 5000)),
        Case("inventory-huge-interfaces", "inventory", _with(inventory, ("namespaces", 0, "interfaces"),
             [dict(inventory["namespaces"][0]["interfaces"][0], address=f"198.18.{i // 256}.{i % 256}")
              for i in range(5000)])),
        Case("inventory-wrong-types", "inventory", _json({key: [value] for key, value in inventory.items()})),
        Case("inventory-bundle-1000", "inventory", _json([inventory] * 1000)),
        Case("inventory-bundle-nested", "inventory", _json([[inventory]])),
        Case("inventory-bundle-empty", "inventory", b"[]"),
        Case("inventory-port-0", "inventory", _with(inventory, ("listeners", 0, "port"), 0)),
        Case("inventory-port-huge", "inventory", _with(inventory, ("listeners", 0, "port"), 10**4000)),
    ]  # fmt: skip
    toml_cases = {
        "deep-array": "a = " + "[" * 600 + "]" * 600,
        "deep-inline-table": "a = " + "{b = " * 600 + "1" + "}" * 600,
        "deep-dotted": ".".join(["a"] * 5000) + " = 1",
        "long-integer": "[scan]\nmax_targets = " + "9" * 5000,
        "nan-timeout": "[scan]\ntimeout_s = nan",
        "inf-rate": "[scan]\nrate_per_s = inf",
        "all-ports": '[scan]\ntargets = ["198.18.0.0/24"]\nport_ranges = ["1-65535"]',
        "traversal-verdict": '[gate]\nverdict_path = "../../escaped/%h.json"',
        "not-utf8": "a = '\udcff'",
        "empty": "",
    }
    cases += [Case(f"config-{name}", "config", text.encode("utf-8", "surrogateescape"))
              for name, text in toml_cases.items()]  # fmt: skip
    cases += [Case(f"config-sample-{stem}", "config", text.encode()) for stem, text in configs]
    cases += [
        Case("baseline-key-without-host", "baseline", _with(baseline, ("findings",), {"x": {"first_seen": "a"}})),
        Case("baseline-huge", "baseline", _with(baseline, ("failures",),
             {f"k{i}": {"first_seen": "a", "text": "t"} for i in range(20_000)})),
    ]  # fmt: skip
    return cases


# Running a case ---------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """A BaseException, so that cli.main's `except Exception` cannot turn a hang into exit 4."""


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None  # None: it hung
    stderr: str


def materialize(case: Case, directory: Path, valid_inventory_path: Path, root: Path) -> list[str]:
    """Write the case under ``directory`` (absolute paths in configs moved under ``root``)
    and return the argv that feeds it to `scan`."""
    path = directory / f"{case.role}.input"
    if case.special == "fifo":
        os.mkfifo(path)
    elif case.special == "directory":
        path.mkdir()
    elif case.special == "missing":
        pass
    elif case.special is not None:
        path = Path(case.special)
    else:
        assert case.content is not None
        path.write_bytes(case.content.replace(ROOT_PLACEHOLDER.encode(), str(root).encode()))
    if case.role == "inventory":
        return ["scan", "--dry-run", "--format", "json", "--inventory", str(path), TARGET]
    option = "--config" if case.role == "config" else "--baseline"
    return [
        "scan",
        "--dry-run",
        "--format",
        "json",
        option,
        str(path),
        "--inventory",
        str(valid_inventory_path),
        TARGET,
    ]


def run_case(argv: list[str], timeout_s: float = CASE_TIMEOUT_S) -> Outcome:
    """cli.main in this (main) thread under an interval timer: a blocking read is interrupted
    by the signal, so a hang ends the case instead of the test run."""
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(stdout=stdout, stderr=stderr, stdin=io.StringIO(""), environ={})

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        status: int | None = cli.main(argv, env)
    except CaseTimeout:
        status = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(status, stderr.getvalue())


def problems(outcome: Outcome) -> list[str]:
    found = []
    if outcome.status is None:
        found.append("hung")
    elif outcome.status == 4:
        found.append("exit 4 (internal error)")
    if "Traceback" in outcome.stderr:
        found.append("traceback on stderr")
    return found


def snapshot(directory: Path) -> set[str]:
    return {str(Path(base, name)) for base, dirs, files in os.walk(directory) for name in (*dirs, *files)}


# The test -------------------------------------------------------------------------------

CASES = 260
SEED = 20261125


@functools.cache
def _generated() -> tuple[Case, ...]:
    return tuple(generate(CASES, SEED))


def _cases() -> list[Any]:
    generated = _generated()
    return [
        pytest.param(case.name, id=case.name,
                     marks=pytest.mark.xfail(strict=False, reason=KNOWN_FAILURES[case.name]))
        if case.name in KNOWN_FAILURES else case.name
        for case in generated
    ]  # fmt: skip


def test_generator_is_deterministic_and_broad() -> None:
    first, second = list(_generated()), generate(CASES, SEED)
    assert first == second
    roles = {case.role for case in first}
    assert roles == {"inventory", "config", "baseline"}
    assert len({case.name for case in first}) == len(first)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Case]]:
    root = tmp_path_factory.mktemp("hostile")
    return root, {case.name: case for case in _generated()}


@pytest.mark.skipif(sys.platform != "linux", reason="FIFOs and /dev/zero as Linux has them")
@pytest.mark.parametrize("name", _cases())
def test_hostile_input_is_refused_or_used_safely(
    name: str, corpus: tuple[Path, dict[str, Case]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, cases = corpus
    case = cases[name]
    # Given the input three levels below its own directory, so "../../escaped" from the
    # input's directory still lands inside the watched root...
    own = root / "cases" / name
    directory = own / "a" / "b"
    directory.mkdir(parents=True)
    valid = directory / "valid-inventory.json"
    valid.write_text(json.dumps(valid_inventory()))
    argv = materialize(case, directory, valid, root)
    monkeypatch.chdir(directory)  # relative paths in a config land here too
    before = snapshot(root)
    # ...when the scan reads it,
    outcome = run_case(argv)
    # then it ends in time, with a status that is not a bug, and writes nothing elsewhere.
    assert problems(outcome) == [], f"{name}: {argv} -> {outcome.status}: {outcome.stderr[-2000:]}"
    created = {path for path in snapshot(root) - before if not path.startswith(f"{own}/")}
    assert created == set(), f"{name} wrote outside its directory"
