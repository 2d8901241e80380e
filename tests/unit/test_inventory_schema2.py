"""Inventory schema 2: each process's facts once, in ``processes`` keyed by pid; listeners name
their process by ``pid``. Schema 1 files (facts copied onto every listener) still read, to the
same model. Both layouts match their published JSON Schemas."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netaudit import inventory_json
from netaudit.inventory_json import InventoryError
from netaudit.models import Family, Inventory, Listener, ListenerSource
from tests.unit.test_inventory_json import sample, set_at

DOCS = Path(__file__).parents[2] / "docs"
SCHEMA_2 = json.loads((DOCS / "inventory.schema.json").read_text())
SCHEMA_1 = json.loads((DOCS / "inventory.schema.v1.json").read_text())

# What the schema 1 writer (netaudit before schema 2) printed for test_inventory_json.sample(),
# verbatim: a file like this must keep reading as what it described.
SCHEMA_1_SAMPLE = json.loads(r"""
{"schema_version": 1, "kind": "netaudit.inventory", "host": "node01",
"collected_at": "2026-11-25T12:00:00.000Z", "netaudit_version": "0.1.0", "privilege": {"is_root": true,
"can_enter_namespaces": true, "can_read_all_processes": true}, "is_complete": false,
"gaps": ["1 thing unreadable"], "intended_subnets": ["198.18.0.0/24"],
"namespaces": [{"inode": 4026531840, "is_probe_namespace": true, "names": [], "pids": 120,
"source": "sock_diag", "interfaces": [{"name": "fabric", "family": "ipv4", "address": "198.18.0.1",
"prefix": 24, "is_loopback": false, "is_link_local": false}, {"name": "lo", "family": "ipv6",
"address": "::1", "prefix": 128, "is_loopback": true, "is_link_local": false}]}],
"listeners": [{"netns": 4026531840, "family": "ipv6", "address": "::", "port": 29500, "inode": 7,
"source": "sock_diag", "v6only": false, "backlog": 4096, "uid": 1000, "pid": 100, "pids": [100],
"process_name": "pt_elastic", "user": "alice", "cmdline": ["python3", "torchrun", "train.py"],
"job": {"slurm_job_id": "4242", "slurm_job_user": null, "rank": 0, "local_rank": null, "world_size": 2,
"torchelastic_run_id": "r1", "master_addr": null, "master_port": 29500, "torch_version": "2.13.0+cpu"},
"process": {"pid": 100, "ppid": 1, "name": "pt_elastic", "uid": 1000, "user": "alice",
"cmdline": ["python3", "torchrun", "train.py"], "netns": 4026531840,
"environment": {"SLURM_JOB_ID": "4242"}, "threads": {"pt_elastic": 1, "pt_tcpstore_uv": 1},
"libraries": ["libtorch_cpu.so"], "cgroup": "/system.slice/slurmstepd.scope/job_4242",
"is_complete": true}, "service": "tcpstore", "variant": "agent-worker-store", "confidence": "high",
"evidence": ["thread pt_tcpstore_uv x1"], "signature": "tcpstore", "risk": "critical",
"do_not_touch": false, "connect_safe": true, "handshake": "tcpstore-ping",
"exposure": {"scope": "dual-stack-wildcard", "answers_on": ["198.18.0.1", "203.0.113.1"],
"outside_intended": ["203.0.113.1"], "potentially_exposed": true, "note": "n"}}, {"netns": 4026531840,
"family": "ipv4", "address": "0.0.0.0", "port": 22, "inode": 8, "source": "procfs", "v6only": null,
"backlog": null, "uid": 0, "pid": null, "pids": [], "process_name": null, "user": null, "cmdline": null,
"job": null, "process": null, "service": null, "variant": null, "confidence": null, "evidence": [],
"signature": null, "risk": null, "do_not_touch": false, "connect_safe": false, "handshake": null,
"exposure": {"scope": "ipv4-wildcard", "answers_on": [], "outside_intended": [],
"potentially_exposed": false, "note": "x"}}]}
""")


def shared_sample() -> Inventory:
    """sample() plus a second listener of the torchrun agent (an equal, not identical, copy of
    its facts) and one whose process exited before its facts were read."""
    base = sample()
    store, other = base.listeners
    assert store.process is not None
    rendezvous = replace(store, port=29400, inode=9, process=replace(store.process))
    vanished = Listener(
        netns=store.netns, family=Family.IPV4, address="198.18.0.1", port=6006, inode=10,
        source=ListenerSource.NETLINK, v6only=None, backlog=128, uid=1000, pid=4242, pids=(4242,),
        process=None, exposure=other.exposure,
    )  # fmt: skip
    return replace(base, listeners=(store, rendezvous, vanished, other))


def as_schema_1(document: dict[str, Any]) -> dict[str, Any]:
    """A schema 2 document as the schema 1 writer printed the same inventory: the facts copied
    onto every listener (checked against the verbatim SCHEMA_1_SAMPLE above)."""
    old = copy.deepcopy(document)
    processes = old.pop("processes")
    old.pop("cgroup2_mount")  # added with schema 2; schema 1 never had it
    old["schema_version"] = 1
    for listener in old["listeners"]:
        pid = listener["pid"]
        facts = copy.deepcopy(processes[str(pid)]) if pid is not None else None
        job = facts.pop("job") if facts else None
        if facts:
            facts.pop("packages")  # added with schema 2; schema 1 never had it
        listener.update(
            process_name=facts["name"] if facts else None,
            user=facts["user"] if facts else None,
            cmdline=facts["cmdline"] if facts else None,
            job=job,
            process={"pid": pid, **facts} if facts else None,
        )
    return old


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _roundtrip(document: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(document))


# The published schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [SCHEMA_1, SCHEMA_2], ids=["schema-1", "schema-2"])
def test_both_schemas_are_valid_draft_2020_12(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("inventory", [sample, shared_sample])
def test_written_inventories_are_schema_2(inventory: Callable[[], Inventory]) -> None:
    document = _roundtrip(inventory_json.to_json(inventory()))
    _validator(SCHEMA_2).validate(document)
    assert document["schema_version"] == 2
    assert not _validator(SCHEMA_1).is_valid(document)


def test_the_schema_1_fixture_is_schema_1_and_what_the_old_writer_printed() -> None:
    _validator(SCHEMA_1).validate(SCHEMA_1_SAMPLE)
    assert not _validator(SCHEMA_2).is_valid(SCHEMA_1_SAMPLE)
    assert as_schema_1(inventory_json.to_json(sample())) == SCHEMA_1_SAMPLE
    _validator(SCHEMA_1).validate(as_schema_1(inventory_json.to_json(shared_sample())))


def test_the_schema_says_what_a_key_of_processes_is() -> None:
    document = _roundtrip(inventory_json.to_json(shared_sample()))
    document["processes"]["0100"] = None
    assert not _validator(SCHEMA_2).is_valid(document)


# Writing ------------------------------------------------------------------------------------


def test_each_process_is_written_once_and_listeners_name_it_by_pid() -> None:
    document = inventory_json.to_json(shared_sample())
    assert list(document["processes"]) == ["100", "4242"]
    assert document["processes"]["4242"] is None  # exited: pid known, facts not
    agent = document["processes"]["100"]
    assert agent["cmdline"] == ["python3", "torchrun", "train.py"]
    assert agent["job"]["slurm_job_id"] == "4242"
    assert [item["pid"] for item in document["listeners"]] == [100, 100, 4242, None]
    for listener in document["listeners"]:
        assert not {"process", "job", "cmdline", "user", "process_name"} & listener.keys()


def test_the_json_shrinks_with_listeners_per_process() -> None:
    # Given one process with 50 listeners, schema 2 holds its facts once.
    store = sample().listeners[0]
    many = replace(
        sample(), listeners=tuple(replace(store, port=20000 + i, inode=100 + i) for i in range(50))
    )
    document = inventory_json.to_json(many)
    text, facts = json.dumps(document), json.dumps(document["processes"]["100"])
    assert text.count('"cmdline"') == 1
    assert len(json.dumps(as_schema_1(document))) - len(text) > 49 * len(facts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pid": None}, "process facts (pid 100) without a pid"),
        ({"pid": 101, "pids": (101,)}, "pid 101 carries the facts of pid 100"),
    ],
)
def test_listeners_that_break_the_model_are_not_written(change: dict[str, Any], message: str) -> None:
    store = sample().listeners[0]
    with pytest.raises(ValueError, match=re.escape(message)):
        inventory_json.to_json(replace(sample(), listeners=(replace(store, **change),)))


@pytest.mark.parametrize("second", ["different facts", "no facts"])
def test_two_sets_of_facts_for_one_pid_are_not_written(second: str) -> None:
    store = sample().listeners[0]
    assert store.process is not None
    other = replace(store.process, cmdline=("python3", "evil.py")) if second == "different facts" else None
    inventory = replace(sample(), listeners=(store, replace(store, port=29400, process=other)))
    with pytest.raises(ValueError, match="pid 100 has different facts on another listener"):
        inventory_json.to_json(inventory)


# Reading ------------------------------------------------------------------------------------


def _read(document: dict[str, Any]) -> Inventory:
    return inventory_json.from_json(_roundtrip(document), "node01.json")


@pytest.mark.parametrize("schema", [1, 2])
def test_both_schemas_read_back_to_the_same_model(schema: int) -> None:
    document = inventory_json.to_json(shared_sample())
    found = _read(as_schema_1(document) if schema == 1 else document)
    assert found == shared_sample()


def test_the_old_writers_file_reads_as_what_it_described() -> None:
    assert inventory_json.from_json(copy.deepcopy(SCHEMA_1_SAMPLE), "old.json") == sample()


@pytest.mark.parametrize("schema", [1, 2])
def test_the_listeners_of_one_process_share_one_process_info(schema: int) -> None:
    document = inventory_json.to_json(shared_sample())
    store, rendezvous, vanished, other = _read(as_schema_1(document) if schema == 1 else document).listeners
    assert store.process is not None and store.process is rendezvous.process
    assert (vanished.pid, vanished.process) == (4242, None)
    assert (other.pid, other.process) == (None, None)
    # Repeated classifications and hints are read once too.
    assert vanished.exposure is other.exposure


def _refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError) as error:
        inventory_json.from_json(document, "node01.json")
    text = str(error.value)
    assert text.startswith("node01.json: ")
    assert message in text
    assert "\n" not in text


def _schema_2(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = _roundtrip(inventory_json.to_json(shared_sample()))
    edit(document)
    return document


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], object]:
    def edit(document: dict[str, Any]) -> None:
        set_at(document, path, value)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(("listeners", 1, "pid"), 7), "listeners[1].pid: 7 has no entry in processes"),
        (_set(("processes", "4242"), KeyError), "listeners[2].pid: 4242 has no entry in processes"),
        (lambda d: d["processes"].update({"77": None}), "processes: pid 77 is no listener's pid"),
        (_set(("processes",), KeyError), "processes: is required"),
        (_set(("processes",), [None]), "processes: expected a table, got list"),
        (
            _set(("processes", "100", "cmdline"), "python3"),
            "processes.100.cmdline: expected a list, got string",
        ),
        (_set(("processes", "100", "pid"), 100), "processes.100.pid: unknown key"),
        (_set(("processes", "100", "job"), KeyError), "processes.100.job: is required"),
        (_set(("processes", "100", "job", "rank"), "0"), "processes.100.job.rank: expected an integer"),
        (_set(("processes", "100", "threads"), {"x": True}), "processes.100.threads: expected name: count"),
        (_set(("processes", "100"), "pt_elastic"), "processes.100: expected a table, got string"),
        (_set(("listeners", 0, "process"), None), "listeners[0].process: unknown key"),
        (_set(("listeners", 0, "cmdline"), ["python3"]), "listeners[0].cmdline: unknown key"),
        (_set(("schema_version",), 3), "schema_version: this netaudit reads 1 or 2, got 3"),
    ],
)
def test_hostile_schema_2_is_refused_with_the_field(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    _refused(_schema_2(edit), message)


@pytest.mark.parametrize(
    "key", ["0100", "-100", "+100", "1e2", "１００", "abc", "", "4294967296", "a\nb" * 20]
)
def test_a_key_of_processes_is_a_pid_in_decimal(key: str) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["processes"][key] = document["processes"].pop("100")

    _refused(_schema_2(edit), "a key of processes is a pid")


def test_an_equal_classification_of_other_types_is_not_taken_for_the_first() -> None:
    # Python has 1 == True: a second listener's `connect_safe: 1` must not pass as the first's true.
    _refused(_schema_2(_set(("listeners", 1, "connect_safe"), 1)), "listeners[1].connect_safe: expected true")
    _refused(
        _schema_2(_set(("listeners", 1, "exposure", "potentially_exposed"), 1)),
        "listeners[1].exposure.potentially_exposed: expected true or false",
    )

    # Nor does a null pass for a key the first left out (an unclassified listener may omit
    # do_not_touch, but not set it to null).
    def edit(document: dict[str, Any]) -> None:
        del document["listeners"][2]["do_not_touch"]
        document["listeners"][3]["do_not_touch"] = None

    assert _read(_schema_2(lambda d: d["listeners"][2].pop("do_not_touch"))) == shared_sample()
    _refused(_schema_2(edit), "listeners[3].do_not_touch: expected true or false, got null")


def _schema_1(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = as_schema_1(_roundtrip(inventory_json.to_json(shared_sample())))
    edit(document)
    return document


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set(("listeners", 1, "process", "cmdline"), ["python3", "evil.py"]),
         "listeners[1].process: differs from the facts of pid 100 on an earlier listener"),
        (_set(("listeners", 1, "process"), None),
         "listeners[1].process: differs from the facts of pid 100 on an earlier listener"),
        (_set(("listeners", 1, "process", "is_complete"), 1),
         "listeners[1].process.is_complete: expected true or false"),
        (_set(("listeners", 1, "process", "pid"), 101), "listeners[1].process.pid: 101 is not the listener's pid"),
        (_set(("listeners", 0, "pid"), None), "listeners[0].process: facts of a process on a listener without"),
        (_set(("listeners", 0, "processes"), {}), "listeners[0].processes: unknown key"),
        (_set(("processes",), {}), "processes: unknown key"),
    ],
)  # fmt: skip
def test_hostile_schema_1_is_refused_with_the_field(
    edit: Callable[[dict[str, Any]], object], message: str
) -> None:
    _refused(_schema_1(edit), message)
