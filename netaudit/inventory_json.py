"""The inventory contract (schema_version 1) in JSON, both ways.

``to_json`` is what `netaudit probe --format json` prints and what fan-out gathers from every
node. ``from_json`` reads it back for `netaudit scan --inventory`: those files come from other
machines and are untrusted input, so every field is type- and range-checked, unknown keys are
refused, and an error names the file and the field. docs/inventory.schema.json is the same
contract as a JSON Schema.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from netaudit import hostnames
from netaudit.models import (
    INVENTORY_SCHEMA_VERSION,
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
)
from netaudit.typedread import InputError, Table

KIND = "netaudit.inventory"
_MAX_LISTENERS = 200_000  # a node with more is not a node we were built for; refuse, not hang
_U32 = 2**32 - 1
_U64 = 2**64 - 1


class InventoryError(InputError):
    """An inventory file that cannot be used. One line naming file and field."""


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Writing -------------------------------------------------------------------------------------


def _job(job: JobIdentity) -> dict[str, Any]:
    return {name: getattr(job, name) for name in job.__slots__}


def _process(info: ProcessInfo) -> dict[str, Any]:
    return {
        "pid": info.pid,
        "ppid": info.ppid,
        "name": info.name,
        "uid": info.uid,
        "user": info.user,
        "cmdline": list(info.cmdline),
        "netns": info.netns,
        "environment": dict(info.environment),
        "threads": dict(info.threads),
        "libraries": list(info.libraries),
        "cgroup": info.cgroup,
        "is_complete": info.is_complete,
    }


def _listener(listener: Listener, shared: dict[int, tuple[Any, Any]]) -> dict[str, Any]:
    process = listener.process
    job_json, process_json = None, None
    if process is not None:
        # One document per process, shared by all its listeners (200 processes x 50 listeners
        # built 10,000 copies): the JSON is the same, the work is not.
        cached = shared.get(id(process))
        if cached is None:
            cached = shared[id(process)] = (_job(process.job), _process(process))
        job_json, process_json = cached
    found = listener.classification
    hint = listener.exposure
    return {
        "netns": listener.netns,
        "family": listener.family.value,
        "address": listener.address,
        "port": listener.port,
        "inode": listener.inode,
        "source": listener.source.value,
        "v6only": listener.v6only,
        "backlog": listener.backlog,
        "uid": listener.uid,
        "pid": listener.pid,
        "pids": list(listener.pids),
        "process_name": process.name if process else None,
        "user": process.user if process else None,
        "cmdline": list(process.cmdline) if process else None,
        "job": job_json,
        "process": process_json,
        "service": found.service if found else None,
        "variant": found.variant if found else None,
        "confidence": found.confidence.value if found else None,
        "evidence": list(found.evidence) if found else [],
        "signature": found.signature if found else None,
        "risk": found.risk.value if found else None,
        "do_not_touch": found.is_do_not_touch if found else False,
        "connect_safe": found.is_connect_safe if found else False,
        "handshake": found.handshake if found else None,
        "exposure": None
        if hint is None
        else {
            "scope": hint.scope.value,
            "answers_on": list(hint.answers_on),
            "outside_intended": list(hint.outside_intended),
            "potentially_exposed": hint.is_potentially_exposed,
            "note": hint.note,
        },
    }


def to_json(inventory: Inventory) -> dict[str, Any]:
    shared: dict[int, tuple[Any, Any]] = {}
    return {
        "schema_version": inventory.schema_version,
        "kind": KIND,
        "host": inventory.host,
        "collected_at": timestamp(inventory.collected_at),
        "netaudit_version": inventory.netaudit_version,
        "privilege": {
            "is_root": inventory.privilege.is_root,
            "can_enter_namespaces": inventory.privilege.can_enter_namespaces,
            "can_read_all_processes": inventory.privilege.can_read_all_processes,
        },
        "is_complete": inventory.is_complete,
        "gaps": list(inventory.gaps),
        "intended_subnets": list(inventory.intended_subnets),
        "namespaces": [
            {
                "inode": ns.inode,
                "is_probe_namespace": ns.is_probe_namespace,
                "names": list(ns.names),
                "pids": ns.pids,
                "source": ns.source.value if ns.source else None,
                "interfaces": [
                    {
                        "name": item.name,
                        "family": item.family.value,
                        "address": item.address,
                        "prefix": item.prefix,
                        "is_loopback": item.is_loopback,
                        "is_link_local": item.is_link_local,
                    }
                    for item in ns.interfaces
                ],
            }
            for ns in inventory.namespaces
        ],
        "listeners": [_listener(listener, shared) for listener in inventory.listeners],
    }


# Reading -------------------------------------------------------------------------------------


def _ip(table: Table, key: str, family: Family | None = None) -> str:
    text = table.get(key, str, required=True)
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        table.fail(key, f"{text!r} is not an IP address")
    if family is not None and parsed.version != (4 if family is Family.IPV4 else 6):
        table.fail(key, f"{text!r} is not an {family.value} address")
    return str(parsed)


def _enum(table: Table, key: str, enum: Any, nullable: bool = False) -> Any:
    text = table.get(key, str, required=not nullable, nullable=nullable)
    if text is None:
        return None
    try:
        return enum(text)
    except ValueError:
        table.fail(key, f"expected one of {', '.join(e.value for e in enum)}, got {text!r}")


def _str_map(table: Table, key: str) -> dict[str, Any]:
    value = table.get(key, dict, required=True)
    return value  # type: ignore[no-any-return]


def read_job(table: Table, key: str) -> JobIdentity | None:
    """The job identity under ``key`` (null allowed); shared with the report reader."""
    if table.get(key, dict, nullable=True) is None:
        return None
    sub = table.required_sub(key)
    values: dict[str, Any] = {}
    for name in JobIdentity.__slots__:
        kind = int if name in ("rank", "local_rank", "world_size", "master_port") else str
        values[name] = sub.get(name, kind, nullable=True)
    sub.finish()
    return JobIdentity(**values)


def _read_process(table: Table, job: JobIdentity) -> ProcessInfo:
    environment = _str_map(table, "environment")
    threads = _str_map(table, "threads")
    if not all(isinstance(v, str) for v in environment.values()):
        table.fail("environment", "expected NAME: string pairs")
    if not all(type(v) is int for v in threads.values()):
        table.fail("threads", "expected name: count pairs")
    info = ProcessInfo(
        pid=table.integer("pid", 1, _U32, required=True) or 0,
        ppid=table.integer("ppid", 0, _U32, nullable=True),
        name=table.get("name", str, required=True),
        uid=table.integer("uid", 0, _U32, nullable=True),
        user=table.get("user", str, nullable=True),
        cmdline=table.strings("cmdline", required=True, allow_empty=True) or (),
        netns=table.integer("netns", 0, _U64, nullable=True),
        environment=tuple(sorted(environment.items())),
        threads=tuple(sorted(threads.items())),
        libraries=table.strings("libraries", required=True, allow_empty=True) or (),
        cgroup=table.get("cgroup", str, nullable=True),
        job=job,
        is_complete=table.get("is_complete", bool, required=True),
    )
    table.finish()
    return info


def read_classification(table: Table) -> Classification | None:
    """The flat classification fields of a listener (inventory) or an endpoint (report); None
    for an unrecognised one. Shared by both readers, with the one safety rule that matters
    most: nothing may be both do-not-touch and safe to connect to."""
    service = table.get("service", str, nullable=True)
    if service is None:
        for key in ("signature", "variant", "confidence", "risk", "handshake"):
            table.get(key, str, nullable=True)
        table.strings("evidence", allow_empty=True)
        for key in ("do_not_touch", "connect_safe"):
            table.get(key, bool)
        return None
    classification = Classification(
        signature=table.get("signature", str, required=True),
        service=service,
        variant=table.get("variant", str, nullable=True),
        confidence=_enum(table, "confidence", Confidence),
        evidence=table.strings("evidence", required=True, allow_empty=True) or (),
        risk=_enum(table, "risk", Severity),
        is_do_not_touch=table.get("do_not_touch", bool, required=True),
        is_connect_safe=table.get("connect_safe", bool, required=True),
        handshake=table.get("handshake", str, nullable=True),
    )
    if classification.is_do_not_touch and classification.is_connect_safe:
        table.fail("connect_safe", "a do-not-touch listener cannot be connect_safe")
    return classification


def _read_listener(table: Table) -> Listener:
    family = _enum(table, "family", Family)
    job = read_job(table, "job") or JobIdentity()
    process_table = table.get("process", dict, nullable=True)
    process = _read_process(table.required_sub("process"), job) if process_table is not None else None
    for key in ("process_name", "user"):
        table.get(key, str, nullable=True)
    table.get("cmdline", list, nullable=True)
    classification = read_classification(table)
    hint = None
    hint_table = table.sub("exposure") if table.get("exposure", dict, nullable=True) else None
    if hint_table is not None:
        hint = ExposureHint(
            scope=_enum(hint_table, "scope", BindScope),
            answers_on=tuple(_ips(hint_table, "answers_on")),
            outside_intended=tuple(_ips(hint_table, "outside_intended")),
            note=hint_table.get("note", str, required=True),
        )
        hint_table.get("potentially_exposed", bool)
        hint_table.finish()
    pids = table.ints("pids", 1, _U32) or ()
    listener = Listener(
        netns=table.integer("netns", 0, _U64, required=True) or 0,
        family=family,
        address=_ip(table, "address", family),
        port=table.integer("port", 1, 65535, required=True) or 0,
        inode=table.integer("inode", 0, _U64, required=True) or 0,
        source=_enum(table, "source", ListenerSource),
        v6only=table.get("v6only", bool, nullable=True),
        backlog=table.integer("backlog", 0, _U32, nullable=True),
        uid=table.integer("uid", 0, _U32, nullable=True),
        pid=table.integer("pid", 1, _U32, nullable=True),
        pids=pids,
        process=process,
        classification=classification,
        exposure=hint,
    )
    table.finish()
    return listener


def _ips(table: Table, key: str) -> list[str]:
    values = table.strings(key, required=True, allow_empty=True) or ()
    result = []
    for value in values:
        try:
            result.append(str(ipaddress.ip_address(value)))
        except ValueError:
            table.fail(key, f"{value!r} is not an IP address")
    return result


def _read_namespace(table: Table) -> NetNamespace:
    interfaces = []
    for item in table.tables("interfaces", required=True):
        family = _enum(item, "family", Family)
        interfaces.append(
            InterfaceAddress(
                name=item.get("name", str, required=True),
                family=family,
                address=_ip(item, "address", family),
                prefix=item.integer("prefix", 0, 128, required=True) or 0,
                is_loopback=item.get("is_loopback", bool, required=True),
                is_link_local=item.get("is_link_local", bool, required=True),
            )
        )
        item.finish()
    namespace = NetNamespace(
        inode=table.integer("inode", 0, _U64, required=True) or 0,
        is_probe_namespace=table.get("is_probe_namespace", bool, required=True),
        names=table.strings("names", required=True, allow_empty=True) or (),
        pids=table.integer("pids", 0, _U32, required=True) or 0,
        source=_enum(table, "source", ListenerSource, nullable=True),
        interfaces=tuple(interfaces),
    )
    table.finish()
    return namespace


def from_json(data: object, source: str) -> Inventory:
    """An Inventory from parsed JSON, or InventoryError naming ``source`` and the field."""
    top = Table(source, "", data, InventoryError)
    top.header(KIND, INVENTORY_SCHEMA_VERSION, "inventory")
    collected_at = top.timestamp("collected_at")
    listener_values = top.get("listeners", list, required=True)
    if len(listener_values) > _MAX_LISTENERS:
        top.fail("listeners", f"more than {_MAX_LISTENERS} listeners")
    privilege = top.required_sub("privilege")
    inventory = Inventory(
        host=top.get("host", str, required=True),
        collected_at=collected_at,
        netaudit_version=top.get("netaudit_version", str, required=True),
        privilege=Privilege(
            is_root=privilege.get("is_root", bool, required=True),
            can_enter_namespaces=privilege.get("can_enter_namespaces", bool, required=True),
            can_read_all_processes=privilege.get("can_read_all_processes", bool, required=True),
        ),
        intended_subnets=top.strings("intended_subnets", required=True, allow_empty=True) or (),
        namespaces=tuple(_read_namespace(t) for t in top.tables("namespaces", required=True)),
        listeners=tuple(_read_listener(t) for t in top.tables("listeners", required=True)),
        gaps=top.strings("gaps", required=True, allow_empty=True) or (),
    )
    privilege.finish()
    top.get("is_complete", bool)
    if not hostnames.is_valid_host(inventory.host):
        # It names files (verdicts), log lines and baseline keys: a name, never a path.
        shown = inventory.host if len(inventory.host) <= 64 else inventory.host[:61] + "..."
        top.fail("host", f"{shown!r} is not a host name (letters, digits, '-', '_' and '.')")
    top.finish()
    return inventory
