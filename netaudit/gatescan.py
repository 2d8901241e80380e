"""What the prolog gate reads of this node: the listeners first, then only the processes whose
listeners could fail it.

The probe (netaudit.inventory) describes every listener with its process and classifies them
all; the gate asks two questions of a few of them, so it reads in this order and stops as
soon as the answer is known:

1. every listening TCP socket of every network namespace: one sock_diag dump each, or
   procfs where a namespace cannot be entered, exactly as the probe reads them;
2. the ones that can matter: on an exposed address (not loopback or link-local), or on a
   port of the verdict's exposures. With none, the gate passes without reading a process;
3. their owners (the fd scan, once), the Slurm jobs active here, and each owner's job;
4. only for owners in no active job: the classification of every listener of that process.
   All of them, not just the exposed ones: a rule's ``limit_by_threads`` hands out its
   capacity over the process's listeners in order.

The answer is a ``GateView``: the listeners that can change the answer, in the probe's order,
with the process facts the gate reads and their classification, so that gate.stale_listeners
and gate.verdict_reasons judge it exactly as they judge a probe's inventory.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from netaudit import bindscope, fdscan, netlink, netns, procnet
from netaudit.models import (
    BindScope,
    Classification,
    Family,
    InterfaceAddress,
    Listener,
    ListenerSource,
    NetNamespace,
    ProcessInfo,
)

if TYPE_CHECKING:
    from netaudit.procinfo import FactsCache
    from netaudit.signatures import Signature


def is_exposed(family: Family, address: str, v6only: bool | None) -> bool:
    """Whether a listener accepts beyond this host: any bind but loopback and link-local."""
    scope = bindscope.scope_of(family, address, v6only, False)
    return scope not in (BindScope.LOOPBACK, BindScope.LINK_LOCAL)


@dataclass(frozen=True, slots=True)
class GateView:
    """What the gate judges.

    Attributes:
        listeners: the listeners that can fail the gate, sorted as in a probe's inventory:
            exposed ones that a signature recognised in a process of no active Slurm job,
            and every one on a port of the verdict's exposures; less those whose process
            exited meanwhile. ``process`` carries only what the gate reads: name, uid, user
            and ``job.slurm_job_id`` (from the environment or cgroup); the other facts are
            left empty. ``classification`` is set where it was needed.
        namespaces: every network namespace; ``interfaces`` only where a wildcard listener
            sits on a verdict port (the one case the verdict check reads them).
        active_jobs: the Slurm jobs with a slurmstepd on this node; empty when no listener
            needed them.
        classified_pids: the processes whose listeners were classified: owners of an exposed
            listener, in no active job.
    """

    listeners: tuple[Listener, ...]
    namespaces: tuple[NetNamespace, ...]
    active_jobs: frozenset[str]
    classified_pids: frozenset[int]


class _Raw(NamedTuple):
    """A listener as read: a Listener's first fields, in its order. A tuple, not an object
    per socket: a node can have tens of thousands, and most of them never matter here."""

    netns: int
    family: Family
    address: str
    port: int
    inode: int
    source: ListenerSource
    v6only: bool | None
    backlog: int | None
    uid: int | None


# The probe's order of listeners (inventory.collect): netns, port, family, address, inode.
_PROBE_ORDER = itemgetter(0, 3, 1, 2, 4)


@dataclass(slots=True)
class _NamespaceRead:
    entry: netns.NamespaceEntry
    source: ListenerSource | None
    listeners: list[_Raw]
    interfaces: tuple[InterfaceAddress, ...]
    somaxconn: int | None
    bindv6only: bool


def _wants_interfaces(listeners: Sequence[_Raw], verdict_ports: Collection[int]) -> bool:
    # gate._holds reads a namespace's addresses only for a wildcard listener on an exposure's port.
    return any(
        item.port in verdict_ports
        and bindscope.scope_of(item.family, item.address, item.v6only, False).is_wildcard
        for item in listeners
    )


def _from_netlink(entry: netns.NamespaceEntry, verdict_ports: Collection[int]) -> _NamespaceRead:
    inode, source = entry.inode, ListenerSource.NETLINK
    listeners = [
        _Raw(inode, family, address, port, socket_inode, source, v6only, backlog, uid)
        for family, address, port, socket_inode, v6only, backlog, uid, _cgroup in netlink.listening_rows()
    ]
    wanted = _wants_interfaces(listeners, verdict_ports)
    return _NamespaceRead(
        entry=entry,
        source=ListenerSource.NETLINK,
        listeners=listeners,
        interfaces=tuple(netlink.interface_addresses()) if wanted else (),
        # Per-namespace sysctls, read while this thread is inside the namespace.
        somaxconn=procnet.read_sysctl("/proc/sys/net/core/somaxconn"),
        bindv6only=procnet.read_sysctl("/proc/sys/net/ipv6/bindv6only") == 1,
    )


def _from_procfs(entry: netns.NamespaceEntry, proc: str, verdict_ports: Collection[int]) -> _NamespaceRead:
    """Not root, or the namespace would not be entered: its tcp tables through a process of it,
    as the probe reads them (no backlog, no v6only, IPv6 addresses only)."""
    for pid in entry.pids:
        try:
            rows = []
            for name in ("tcp", "tcp6"):
                with open(f"{proc}/{pid}/net/{name}", encoding="utf-8") as handle:
                    rows += procnet.parse(handle.read())
        except OSError:
            continue  # that process left; try the next one of the namespace
        listeners = [
            _Raw(entry.inode, family, address, port, inode, ListenerSource.PROCFS, None, None, uid)
            for family, address, port, uid, inode in rows
        ]
        interfaces: tuple[InterfaceAddress, ...] = ()
        if _wants_interfaces(listeners, verdict_ports):
            try:
                interfaces = tuple(procnet.ipv6_addresses(pid, proc))
            except OSError:
                interfaces = ()
        return _NamespaceRead(entry, ListenerSource.PROCFS, listeners, interfaces, None, False)
    return _NamespaceRead(entry, None, [], (), None, False)


def _read_namespace(
    entry: netns.NamespaceEntry, own: int, proc: str, verdict_ports: Collection[int]
) -> _NamespaceRead:
    if entry.inode == own:
        return _from_netlink(entry, verdict_ports)
    try:
        with netns.entered(entry):
            return _from_netlink(entry, verdict_ports)
    except OSError:  # PermissionError, NamespaceError, a failed dump: as the probe, fall back
        return _from_procfs(entry, proc, verdict_ports)


def _process_info(pid: int, facts: FactsCache) -> ProcessInfo:
    """The facts the gate reads, as ProcessFacts.to_info reads them; raises ProcessGone."""
    from netaudit import jobid

    process = facts.get(pid)
    cgroup = process.cgroup
    job = jobid.identity(process.environment, jobid.slurm_job_from_cgroup(cgroup) if cgroup else None, None)
    uid, user = process.uid_user
    return ProcessInfo(pid=pid, ppid=process.ppid, name=process.comm, uid=uid, user=user, cmdline=(),
                       netns=None, environment=(), threads=(), libraries=(), cgroup=None, job=job,
                       is_complete=process.is_complete)  # fmt: skip


def collect(
    signatures: Sequence[Signature], verdict_ports: Collection[int] = (), proc: str = "/proc"
) -> GateView:
    """Read this node for the gate; ``verdict_ports`` are the ports of the verdict exposures
    to be judged."""
    discovery = netns.discover(proc)
    reads = [
        _read_namespace(entry, discovery.own_inode, proc, verdict_ports)
        for _inode, entry in sorted(
            discovery.namespaces.items(), key=lambda item: (item[0] != discovery.own_inode, item[0])
        )
    ]
    namespaces = tuple(
        NetNamespace(read.entry.inode, read.entry.inode == discovery.own_inode, tuple(read.entry.names),
                     len(read.entry.pids), read.source, read.interfaces)
        for read in reads
    )  # fmt: skip
    raws = [listener for read in reads for listener in read.listeners]
    raws.sort(key=_PROBE_ORDER)
    relevant = [
        index
        for index, raw in enumerate(raws)
        if raw.port in verdict_ports or is_exposed(raw.family, raw.address, raw.v6only)
    ]
    if not relevant:
        return GateView((), namespaces, frozenset(), frozenset())

    from netaudit import slurmjobs
    from netaudit.procinfo import FactsCache, ProcessGone, primary_pid

    # Every listener's inode, not only the relevant ones': a process's other listeners take
    # part in its classification.
    owners = fdscan.scan({raw.inode for raw in raws}, proc).owners
    facts = FactsCache(proc)
    active = frozenset(slurmjobs.active_jobs(proc))
    primary: dict[int, int] = {}  # index into raws -> the owning pid
    gone: set[int] = set()
    infos: dict[int, ProcessInfo] = {}
    to_classify: set[int] = set()
    judged: set[int] = set()  # processes whose job was looked up: once each, not once a listener
    for index in relevant:
        raw = raws[index]
        holders = owners.get(raw.inode)
        if not holders:
            continue
        pid = primary[index] = primary_pid(holders, facts)
        if pid in gone:
            continue
        info = infos.get(pid)
        if info is None:
            try:
                info = infos[pid] = _process_info(pid, facts)
            except ProcessGone:
                gone.add(pid)
                continue
        if pid in judged or not is_exposed(raw.family, raw.address, raw.v6only):
            continue
        judged.add(pid)
        job = info.job.slurm_job_id or slurmjobs.job_of_ancestors(pid, proc)
        if job is None or job not in active:
            to_classify.add(pid)

    classifications: dict[int, Classification] = {}
    if to_classify:
        for index, raw in enumerate(raws):
            holders = owners.get(raw.inode)
            if holders and index not in primary and not to_classify.isdisjoint(holders):
                primary[index] = primary_pid(holders, facts)
        classifications = _classify(raws, primary, to_classify, reads, signatures, facts, gone)

    listeners = []
    for index in relevant:
        raw, owner = raws[index], primary.get(index)
        if owner is not None and owner in gone:
            continue  # the process exited while we read it: gone, not an error
        found = classifications.get(index)
        if found is None and raw.port not in verdict_ports:
            continue  # nothing to judge: no signature knows it, or a running job owns it
        process = infos.get(owner) if owner is not None else None
        listeners.append(Listener(*raw, owner, owners.get(raw.inode, ()), process, found))
    return GateView(tuple(listeners), namespaces, active, frozenset(to_classify - gone))


def _classify(
    raws: list[_Raw],
    primary: dict[int, int],
    pids: set[int],
    reads: list[_NamespaceRead],
    signatures: Sequence[Signature],
    facts: FactsCache,
    gone: set[int],
) -> dict[int, Classification]:
    """Classifications (by index into ``raws``) of every listener whose process is in ``pids``:
    the same groups, order and context the probe gives classify.classify."""
    from netaudit import classify

    members = sorted(index for index, pid in primary.items() if pid in pids)
    read_by_ns = {read.entry.inode: read for read in reads}
    group = [Listener(*raws[index], primary[index], (), None) for index in members]
    context = classify.ListenerContext(
        scope_by_index={
            position: bindscope.scope_of(
                item.family, item.address, item.v6only, read_by_ns[item.netns].bindv6only
            )
            for position, item in enumerate(group)
        },
        somaxconn_by_netns={read.entry.inode: read.somaxconn for read in reads},
    )
    facts_of = {pid: facts.get(pid) for pid in pids}
    found, vanished = classify.classify(group, signatures, facts_of, context)
    gone.update(vanished)
    return {members[position]: classification for position, classification in found.items()}
