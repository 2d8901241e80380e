"""Who holds each listening socket, reading as few fd tables as the kernel lets us.

sock_diag tags a socket with its creator's cgroup (netaudit.cgroupmap), and the processes
that hold a socket are its creator and the children that inherited it, who stay in that
cgroup. So the candidates for a listener are the members of its cgroup:

* one member: read that process's table only until its cgroup's listeners have all turned
  up (they are opened before the connections they accept, so a few links suffice even in
  a table of thousands of established connections);
* several members: read each member's whole table (the cgroup cannot tell them apart);
* a listener that no member holds (a socket passed to another cgroup, its creator moved
  away, a kernel socket), a cgroup that is empty, unknown or holds init alone (systemd
  hands its sockets to services), a socket without a tag (procfs, Linux < 5.7), or a kernel
  whose tags cannot be trusted: the full scan of every table, as `ss -p` does. Then the
  answer is the full scan's, exactly.

A listener whose cgroup holds a process we may not read (or cannot see) stays without an
owner: the full scan could not read that process either. The one thing the cgroup path takes
on trust is that no process outside the creator's cgroup holds the socket too; a socket
passed on while its creator keeps it (SCM_RIGHTS to another cgroup) lists the creator alone.
``mode="fd-scan"`` reads every table regardless.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from netaudit import cgroupmap, fdscan

Mode = Literal["cgroup", "fd-scan"]
_INIT = 1  # pid 1 of our pid namespace
_UNSEEN = 0  # how cgroup.procs lists a member outside our pid namespace


def find(
    tags: Mapping[int, int | None],
    proc: str = "/proc",
    mode: Mode = "cgroup",
    hierarchy: cgroupmap.Hierarchy | None = None,
) -> fdscan.FdScan:
    """Holders of each socket inode in ``tags`` (inode -> the socket's cgroup id, None when
    unknown). ``hierarchy`` defaults to this node's (cgroupmap.open_hierarchy)."""
    if not tags:
        return fdscan.FdScan({}, 0)
    reader = fdscan.Reader(tags, proc)
    if mode == "cgroup" and hierarchy is None and any(tag is not None for tag in tags.values()):
        hierarchy = cgroupmap.open_hierarchy()
    if mode != "cgroup" or hierarchy is None:
        reader.read_all()
        return reader.result()

    unsettled = {inode for inode, tag in tags.items() if tag is None}
    by_cgroup: dict[int, list[int]] = {}
    for inode, tag in tags.items():
        if tag is not None:
            by_cgroup.setdefault(tag, []).append(inode)
    paths = hierarchy.paths(by_cgroup)
    candidates: list[tuple[list[int], tuple[int, ...]]] = []
    for ident, inodes in by_cgroup.items():
        path = paths.get(ident)
        members = hierarchy.members(path) if path is not None else None
        if not members or members == (_INIT,):
            unsettled.update(inodes)
        else:
            candidates.append((inodes, members))

    for inodes, members in candidates:
        if len(members) == 1 and members[0] != _UNSEEN:
            if members[0] not in reader.opened:
                reader.read(members[0], until_found=inodes)
            continue
        for pid in members:
            if pid != _UNSEEN and pid not in reader.complete and pid not in reader.denied:
                reader.read(pid)

    for inodes, members in candidates:
        if _UNSEEN in members or not reader.denied.isdisjoint(members):
            continue  # a member we cannot read may hold them: so could a full scan not tell
        unsettled.update(inode for inode in inodes if inode not in reader.holders)
    if unsettled:
        reader.read_all()
    else:
        reader.probe_unopened()
    return reader.result()
