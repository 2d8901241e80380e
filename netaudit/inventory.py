"""Collect a node's Inventory: every listening TCP socket in every network namespace, its
processes, what it is (signatures) and where it answers (static hints).

Sources, best first, per namespace:
1. sock_diag taken inside the namespace (setns): backlog, v6only, cheap with many
   established connections;
2. /proc/<pid>/net/tcp{,6} of a process of that namespace, when it cannot be entered (not
   root): backlog and v6only unknown, and IPv4 addresses unknown. The gap is recorded.
psutil's socket listing sees only the caller's namespace, so it is not a source.

Each listener's processes come from netaudit.owners: the members of the socket's cgroup
where the kernel tags sockets with one, every process's fd table where it cannot tell.

Without root this degrades: other users' fd tables are unreadable (pid None), foreign
namespaces are read from procfs. Every such loss is one sentence in ``Inventory.gaps``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Final, NamedTuple

from netaudit import __version__, bindscope, cgroupmap, classify, exposure, netlink, netns, owners, procnet
from netaudit.models import (
    BindScope,
    Classification,
    ExposureHint,
    Family,
    InterfaceAddress,
    Inventory,
    Listener,
    ListenerSource,
    NetNamespace,
    Privilege,
    ProcessInfo,
)
from netaudit.procinfo import FactsCache, ProcessGone, primary_pid
from netaudit.signatures import Signature

# A listener as read, before attribution: the first nine fields of Listener (netns, family,
# address, port, inode, source, v6only, backlog, uid), then the socket's cgroup id. A tuple,
# not an object: at 10,000 listeners each object built per listener costs about 10 ms.
_Raw = tuple[int, Family, str, int, int, ListenerSource, bool | None, int | None, int | None, int | None]
_INODE: Final = 4
_CGROUP: Final = 9
_ORDER = itemgetter(0, 3, 1, 2, 4)  # netns, port, family, address, inode: the inventory's order


class _NamespaceRead(NamedTuple):
    entry: netns.NamespaceEntry
    source: ListenerSource | None
    listeners: list[_Raw]
    interfaces: list[InterfaceAddress] | None
    somaxconn: int | None
    bindv6only: bool
    gaps: list[str]


def _from_netlink(entry: netns.NamespaceEntry) -> _NamespaceRead:
    inode, source = entry.inode, ListenerSource.NETLINK
    listeners: list[_Raw] = [
        (inode, family, address, port, socket_inode, source, v6only, backlog, uid, cgroup_id)
        for family, address, port, socket_inode, v6only, backlog, uid, cgroup_id in netlink.listening_rows()
    ]
    return _NamespaceRead(
        entry=entry,
        source=ListenerSource.NETLINK,
        listeners=listeners,
        interfaces=netlink.interface_addresses(),
        # Both sysctls are per network namespace; /proc/sys/net resolves against the
        # namespace of the reading thread, which is the entered one here.
        somaxconn=procnet.read_sysctl("/proc/sys/net/core/somaxconn"),
        bindv6only=procnet.read_sysctl("/proc/sys/net/ipv6/bindv6only") == 1,
        gaps=[],
    )


def _from_procfs(entry: netns.NamespaceEntry, reason: str, proc: str) -> _NamespaceRead:
    label = f"network namespace {entry.inode}"
    gaps = [f"{label}: not entered ({reason}); listeners read from procfs, backlog and v6only unknown"]
    found = procnet.listeners_through(entry.pids, proc)
    if found is None:
        gaps = [f"{label}: not readable ({reason}) and no process of it is visible"]
        return _NamespaceRead(entry, None, [], None, None, False, gaps)
    pid, rows = found
    listeners: list[_Raw] = [
        (entry.inode, family, address, port, inode, ListenerSource.PROCFS, None, None, uid, None)
        for family, address, port, uid, inode in rows
    ]
    interfaces: list[InterfaceAddress] | None
    try:
        interfaces = procnet.ipv6_addresses(pid, proc)
        gaps.append(f"{label}: IPv4 addresses unknown (they need netlink inside it)")
    except OSError:
        interfaces = None
    if interfaces is None:
        gaps.append(f"{label}: interface addresses unknown")
    return _NamespaceRead(entry, ListenerSource.PROCFS, listeners, interfaces, None, False, gaps)


def _read_namespace(entry: netns.NamespaceEntry, own: int, proc: str) -> _NamespaceRead:
    if entry.inode == own:
        return _from_netlink(entry)
    try:
        with netns.entered(entry):
            return _from_netlink(entry)
    except PermissionError:
        return _from_procfs(entry, "not root: entering needs CAP_SYS_ADMIN", proc)
    except netns.NamespaceError as error:
        return _from_procfs(entry, str(error), proc)
    except OSError as error:
        return _from_procfs(entry, f"netlink failed: {error}", proc)


class _Attributed(NamedTuple):
    """A listener with its owners, before classification: what classify reads, and the
    fields of the Listener it becomes. A tuple: a frozen Listener costs 2.7 us to build (an
    object.__setattr__ per field), so each socket gets exactly one, at the end."""

    netns: int
    family: Family
    address: str
    port: int
    inode: int
    source: ListenerSource
    v6only: bool | None
    backlog: int | None
    uid: int | None
    pid: int | None
    pids: tuple[int, ...]


def _listener(
    row: _Attributed, process: ProcessInfo | None, found: Classification | None, hint: ExposureHint | None
) -> Listener:
    # Positional construction rather than dataclasses.replace, whose per-call introspection
    # cost 0.18 s for two copies of 10,000 listeners (bench/README.md).
    return Listener(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                    process, found, hint)  # fmt: skip


def _library_patterns(signatures: Sequence[Signature]) -> tuple[str, ...]:
    patterns: dict[str, None] = {}
    for signature in signatures:
        for rule in signature.rules:
            for predicates in (rule.when, *rule.any_of):
                for pattern in predicates.libraries or ():
                    patterns.setdefault(pattern, None)
    return tuple(patterns)


def _mount_point(point: str | None) -> str | None:
    """The node's cgroup v2 mount as the inventory may carry it (cgroupmap.MOUNT_POINT):
    a mount at an odd path (a space, a quote) is left out, and `fix` falls back to --cgroup-mount."""
    return point if point is not None and cgroupmap.MOUNT_POINT.match(point) else None


def collect(
    signatures: Sequence[Signature],
    intended: Sequence[exposure.Network] = (),
    proc: str = "/proc",
    host: str | None = None,
    is_own_namespace_only: bool = False,
    attribution: owners.Mode = "cgroup",
) -> Inventory:
    """One truthful inventory of this node. Never raises for what it cannot see: that goes
    into ``gaps``. ``is_own_namespace_only`` limits it to the probe's own network namespace
    (`--namespaces own`: a probe run inside a container or pod describes that one).
    ``attribution`` chooses how listeners find their processes (netaudit.owners): through
    their cgroups where the kernel tags sockets, or by reading every fd table."""
    collected_at = datetime.now(UTC)
    is_root = os.geteuid() == 0
    gaps: list[str] = []
    discovery = netns.discover(proc)
    if is_own_namespace_only:
        discovery.namespaces = {
            inode: entry for inode, entry in discovery.namespaces.items() if inode == discovery.own_inode
        }
    denied = "not root" if not is_root else "denied to root: more privileged processes"
    if discovery.unreadable_pids and not is_own_namespace_only:
        gaps.append(
            f"{discovery.unreadable_pids} processes' network namespaces unreadable ({denied}): "
            "namespaces only they use are missing"
        )
    reads = [
        _read_namespace(entry, discovery.own_inode, proc)
        for _inode, entry in sorted(
            discovery.namespaces.items(), key=lambda item: (item[0] != discovery.own_inode, item[0])
        )
    ]
    can_enter = all(read.source is ListenerSource.NETLINK for read in reads)
    for read in reads:
        gaps.extend(read.gaps)

    raw = [listener for read in reads for listener in read.listeners]
    raw.sort(key=_ORDER)
    scan = owners.find({item[_INODE]: item[_CGROUP] for item in raw}, proc, attribution)
    holders_of = scan.owners
    unowned = sum(1 for item in raw if item[_INODE] not in holders_of)
    if scan.unreadable_pids and unowned:
        # Only a gap if it hid something: a listener left without any visible owner.
        gaps.append(
            f"{unowned} listeners have no visible owner: {scan.unreadable_pids} processes' file "
            f"descriptors are unreadable ({denied})"
        )
    facts = FactsCache(proc)
    attributed: list[_Attributed] = []
    owner_pids: set[int] = set()
    make = _Attributed._make
    for item in raw:
        holders = holders_of.get(item[_INODE], ())
        primary = (holders[0] if len(holders) == 1 else primary_pid(holders, facts)) if holders else None
        if primary is not None:
            owner_pids.add(primary)
        attributed.append(make((*item[:_CGROUP], primary, holders)))

    read_by_ns = {read.entry.inode: read for read in reads}
    bindv6only = {inode: read.bindv6only for inode, read in read_by_ns.items()}
    scopes = [bindscope.scope_of(item[1], item[2], item[6], bindv6only[item[0]]) for item in raw]
    context = classify.ListenerContext(
        scope_by_index=scopes,
        somaxconn_by_netns={read.entry.inode: read.somaxconn for read in reads},
    )
    owner_facts = {pid: facts.get(pid) for pid in owner_pids}
    classifications, vanished = classify.classify(attributed, signatures, owner_facts, context)

    patterns = _library_patterns(signatures)
    infos = {}
    for pid in sorted(owner_facts):
        if pid in vanished:
            continue
        try:
            infos[pid] = owner_facts[pid].to_info(patterns)
        except ProcessGone:
            vanished.add(pid)
    incomplete = sorted(pid for pid, info in infos.items() if not info.is_complete)
    if incomplete:
        shown = ", ".join(str(pid) for pid in incomplete[:10])
        gaps.append(f"facts of {len(incomplete)} processes partly unreadable (pids {shown})")

    listeners: list[Listener] = []
    hints: dict[tuple[int, BindScope, str], ExposureHint] = {}
    for index, listener in enumerate(attributed):
        owner = listener.pid
        if owner is not None and owner in vanished:
            continue  # the process exited while we read it: gone, not an error
        scope = scopes[index]
        # Every wildcard listener of a namespace has the same hint: compute it once.
        key = (listener.netns, scope, listener.address if scope is BindScope.SPECIFIC else "")
        hint = hints.get(key)
        if hint is None:
            read = read_by_ns[listener.netns]
            hint = exposure.hint(_listener(listener, None, None, None), scope, read.interfaces, intended)
            hints[key] = hint
        process = infos.get(owner) if owner is not None else None
        listeners.append(_listener(listener, process, classifications.get(index), hint))

    namespaces = tuple(
        NetNamespace(
            inode=read.entry.inode,
            is_probe_namespace=read.entry.inode == discovery.own_inode,
            names=tuple(read.entry.names),
            pids=len(read.entry.pids),
            source=read.source,
            interfaces=tuple(read.interfaces or ()),
        )
        for read in reads
    )
    return Inventory(
        host=host or socket.gethostname(),
        collected_at=collected_at,
        netaudit_version=__version__,
        privilege=Privilege(
            is_root=is_root,
            can_enter_namespaces=can_enter,
            can_read_all_processes=scan.unreadable_pids == 0 and discovery.unreadable_pids == 0,
        ),
        intended_subnets=tuple(str(net) for net in intended),
        namespaces=namespaces,
        listeners=tuple(listeners),
        gaps=tuple(gaps),
        cgroup2_mount=_mount_point(cgroupmap.node_mount(f"{proc}/self/mountinfo")),
    )
