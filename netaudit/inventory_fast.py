"""A fast path for reading inventory JSON (schema 1 and 2): msgspec decodes the text straight
into typed, strict Structs and the model is built from them; None whenever it is not sure.

The hand-written reader (netaudit.inventory_json.from_json over docparse.parse_json) stays
the authority: it alone says why a document is refused, in one line naming file and field.
This path never refuses anything. Every rule of that reader is here as a type, a bound or a
check, or stricter (integers the reader leaves unbounded stop at 64 bits; a schema 1
listener's vestigial ``cmdline`` must be strings), and on any doubt it declines: the caller
then reads the document the slow way, which accepts it or names the problem.

Why: 4,096 nodes' inventories took about 2.6 s to parse with json.loads and 7.6 s to
validate field by field in Python (docs/benchmarks.md); msgspec parses and validates in C
(see pyproject.toml for the numbers). It is the only module that imports msgspec, and only
`netaudit scan` and `fix` read inventories, so the probe and the gate never pay its import.

What it builds equals what the hand-written reader builds, with the same sharing inside one
document (the listeners of one pid share one ProcessInfo, equal classifications and hints
are one object, process strings are interned), so that intake.Sharing finds what it
expects. tests/unit/test_inventory_fast.py holds the two readers to that.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from sys import intern
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from netaudit import hostnames
from netaudit.cgroupmap import MOUNT_POINT
from netaudit.inventory_json import packages_of, packages_problem
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

# The same limits as inventory_json; msgspec's bounds stop at int64, so the reader's u64
# fields (inodes) are bounded at 2**63 - 1 here: a larger one is read the slow way.
_MAX_ITEMS = 200_000
_U32 = 2**32 - 1
_I64_MAX = 2**63 - 1

_Int = Annotated[int, Meta(ge=-(2**63), le=_I64_MAX)]  # unbounded in the reader
_U32Int = Annotated[int, Meta(ge=0, le=_U32)]
_U64Int = Annotated[int, Meta(ge=0, le=_I64_MAX)]
_Pid = Annotated[int, Meta(ge=1, le=_U32)]
_Port = Annotated[int, Meta(ge=1, le=65535)]
_Prefix = Annotated[int, Meta(ge=0, le=128)]
_Text = Annotated[str, Meta(min_length=1)]  # the reader's "non-empty list of non-empty strings"


class _Decline(Exception):
    """The document is left to the hand-written reader."""


class _Strict(Struct, forbid_unknown_fields=True, kw_only=True, gc=False):
    """Unknown keys refused, as Table.finish refuses them. No decoded value can hold a
    reference cycle, so the cyclic GC need not track these."""


class _Value(Struct, forbid_unknown_fields=True, kw_only=True, gc=False, frozen=True):
    """A _Strict value that is hashable: equal ones are read once per document."""


class _Job(_Value, frozen=True):
    slurm_job_id: str | None = None
    slurm_job_user: str | None = None
    rank: _Int | None = None
    local_rank: _Int | None = None
    world_size: _Int | None = None
    torchelastic_run_id: str | None = None
    master_addr: str | None = None
    master_port: _Int | None = None
    torch_version: str | None = None


class _Facts(_Strict):
    """A process's facts as both schemas write them (nullable keys may be left out)."""

    name: str
    cmdline: tuple[_Text, ...]
    environment: dict[str, str]
    threads: dict[str, _Int]
    libraries: tuple[_Text, ...]
    is_complete: bool
    ppid: _U32Int | None = None
    uid: _U32Int | None = None
    user: str | None = None
    netns: _U64Int | None = None
    cgroup: str | None = None
    packages: dict[str, str] = msgspec.field(default_factory=dict)


class _Facts2(_Facts, kw_only=True):
    job: _Job  # schema 2: the job inside the facts, required


class _Facts1(_Facts, kw_only=True):
    pid: _Pid  # schema 1: the facts carry their pid; the job is on the listener


class _Hint(_Value, frozen=True):
    scope: BindScope
    answers_on: tuple[_Text, ...]
    outside_intended: tuple[_Text, ...]
    note: str
    potentially_exposed: bool | UnsetType = UNSET  # may be left out, never null


class _Listener2(_Strict):
    netns: _U64Int
    family: Family
    address: str
    port: _Port
    inode: _U64Int
    source: ListenerSource
    v6only: bool | None = None
    backlog: _U32Int | None = None
    uid: _U32Int | None = None
    pid: _Pid | None = None
    pids: tuple[_Pid, ...] = ()
    # The flat classification: checked once per distinct value (_classification). UNSET
    # tells a key left out (allowed when unclassified) from one given.
    service: str | None = None
    signature: str | None = None
    variant: str | None = None
    confidence: str | None = None
    evidence: tuple[_Text, ...] | UnsetType = UNSET
    risk: str | None = None
    do_not_touch: bool | UnsetType = UNSET
    connect_safe: bool | UnsetType = UNSET
    handshake: str | None = None
    exposure: _Hint | None = None


class _Listener1(_Listener2):
    """Schema 1: every listener carries a copy of its process's facts and job."""

    process: _Facts1 | None = None
    job: _Job | None = None
    process_name: str | None = None
    user: str | None = None
    cmdline: tuple[str, ...] | None = None  # never read; the reader takes any list


class _Interface(_Strict):
    name: str
    family: Family
    address: str
    prefix: _Prefix
    is_loopback: bool
    is_link_local: bool


class _Namespace(_Strict):
    inode: _U64Int
    is_probe_namespace: bool
    names: tuple[_Text, ...]
    pids: _U32Int
    interfaces: tuple[_Interface, ...]
    source: ListenerSource | None = None


class _Privilege(_Strict):
    is_root: bool
    can_enter_namespaces: bool
    can_read_all_processes: bool


class _Document(_Strict, tag_field="schema_version"):
    kind: Literal["netaudit.inventory"]
    host: str
    collected_at: str
    netaudit_version: str
    privilege: _Privilege
    gaps: tuple[_Text, ...]
    intended_subnets: tuple[_Text, ...]
    namespaces: tuple[_Namespace, ...]
    is_complete: bool | UnsetType = UNSET
    cgroup2_mount: str | None = None


class _Document1(_Document, tag=1, kw_only=True):
    listeners: Annotated[tuple[_Listener1, ...], Meta(max_length=_MAX_ITEMS)]


class _Document2(_Document, tag=2, kw_only=True):
    processes: Annotated[dict[str, _Facts2 | None], Meta(max_length=_MAX_ITEMS)]
    listeners: Annotated[tuple[_Listener2, ...], Meta(max_length=_MAX_ITEMS)]


_DECODER = msgspec.json.Decoder(_Document1 | _Document2, strict=True)
_CONFIDENCES = {item.value: item for item in Confidence}
_SEVERITIES = {item.value: item for item in Severity}
# (listener fields) -> the Classification, or None for an unclassified listener.
_ClassKey = tuple[object, ...]


def decode(data: bytes | bytearray | memoryview | str) -> Inventory | None:
    """The inventory in the JSON text ``data``, or None: read it with the hand-written reader
    (inventory_json.from_text does both)."""
    try:
        document = _DECODER.decode(data)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        # ValueError: a str holding lone surrogates. RecursionError: msgspec skips a value it
        # has no use for (looking for the schema_version tag) by recursing into it.
        return None
    try:
        return _Reader(document).inventory()
    except _Decline:
        return None


class _Reader:
    """One document's model, with its repeated values read once and shared."""

    def __init__(self, document: _Document1 | _Document2) -> None:
        self.document = document
        self.addresses: dict[str, tuple[str, int]] = {}  # text -> (normalised, version)
        self.classifications: dict[_ClassKey, Classification | None] = {}
        self.hints: dict[_Hint, ExposureHint] = {}
        self.jobs: dict[_Job, JobIdentity] = {}  # most processes of a node share one (none)

    def inventory(self) -> Inventory:
        document = self.document
        collected_at = _timestamp(document.collected_at)
        if not hostnames.is_valid_host(document.host):
            raise _Decline
        if isinstance(document, _Document2):
            listeners = self._listeners2(document)
        else:
            listeners = self._listeners1(document)
        privilege = document.privilege
        return Inventory(
            host=document.host,
            collected_at=collected_at,
            netaudit_version=document.netaudit_version,
            privilege=Privilege(
                privilege.is_root, privilege.can_enter_namespaces, privilege.can_read_all_processes
            ),
            intended_subnets=document.intended_subnets,
            namespaces=tuple(self._namespace(item) for item in document.namespaces),
            listeners=listeners,
            gaps=document.gaps,
            cgroup2_mount=_mount_point(document.cgroup2_mount),
        )

    # Addresses, namespaces -------------------------------------------------------------------

    def _ip(self, text: str) -> tuple[str, int]:
        found = self.addresses.get(text)
        if found is None:
            try:
                parsed = ipaddress.ip_address(text)
            except ValueError:
                raise _Decline from None
            found = self.addresses[text] = (str(parsed), parsed.version)
        return found

    def _address(self, text: str, family: Family) -> str:
        address, version = self._ip(text)
        if version != (4 if family is Family.IPV4 else 6):
            raise _Decline
        return address

    def _namespace(self, item: _Namespace) -> NetNamespace:
        interfaces = tuple(
            InterfaceAddress(
                one.name,
                one.family,
                self._address(one.address, one.family),
                one.prefix,
                one.is_loopback,
                one.is_link_local,
            )
            for one in item.interfaces
        )
        return NetNamespace(
            item.inode, item.is_probe_namespace, item.names, item.pids, item.source, interfaces
        )

    def _job(self, raw: _Job) -> JobIdentity:
        job = self.jobs.get(raw)
        if job is None:
            job = self.jobs[raw] = _job(raw)
        return job

    # Listeners -------------------------------------------------------------------------------

    def _listeners2(self, document: _Document2) -> tuple[Listener, ...]:
        processes: dict[int, ProcessInfo | None] = {}
        for key, facts in document.processes.items():
            number = _pid_key(key)
            processes[number] = None if facts is None else _process(facts, number, self._job(facts.job))
        used: set[int] = set()
        listeners = []
        for item in document.listeners:
            pid = item.pid
            process = None
            if pid is not None:
                if pid not in processes:
                    raise _Decline
                used.add(pid)
                process = processes[pid]
            listeners.append(self._listener(item, process))
        if len(used) != len(processes):  # a pid no listener names
            raise _Decline
        return tuple(listeners)

    def _listeners1(self, document: _Document1) -> tuple[Listener, ...]:
        # pid -> (its raw facts and job, as first met; what they read as)
        seen: dict[int, tuple[_Facts1 | None, _Job | None, ProcessInfo | None]] = {}
        listeners = []
        for item in document.listeners:
            pid, facts = item.pid, item.process
            process = None
            if pid is None:
                if facts is not None:
                    raise _Decline
            else:
                known = seen.get(pid)
                if known is not None and known[0] == facts and known[1] == item.job:
                    process = known[2]  # an equal copy: the same facts
                else:
                    if facts is not None:
                        if facts.pid != pid:
                            raise _Decline
                        job = JobIdentity() if item.job is None else self._job(item.job)
                        process = _process(facts, pid, job)
                    if known is not None:
                        if known[2] != process:  # one process, two sets of facts
                            raise _Decline
                        process = known[2]
                    else:
                        seen[pid] = (facts, item.job, process)
            listeners.append(self._listener(item, process))
        return tuple(listeners)

    def _listener(self, item: _Listener2, process: ProcessInfo | None) -> Listener:
        key = (
            item.service,
            item.signature,
            item.variant,
            item.confidence,
            item.evidence,
            item.risk,
            item.do_not_touch,
            item.connect_safe,
            item.handshake,
        )
        try:
            classification = self.classifications[key]
        except KeyError:
            classification = self.classifications[key] = _classification(item)
        hint = None
        raw = item.exposure
        if raw is not None:
            hint = self.hints.get(raw)
            if hint is None:
                hint = self.hints[raw] = ExposureHint(
                    raw.scope,
                    tuple(self._ip(text)[0] for text in raw.answers_on),
                    tuple(self._ip(text)[0] for text in raw.outside_intended),
                    raw.note,
                )
        return Listener(
            item.netns,
            item.family,
            self._address(item.address, item.family),
            item.port,
            item.inode,
            item.source,
            item.v6only,
            item.backlog,
            item.uid,
            item.pid,
            item.pids,
            process,
            classification,
            hint,
        )


def _classification(item: _Listener2) -> Classification | None:
    """read_classification's rules: an unclassified listener's other fields need only their
    types; a classified one needs them all, and cannot be both do-not-touch and
    connect-safe."""
    if item.service is None:
        return None
    signature, evidence = item.signature, item.evidence
    do_not_touch, connect_safe = item.do_not_touch, item.connect_safe
    confidence = _CONFIDENCES.get(item.confidence) if item.confidence is not None else None
    risk = _SEVERITIES.get(item.risk) if item.risk is not None else None
    if (
        signature is None
        or confidence is None
        or risk is None
        or evidence is UNSET
        or do_not_touch is UNSET
        or connect_safe is UNSET
        or (do_not_touch and connect_safe)
    ):
        raise _Decline
    return Classification(
        signature, item.service, item.variant, confidence, evidence, risk, do_not_touch, connect_safe,
        item.handshake,
    )  # fmt: skip


def _job(job: _Job) -> JobIdentity:
    return JobIdentity(
        job.slurm_job_id,
        job.slurm_job_user,
        job.rank,
        job.local_rank,
        job.world_size,
        job.torchelastic_run_id,
        job.master_addr,
        job.master_port,
        job.torch_version,
    )


def _process(facts: _Facts, pid: int, job: JobIdentity) -> ProcessInfo:
    """As inventory_json._read_process builds it, its strings interned the same way."""
    user, cgroup, environment, threads = facts.user, facts.cgroup, facts.environment, facts.threads
    return ProcessInfo(
        pid=pid,
        ppid=facts.ppid,
        name=intern(facts.name),
        uid=facts.uid,
        user=None if user is None else intern(user),
        cmdline=tuple(map(intern, facts.cmdline)),
        netns=facts.netns,
        # Sorted by name: a table's names are unique, so the values are never compared.
        environment=tuple(
            sorted(zip(map(intern, environment), map(intern, environment.values()), strict=True))
        ),
        threads=tuple(sorted(zip(map(intern, threads), threads.values(), strict=True))),
        libraries=tuple(map(intern, facts.libraries)),
        cgroup=None if cgroup is None else intern(cgroup),
        job=job,
        is_complete=facts.is_complete,
        packages=_packages(facts.packages),
    )


def _mount_point(point: str | None) -> str | None:
    if point is not None and not MOUNT_POINT.match(point):
        raise _Decline
    return point


def _packages(found: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """inventory_json._packages; anything it would refuse declines."""
    if packages_problem(found) is not None:
        raise _Decline
    return packages_of(found)


def _pid_key(key: str) -> int:
    """inventory_json._pid_key: a pid in decimal, as the writer spells it."""
    if key.isascii() and key.isdigit() and not key.startswith("0") and len(key) <= 10 and int(key) <= _U32:
        return int(key)
    raise _Decline


def _timestamp(text: str) -> datetime:
    """Table.timestamp: ISO 8601 with a time zone."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _Decline from None
    if moment.tzinfo is None:
        raise _Decline
    return moment
