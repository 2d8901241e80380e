"""What the prolog gate reads of this node: the listeners first, then only the processes whose
listeners could fail it.

The probe (netaudit.inventory) describes every listener with its process and classifies them
all; the gate asks two questions of a few of them, so it reads in this order and stops as
soon as the answer is known:

1. every listening TCP socket of every network namespace: one sock_diag dump each, or
   procfs where a namespace cannot be entered, exactly as the probe reads them;
2. the ones that can matter: on an exposed address (not loopback or link-local), or on a
   port of the verdict's exposures. With none, the gate passes without reading a process;
3. their owners (the fd scan, once) and the Slurm jobs active here; where a job is active,
   each owner's job, so that a running job's processes are never classified. Where none is,
   every owner's job is inactive whatever it is, and none is looked up for the decision;
4. only for owners in no active job: the classification of every listener of that process.
   All of them, not just the exposed ones: a rule's ``limit_by_threads`` hands out its
   capacity over the process's listeners in order. A process that maps no library any
   signature names is classified by the rules that need none (``_RuleSets``): the others
   could not have fitted it.

The listeners stay rows (tuples) throughout: a node can have tens of thousands and almost
none of them reaches the answer. The answer is a ``GateView``: the listeners that can change
it, in the probe's order, with the process facts the gate reads and their classification, so
that gate.stale_listeners and gate.verdict_reasons judge it exactly as they judge a probe's
inventory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Final, NamedTuple

from netaudit import bindscope, fdscan, netlink, netns, procnet, safeio
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
    from netaudit.signatures import Rule, Signature

# A listener as netlink.listening_rows gives it (netlink.ListenerRow): family, address, port,
# inode, v6only, backlog, uid, cgroup id. Rows read from procfs take the same shape, with None
# for what procfs does not tell.
Row = tuple[Family, str, int, int, bool | None, int | None, int | None, int | None]
_PORT: Final = 2
_INODE: Final = 3
# The probe's order of listeners (inventory.collect) within one namespace: port, family,
# address, inode; namespaces by inode.
_PROBE_ORDER = itemgetter(2, 0, 1, 3)
_BIND = itemgetter(0, 1, 4)  # family, address, v6only: what is_exposed asks


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


@dataclass(slots=True)
class _NamespaceRead:
    entry: netns.NamespaceEntry
    source: ListenerSource | None
    rows: list[Row]  # in the probe's order
    interfaces: tuple[InterfaceAddress, ...]
    somaxconn: int | None
    bindv6only: bool


def _wants_interfaces(rows: Sequence[Row], verdict_ports: Collection[int]) -> bool:
    # gate._holds reads a namespace's addresses only for a wildcard listener on an exposure's port.
    return any(
        row[_PORT] in verdict_ports and bindscope.scope_of(row[0], row[1], row[4], False).is_wildcard
        for row in rows
    )


def _from_netlink(entry: netns.NamespaceEntry, verdict_ports: Collection[int]) -> _NamespaceRead:
    rows: list[Row] = sorted(netlink.listening_rows(), key=_PROBE_ORDER)
    wanted = bool(verdict_ports) and _wants_interfaces(rows, verdict_ports)
    return _NamespaceRead(
        entry=entry,
        source=ListenerSource.NETLINK,
        rows=rows,
        interfaces=tuple(netlink.interface_addresses()) if wanted else (),
        # Per-namespace sysctls, read while this thread is inside the namespace.
        somaxconn=procnet.read_sysctl("/proc/sys/net/core/somaxconn"),
        bindv6only=procnet.read_sysctl("/proc/sys/net/ipv6/bindv6only") == 1,
    )


def _from_procfs(entry: netns.NamespaceEntry, proc: str, verdict_ports: Collection[int]) -> _NamespaceRead:
    """Not root, or the namespace would not be entered: its tcp tables through a process of it,
    as the probe reads them (no backlog, no v6only, IPv6 addresses only)."""
    found = procnet.listeners_through(entry.pids, proc)
    if found is None:
        return _NamespaceRead(entry, None, [], (), None, False)
    pid, parsed = found
    rows: list[Row] = sorted(
        (
            (family, address, port, inode, None, None, uid, None)
            for family, address, port, uid, inode in parsed
        ),
        key=_PROBE_ORDER,
    )
    interfaces: tuple[InterfaceAddress, ...] = ()
    if _wants_interfaces(rows, verdict_ports):
        try:
            interfaces = tuple(procnet.ipv6_addresses(pid, proc))
        except OSError:
            interfaces = ()
    return _NamespaceRead(entry, ListenerSource.PROCFS, rows, interfaces, None, False)


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


class _Node:
    """Every listener of the node as one list of rows in the probe's order, with what each
    row's namespace says about it."""

    def __init__(self, reads: list[_NamespaceRead]) -> None:
        self.rows: list[Row] = []
        self.netns_of: list[int] = []  # by index into rows
        self.read_of = {read.entry.inode: read for read in reads}
        self._source_of: dict[int, ListenerSource] = {}
        for read in sorted(reads, key=lambda item: item.entry.inode):
            if read.source is not None:  # else it has no rows
                self.rows += read.rows
                self.netns_of += [read.entry.inode] * len(read.rows)
                self._source_of[read.entry.inode] = read.source

    def exposed(self) -> list[bool]:
        """Whether each row is exposed (is_exposed), worked out once per distinct bind: a
        node's thousands of listeners share a handful."""
        binds = list(map(_BIND, self.rows))
        answers = {bind: is_exposed(*bind) for bind in set(binds)}
        return list(map(answers.__getitem__, binds))

    def listener(self, index: int, pid: int | None, pids: tuple[int, ...], process: ProcessInfo | None,
                 classification: Classification | None) -> Listener:  # fmt: skip
        family, address, port, inode, v6only, backlog, uid, _cgroup = self.rows[index]
        netns_inode = self.netns_of[index]
        return Listener(netns_inode, family, address, port, inode, self._source_of[netns_inode], v6only,
                        backlog, uid, pid, pids, process, classification)  # fmt: skip


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
    node = _Node(reads)
    rows = node.rows
    exposed = node.exposed()
    relevant = [index for index, row in enumerate(rows) if exposed[index] or row[_PORT] in verdict_ports]
    if not relevant:
        return GateView((), namespaces, frozenset(), frozenset())

    from netaudit import slurmjobs
    from netaudit.procinfo import FactsCache, ProcessGone, primary_pid

    # Every listener's inode, not only the relevant ones': a process's other listeners take
    # part in its classification.
    owners = fdscan.scan({row[_INODE] for row in rows}, proc).owners
    facts = FactsCache(proc)
    active = frozenset(slurmjobs.active_jobs(proc))
    primary: dict[int, int] = {}  # index into rows -> the owning pid
    exposed_owners: dict[int, None] = {}  # owners of an exposed listener, in first-seen order
    for index in relevant:
        holders = owners.get(rows[index][_INODE])
        if holders:
            pid = primary[index] = primary_pid(holders, facts)
            if exposed[index]:
                exposed_owners[pid] = None

    gone: set[int] = set()
    infos: dict[int, ProcessInfo] = {}
    if active:
        to_classify: set[int] = set()
        for pid in exposed_owners:
            try:
                info = infos[pid] = _process_info(pid, facts)
            except ProcessGone:
                gone.add(pid)
                continue
            job = info.job.slurm_job_id or slurmjobs.job_of_ancestors(pid, proc)
            if job is None or job not in active:
                to_classify.add(pid)
    else:
        # No job is active here: whatever job an owner names is not, so none is looked up
        # for the decision, only for the listeners the answer names.
        to_classify = set(exposed_owners)

    classifications: dict[int, Classification] = {}
    if to_classify:
        for index in set(range(len(rows))).difference(primary):
            holders = owners.get(rows[index][_INODE])
            if holders and not to_classify.isdisjoint(holders):
                primary[index] = primary_pid(holders, facts)
        classifications = _classify(node, primary, to_classify, signatures, facts, gone)

    # What the answer can hold: the relevant listeners that were recognised, and every one on
    # a verdict's port; in the probe's order.
    answer = {index for index in classifications if exposed[index] or rows[index][_PORT] in verdict_ports}
    if verdict_ports:
        answer.update(index for index in relevant if rows[index][_PORT] in verdict_ports)
    listeners = []
    for index in sorted(answer):
        owner = primary.get(index)
        if owner is not None and owner in gone:
            continue  # the process exited while we read it: gone, not an error
        process = None
        if owner is not None:
            process = infos.get(owner)
            if process is None:
                try:
                    process = infos[owner] = _process_info(owner, facts)
                except ProcessGone:
                    gone.add(owner)
                    continue
        pids = owners.get(rows[index][_INODE], ())
        listeners.append(node.listener(index, owner, pids, process, classifications.get(index)))
    return GateView(tuple(listeners), namespaces, active, frozenset(to_classify - gone))


class _Owned(NamedTuple):
    """What classify.classify reads of a listener (classify.ListenerFacts), and its v6only
    for its bind scope: lighter than a Listener, of which the gate builds only the few it
    answers with."""

    netns: int
    family: Family
    address: str
    port: int
    backlog: int | None
    pid: int | None
    v6only: bool | None


class _Scopes(Mapping[int, BindScope]):
    """The bind scope of each listener handed to classify.classify, by position, worked out
    when a rule asks: only listeners of a process that some rule fits are ever asked about."""

    def __init__(self, group: Sequence[_Owned], bindv6only: Mapping[int, bool]) -> None:
        self._group = group
        self._bindv6only = bindv6only

    def __getitem__(self, position: int) -> BindScope:
        item = self._group[position]
        return bindscope.scope_of(item.family, item.address, item.v6only, self._bindv6only[item.netns])

    def __len__(self) -> int:
        return len(self._group)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._group)))


# The most of /proc/<pid>/maps read to look for a library's name (procinfo reads as much): a
# longer one is left to netaudit.procinfo to judge.
_MAPS_LIMIT_BYTES = 32 << 20


def _literal_start(glob: str) -> bytes | None:
    """What every name ``glob`` matches begins with, as the bytes of maps text; None when
    that is nothing, or not ASCII (which text decoded with errors="replace" may not keep)."""
    end = min((glob.index(char) for char in "*?[" if char in glob), default=len(glob))
    start = glob[:end]
    return start.encode("ascii") if start and start.isascii() else None


@dataclass(frozen=True, slots=True)
class _RuleSets:
    """The signatures, and the same without the rules that need a mapped library.

    A rule with ``libraries`` fits a process only if the name of one of its mapped shared
    objects matches those globs; ``globs`` is every such rule's globs together. A process
    that maps nothing they match fits none of those rules, so it is classified by
    ``without`` alone: the same classification, without asking each of those rules in turn
    (a node's hundreds of sshd, exporters and web servers each ask for it). Every rule
    keeps its signature and its order, so the rules left rank as they do among all of them.

    ``starts`` are the globs' literal beginnings (``libtorch`` of ``libtorch*.so*``): a maps
    text that holds none of them, read whole, names nothing the globs match, whatever line
    and path the name would come from. That one search settles most processes without
    splitting their maps into names; any other is asked through its ProcessFacts."""

    all: Sequence[Signature]
    without: tuple[Signature, ...]
    globs: tuple[str, ...]
    starts: tuple[bytes, ...] | None

    @classmethod
    def of(cls, signatures: Sequence[Signature]) -> _RuleSets:
        # An empty ``libraries`` list would match any mapped object: such a rule is kept.
        def needs_library(rule: Rule) -> bool:
            return bool(rule.when.libraries)

        globs = tuple(
            dict.fromkeys(
                glob for signature in signatures for rule in signature.rules if needs_library(rule)
                for glob in rule.when.libraries or ()
            )
        )  # fmt: skip
        without = tuple(
            dataclasses.replace(
                signature, rules=tuple(rule for rule in signature.rules if not needs_library(rule))
            )
            for signature in signatures
        )
        starts = tuple(_literal_start(glob) for glob in globs)
        known = tuple(start for start in starts if start is not None)
        return cls(signatures, without, globs, known if len(known) == len(starts) else None)

    def maps_library(self, pid: int, facts: FactsCache) -> bool:
        """Whether ``pid`` maps a shared object the globs match; raises ProcessGone."""
        if not self.globs:
            return False
        if self.starts is not None and not self._may_name(f"{facts.proc}/{pid}/maps", self.starts):
            return False
        return bool(facts.get(pid).libraries_matching(self.globs))

    @staticmethod
    def _may_name(maps: str, starts: tuple[bytes, ...]) -> bool:
        """False only when ``maps``, read whole, holds none of ``starts``."""
        try:
            text = safeio.read_proc(maps, _MAPS_LIMIT_BYTES)
        except OSError:
            return True  # gone or denied: ProcessFacts says which, as classify would learn it
        return len(text) >= _MAPS_LIMIT_BYTES or any(start in text for start in starts)


def _classify(
    node: _Node,
    primary: dict[int, int],
    pids: set[int],
    signatures: Sequence[Signature],
    facts: FactsCache,
    gone: set[int],
) -> dict[int, Classification]:
    """Classifications (by index into ``node.rows``) of every listener whose process is in
    ``pids``: the same groups, order and context the probe gives classify.classify."""
    from netaudit import classify
    from netaudit.procinfo import ProcessGone

    rule_sets = _RuleSets.of(signatures)
    with_library: set[int] = set()
    for pid in pids:
        try:
            if rule_sets.maps_library(pid, facts):
                with_library.add(pid)
        except ProcessGone:
            gone.add(pid)
    others = pids - with_library - gone
    library_members: list[int] = []
    other_members: list[int] = []
    for index in sorted(primary):
        pid = primary[index]
        if pid in with_library:
            library_members.append(index)
        elif pid in others:
            other_members.append(index)
    result: dict[int, Classification] = {}
    rows, netns_of = node.rows, node.netns_of
    for chosen, indexes, rules in (
        (with_library, library_members, rule_sets.all),
        (others, other_members, rule_sets.without),
    ):
        if not chosen:
            continue
        group = []
        for index in indexes:
            family, address, port, _inode, v6only, backlog, _uid, _cgroup = rows[index]
            group.append(_Owned(netns_of[index], family, address, port, backlog, primary[index], v6only))
        context = classify.ListenerContext(
            scope_by_index=_Scopes(group, {inode: read.bindv6only for inode, read in node.read_of.items()}),
            somaxconn_by_netns={inode: read.somaxconn for inode, read in node.read_of.items()},
        )
        found, vanished = classify.classify(group, rules, {pid: facts.get(pid) for pid in chosen}, context)
        gone.update(vanished)
        result.update((indexes[position], classification) for position, classification in found.items())
    return result
