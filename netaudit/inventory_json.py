"""The inventory contract in JSON, both ways: schema_version 2 is written, 1 and 2 are read.

``to_json`` is what `netaudit probe --format json` prints and what fan-out gathers from every
node. ``from_json`` reads it back for `netaudit scan --inventory`: those files come from other
machines and are untrusted input, so every field is type- and range-checked, unknown keys are
refused, and an error names the file and the field. docs/inventory.schema.json (2) and
docs/inventory.schema.v1.json (1) are the same contracts as JSON Schemas.

Schema 2 holds each process's facts once, in ``processes`` keyed by pid, and a listener names
its process by ``pid``. Schema 1 repeated the facts on every listener of the process: 200
processes with 10,000 listeners wrote, and a reader validated, 10,000 copies. Both read into
the same model: the listeners of one pid share one ProcessInfo.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from sys import intern
from typing import Any

from netaudit import hostnames
from netaudit.advisories import PACKAGE_NAME, VERSION_TEXT
from netaudit.cgroupmap import MOUNT_POINT
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
)
from netaudit.typedread import InputError, Table

KIND = "netaudit.inventory"
# The document's version, not the model's: Inventory.schema_version keeps what models.py
# sets, since the in-memory model did not change with the JSON layout.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
_MAX_LISTENERS = 200_000  # a node with more is not a node we were built for; refuse, not hang
_U32 = 2**32 - 1
MAX_PACKAGES = 32  # versioned distributions beside one process (netaudit.pkgversions knows 7)
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
        "job": _job(info.job),
        "is_complete": info.is_complete,
        "packages": dict(info.packages),
    }


def _processes(listeners: Sequence[Listener]) -> dict[str, Any]:
    """``processes``: the facts of every listener's pid, once; null for a pid whose facts are
    unknown (it exited while the probe read it).

    Raises:
        ValueError: listeners that break the model's contract (``process`` is the facts of
            ``pid``): facts without a pid, facts of another pid, two different facts for one
            pid. Schema 2 has one place for a pid's facts; silently keeping one would lose
            the other.
    """
    facts: dict[int, ProcessInfo | None] = {}
    for listener in listeners:
        pid, process = listener.pid, listener.process
        if pid is None:
            if process is not None:
                raise ValueError(f"{listener.endpoint}: process facts (pid {process.pid}) without a pid")
            continue
        if process is not None and process.pid != pid:
            raise ValueError(f"{listener.endpoint}: pid {pid} carries the facts of pid {process.pid}")
        known = facts.setdefault(pid, process)
        if known is not process and known != process:
            raise ValueError(f"{listener.endpoint}: pid {pid} has different facts on another listener")
    return {str(pid): None if info is None else _process(info) for pid, info in sorted(facts.items())}


def _listener(listener: Listener) -> dict[str, Any]:
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
    """The schema 2 document. Raises ValueError for listeners whose ``process`` is not the
    facts of their ``pid`` (see ``_processes``): the probe never builds them."""
    return {
        "schema_version": SCHEMA_VERSION,
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
        "cgroup2_mount": inventory.cgroup2_mount,
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
        "processes": _processes(inventory.listeners),
        "listeners": [_listener(listener) for listener in inventory.listeners],
    }


# Reading -------------------------------------------------------------------------------------


def _ip(
    table: Table, key: str, family: Family | None = None, known: dict[str, tuple[str, int]] | None = None
) -> str:
    """The address under ``key``, normalised; ``known`` remembers text -> (address, version)."""
    text = table.get(key, str, required=True)
    found = known.get(text) if known is not None else None
    if found is None:
        try:
            parsed = ipaddress.ip_address(text)
        except ValueError:
            table.fail(key, f"{text!r} is not an IP address")
        found = (str(parsed), parsed.version)
        if known is not None:
            known[text] = found
    if family is not None and found[1] != (4 if family is Family.IPV4 else 6):
        table.fail(key, f"{text!r} is not an {family.value} address")
    return found[0]


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


def _interned(text: str | None) -> str | None:
    return None if text is None else intern(text)


def _read_process(table: Table, pid: int, job: JobIdentity) -> ProcessInfo:
    """The facts both schemas share; the caller has read the pid and the job.

    Their strings are interned: the same software runs on every node, and one copy of
    "libtorch_cuda.so" or "SLURM_JOB_ID" instead of one per process took a quarter off what
    4,096 nodes' inventories hold in memory."""
    environment = _str_map(table, "environment")
    threads = _str_map(table, "threads")
    if not all(isinstance(v, str) for v in environment.values()):
        table.fail("environment", "expected NAME: string pairs")
    if not all(type(v) is int for v in threads.values()):
        table.fail("threads", "expected name: count pairs")
    info = ProcessInfo(
        pid=pid,
        ppid=table.integer("ppid", 0, _U32, nullable=True),
        name=intern(table.get("name", str, required=True)),
        uid=table.integer("uid", 0, _U32, nullable=True),
        user=_interned(table.get("user", str, nullable=True)),
        cmdline=tuple(map(intern, table.strings("cmdline", required=True, allow_empty=True) or ())),
        netns=table.integer("netns", 0, _U64, nullable=True),
        environment=tuple(sorted((intern(name), intern(value)) for name, value in environment.items())),
        threads=tuple(sorted((intern(name), count) for name, count in threads.items())),
        libraries=tuple(map(intern, table.strings("libraries", required=True, allow_empty=True) or ())),
        cgroup=_interned(table.get("cgroup", str, nullable=True)),
        job=job,
        is_complete=table.get("is_complete", bool, required=True),
        packages=_packages(table),
    )
    table.finish()
    return info


def _mount_point(table: Table) -> str | None:
    """``cgroup2_mount``: an absolute path, as the probe read it from mountinfo; absent in
    inventories written before it existed."""
    point = table.get("cgroup2_mount", str, nullable=True)
    if point is not None and not MOUNT_POINT.match(point):
        table.fail("cgroup2_mount", f"{point[:64]!r} is not an absolute path")
    return point  # type: ignore[no-any-return]


def _packages(table: Table) -> tuple[tuple[str, str], ...]:
    """``packages``: {name: version} of the distributions found beside the process; absent in
    inventories written before it existed."""
    found = table.get("packages", dict) or {}
    problem = packages_problem(found)
    if problem is not None:
        table.fail("packages", problem)
    return packages_of(found)


def packages_problem(found: Mapping[str, object]) -> str | None:
    """Why a ``packages`` table is refused, or None: the one check of both readers."""
    if len(found) > MAX_PACKAGES:
        return f"more than {MAX_PACKAGES} entries"
    for name, version in found.items():
        if not PACKAGE_NAME.match(name) or not isinstance(version, str) or not VERSION_TEXT.match(version):
            return f"{name[:40]!r}: expected a package name and its version"
    return None


def packages_of(found: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A checked ``packages`` table as ProcessInfo.packages: sorted, interned."""
    return tuple(sorted((intern(name), intern(version)) for name, version in found.items()))


def _pid_key(table: Table, key: str) -> int:
    """A key of ``processes``: a pid in decimal, as the writer spells it (no sign, no 0s)."""
    if str.isascii(key) and key.isdigit() and not key.startswith("0") and len(key) <= 10 and int(key) <= _U32:
        return int(key)
    shown = ascii(key) if len(key) <= 24 else ascii(key[:21]) + "..."
    table.fail(shown, f"a key of processes is a pid (an integer in 1..{_U32} in decimal)")


def _read_processes(top: Table) -> dict[int, ProcessInfo | None]:
    """Schema 2's ``processes``: each entry validated once, null for facts unknown."""
    table = top.required_sub("processes")
    if len(table.table) > _MAX_LISTENERS:
        top.fail("processes", f"more than {_MAX_LISTENERS} processes")
    processes: dict[int, ProcessInfo | None] = {}
    for key in table.table:
        pid = _pid_key(table, key)
        if table.get(key, dict, required=True, nullable=True) is None:
            processes[pid] = None
            continue
        entry = table.required_sub(key)
        entry.get("job", dict, required=True)
        processes[pid] = _read_process(entry, pid, read_job(entry, "job") or JobIdentity())
    table.finish()
    return processes


# How a listener's process is found: (the listener's table, its pid) -> the facts.
_Resolver = Callable[[Table, "int | None"], "ProcessInfo | None"]


def _schema2_resolver(processes: dict[int, ProcessInfo | None]) -> _Resolver:
    def resolve(table: Table, pid: int | None) -> ProcessInfo | None:
        if pid is None:
            return None
        if pid not in processes:
            table.fail("pid", f"{pid} has no entry in processes")
        return processes[pid]

    return resolve


class _SchemaOneProcesses:
    """Schema 1's copy of the facts on every listener: a copy the same as one already read is
    not read again, and the listeners of one pid share one ProcessInfo, as schema 2's do. A
    copy that disagrees is refused: one process has one set of facts, and schema 2 (which a
    fan-out's central run writes for its peers) has room for only one."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[str | None, ProcessInfo | None]] = {}  # pid -> (copy, facts)

    def __call__(self, table: Table, pid: int | None) -> ProcessInfo | None:
        raw_process = table.get("process", dict, nullable=True)
        raw_job = table.get("job", dict, nullable=True)
        for key in ("process_name", "user"):
            table.get(key, str, nullable=True)
        table.get("cmdline", list, nullable=True)
        if pid is None:
            if raw_process is not None:
                table.fail("process", "facts of a process on a listener without a pid")
            read_job(table, "job")
            return None
        copy = _as_text(raw_process, raw_job)
        known = self.seen.get(pid)
        if known is not None and copy is not None and known[0] == copy:
            return known[1]
        job = read_job(table, "job") or JobIdentity()
        info = None
        if raw_process is not None:
            facts = table.required_sub("process")
            facts_pid = facts.integer("pid", 1, _U32, required=True)
            if facts_pid != pid:
                facts.fail("pid", f"{facts_pid} is not the listener's pid {pid}")
            info = _read_process(facts, pid, job)
        if known is not None:
            if known[1] != info:
                table.fail("process", f"differs from the facts of pid {pid} on an earlier listener")
            return known[1]
        self.seen[pid] = (copy, info)
        return info


def _as_text(*values: object) -> str | None:
    """Raw JSON values as JSON text, to tell copies apart exactly (as data, 1 == true); None
    for what cannot be written back (not JSON: the reader then says why)."""
    try:
        return json.dumps(values)
    except (TypeError, ValueError, RecursionError):
        return None


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


_CLASSIFICATION_KEYS = ("service", "signature", "variant", "confidence", "evidence", "risk",
                        "do_not_touch", "connect_safe", "handshake")  # fmt: skip
_MISSING = object()  # a key left out, which reads unlike null for some keys


def _fingerprint(values: Iterable[object]) -> tuple[object, ...] | None:
    """A hashable stand-in for raw JSON values, equal to another only for equal values of the
    same types (Python has 1 == true, JSON does not); None when one cannot be hashed."""
    key = tuple((type(value), tuple(value) if type(value) is list else value) for value in values)
    try:
        hash(key)
    except TypeError:  # a list holding lists or tables: never valid, read it to say why
        return None
    return key


class _Memo:
    """What one document's repeated values read as. A node's listeners repeat a handful of
    classifications, exposure hints and addresses (10,000 listeners of 200 processes: one of
    each); like a process's facts, an equal raw value is validated once and its listeners
    share the object."""

    def __init__(self) -> None:
        self.addresses: dict[str, tuple[str, int]] = {}
        self.classifications: dict[tuple[object, ...], Classification | None] = {}
        self.hints: dict[tuple[object, ...], ExposureHint] = {}

    def classification(self, table: Table) -> Classification | None:
        key = _fingerprint(table.table.get(name, _MISSING) for name in _CLASSIFICATION_KEYS)
        if key is not None and key in self.classifications:
            table.accept(_CLASSIFICATION_KEYS)
            return self.classifications[key]
        found = read_classification(table)
        if key is not None:
            self.classifications[key] = found
        return found

    def hint(self, table: Table) -> ExposureHint | None:
        raw = table.get("exposure", dict, nullable=True)
        if raw is None:
            return None
        key = _fingerprint((*raw, *raw.values()))
        found = self.hints.get(key) if key is not None else None
        if found is None:
            found = _read_hint(table.required_sub("exposure"))
            if key is not None:
                self.hints[key] = found
        return found


def _read_hint(table: Table) -> ExposureHint:
    hint = ExposureHint(
        scope=_enum(table, "scope", BindScope),
        answers_on=tuple(_ips(table, "answers_on")),
        outside_intended=tuple(_ips(table, "outside_intended")),
        note=table.get("note", str, required=True),
    )
    table.get("potentially_exposed", bool)
    table.finish()
    return hint


def _read_listener(table: Table, resolve: _Resolver, memo: _Memo) -> Listener:
    family = _enum(table, "family", Family)
    pid = table.integer("pid", 1, _U32, nullable=True)
    process = resolve(table, pid)
    classification = memo.classification(table)
    hint = memo.hint(table)
    pids = table.ints("pids", 1, _U32) or ()
    listener = Listener(
        netns=table.integer("netns", 0, _U64, required=True) or 0,
        family=family,
        address=_ip(table, "address", family, memo.addresses),
        port=table.integer("port", 1, 65535, required=True) or 0,
        inode=table.integer("inode", 0, _U64, required=True) or 0,
        source=_enum(table, "source", ListenerSource),
        v6only=table.get("v6only", bool, nullable=True),
        backlog=table.integer("backlog", 0, _U32, nullable=True),
        uid=table.integer("uid", 0, _U32, nullable=True),
        pid=pid,
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


def _read_listeners(top: Table, version: int) -> tuple[Listener, ...]:
    listener_values = top.get("listeners", list, required=True)
    if len(listener_values) > _MAX_LISTENERS:
        top.fail("listeners", f"more than {_MAX_LISTENERS} listeners")
    if version == 1:
        return _read_listeners_with(top, _SchemaOneProcesses())
    processes = _read_processes(top)
    listeners = _read_listeners_with(top, _schema2_resolver(processes))
    unused = processes.keys() - {listener.pid for listener in listeners}
    if unused:
        top.fail("processes", f"pid {min(unused)} is no listener's pid")
    return listeners


def _read_listeners_with(top: Table, resolve: _Resolver) -> tuple[Listener, ...]:
    memo = _Memo()
    return tuple(_read_listener(t, resolve, memo) for t in top.tables("listeners", required=True))


def from_text(data: bytes | bytearray | str, source: str) -> Inventory:
    """The Inventory in the JSON text of one document (not a bundle's list), or the
    InventoryError that ``from_json(docparse.parse_json(data, ...))`` raises, word for word.

    A typed msgspec decoder (netaudit.inventory_fast) reads a document it fully accepts about
    3x faster than json.loads and this reader together; anything else, a bad document above
    all, is read here, which names the file and the field. Both build the same model."""
    # Here, not at the top: only `scan` and `fix` read inventories; the probe and the gate,
    # which import this module to write one, never pay for msgspec or the parser.
    from netaudit import docparse, inventory_fast

    found = inventory_fast.decode(data)
    if found is not None:
        return found
    return from_json(docparse.parse_json(data, source, InventoryError), source)


def from_json(data: object, source: str) -> Inventory:
    """An Inventory from parsed JSON of schema 1 or 2, or InventoryError naming ``source`` and
    the field."""
    top = Table(source, "", data, InventoryError)
    version = top.versioned_header(KIND, READABLE_VERSIONS, "inventory")
    collected_at = top.timestamp("collected_at")
    listeners = _read_listeners(top, version)
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
        listeners=listeners,
        gaps=top.strings("gaps", required=True, allow_empty=True) or (),
        cgroup2_mount=_mount_point(top),
    )
    privilege.finish()
    top.get("is_complete", bool)
    if not hostnames.is_valid_host(inventory.host):
        # It names files (verdicts), log lines and baseline keys: a name, never a path.
        shown = inventory.host if len(inventory.host) <= 64 else inventory.host[:61] + "..."
        top.fail("host", f"{shown!r} is not a host name (letters, digits, '-', '_' and '.')")
    top.finish()
    return inventory
