"""The inventory contract: what we write validates against docs/inventory.schema.json and reads
back equal; hostile or foreign JSON is refused with a line naming the file and field."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netaudit import inventory_json
from netaudit.inventory_json import InventoryError
from netaudit.models import (
    BindScope,
    Classification,
    Confidence,
    ExposureHint,
    Family,
    InterfaceAddress,
    Inventory,
    JobIdentity,
    Listener,
    ListenerSource,
    NetNamespace,
    Privilege,
    ProcessInfo,
    Severity,
)  # fmt: skip

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "inventory.schema.json").read_text())


def sample() -> Inventory:
    job = JobIdentity(slurm_job_id="4242", rank=0, world_size=2, torchelastic_run_id="r1",
                      master_port=29500, torch_version="2.13.0+cpu")  # fmt: skip
    process = ProcessInfo(
        pid=100, ppid=1, name="pt_elastic", uid=1000, user="alice",
        cmdline=("python3", "torchrun", "train.py"), netns=4026531840,
        environment=(("SLURM_JOB_ID", "4242"),), threads=(("pt_elastic", 1), ("pt_tcpstore_uv", 1)),
        libraries=("libtorch_cpu.so",), cgroup="/system.slice/slurmstepd.scope/job_4242", job=job,
    )  # fmt: skip
    store = Listener(
        netns=4026531840, family=Family.IPV6, address="::", port=29500, inode=7, source=ListenerSource.NETLINK,
        v6only=False, backlog=4096, uid=1000, pid=100, pids=(100,), process=process,
        classification=Classification("tcpstore", "tcpstore", "agent-worker-store", Confidence.HIGH,
                                      ("thread pt_tcpstore_uv x1",), Severity.CRITICAL, False, True,
                                      "tcpstore-ping"),
        exposure=ExposureHint(BindScope.DUAL_STACK, ("198.18.0.1", "203.0.113.1"), ("203.0.113.1",), "n"),
    )  # fmt: skip
    other = Listener(
        netns=4026531840, family=Family.IPV4, address="0.0.0.0", port=22, inode=8,
        source=ListenerSource.PROCFS, v6only=None, backlog=None, uid=0, pid=None, pids=(),
        process=None, exposure=ExposureHint(BindScope.WILDCARD_V4, (), (), "x"),
    )  # fmt: skip
    return Inventory(
        host="node01", collected_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC), netaudit_version="0.1.0",
        privilege=Privilege(True, True, True), intended_subnets=("198.18.0.0/24",),
        namespaces=(NetNamespace(4026531840, True, (), 120, ListenerSource.NETLINK, (
            InterfaceAddress("fabric", Family.IPV4, "198.18.0.1", 24, False, False),
            InterfaceAddress("lo", Family.IPV6, "::1", 128, True, False),)),),
        listeners=(store, other), gaps=("1 thing unreadable",),
    )  # fmt: skip


def test_written_inventory_validates_against_the_published_schema() -> None:
    jsonschema.validate(inventory_json.to_json(sample()), SCHEMA)


def test_round_trip_is_lossless() -> None:
    data = json.loads(json.dumps(inventory_json.to_json(sample())))
    assert inventory_json.from_json(data, "node01.json") == sample()


def set_at(document: Any, path: Sequence[Any], value: Any) -> None:
    """Put ``value`` at ``path`` of a parsed JSON ``document``; the value KeyError deletes it."""
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value


def _mutated(path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(inventory_json.to_json(sample()))
    set_at(data, path, value)
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["kind"], "something.else", "kind: not a netaudit inventory"),
        (["schema_version"], 3, "schema_version: this netaudit reads 1 or 2, got 3"),
        (["listeners", 0, "port"], 70000, "listeners[0].port: expected an integer in 1..65535"),
        (
            ["listeners", 0, "address"],
            "1.2.3",
            "listeners[0].address: '1.2.3' is not an IP address",
        ),
        (["listeners", 1, "address"], "::1", "listeners[1].address: '::1' is not an ipv4 address"),
        (
            ["listeners", 0, "connect_safe"],
            "yes",
            "listeners[0].connect_safe: expected true or false",
        ),
        (["listeners", 0, "do_not_touch"], True, "a do-not-touch listener cannot be connect_safe"),
        (["listeners", 0, "extra"], 1, "listeners[0].extra: unknown key"),
        (["listeners", 0, "confidence"], "sure", "listeners[0].confidence: expected one of"),
        (["host"], KeyError, "host: is required"),
        (["collected_at"], "yesterday", "collected_at: 'yesterday' is not an ISO 8601 time"),
        (["namespaces", 0, "interfaces", 0, "prefix"], 999, "interfaces[0].prefix"),
        (["listeners"], {"a": 1}, "listeners: expected a list"),
    ],
)
def test_hostile_inventories_are_refused_with_the_field(path: list[Any], value: Any, message: str) -> None:
    with pytest.raises(InventoryError) as error:
        inventory_json.from_json(_mutated(path, value), "bad.json")
    assert str(error.value).startswith("bad.json: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("document", [[], "text", 3, None])
def test_non_objects_are_refused(document: object) -> None:
    with pytest.raises(InventoryError, match=r"^x.json: top level: expected a table"):
        inventory_json.from_json(document, "x.json")
