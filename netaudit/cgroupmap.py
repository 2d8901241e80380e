"""cgroup v2 ids: which directory of the unified hierarchy an id names, and which processes
live there. sock_diag tags every socket with the id of the cgroup its creator was in
(INET_DIAG_CGROUP_ID), so the probe can ask "who made this listener" of a cgroup instead of
reading every process's fd table (netaudit.owners).

The id is the directory's inode number in the cgroup2 filesystem (kernfs gives the same
64-bit number to stat, to readdir's d_ino and to the socket tag), so one walk of the tree
that stops when every wanted id is found maps them all without a stat per directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import NamedTuple

# An absolute path of plain characters, no "..": it ends up inside a quoted string of an
# nftables rule, where a '"' or '#' from a hostile inventory would rewrite the rule.
MOUNT_POINT = re.compile(r"\A(?!.*(?:^|/)\.\.(?:/|\Z))/[A-Za-z0-9._@+/-]{0,255}\Z")
_MOUNTINFO_LIMIT = 1 << 20
_PROCS_LIMIT = 1 << 22  # a cgroup of 400,000 pids; the root cgroup of a busy node is far less


class Mount(NamedTuple):
    """One line of /proc/self/mountinfo that matters here.

    Attributes:
        root: the directory of the filesystem mounted (``/`` unless a subtree is bind-mounted).
        point: where it is mounted.
        fstype, options: the filesystem type and its super options (``rw,net_cls``).
    """

    root: str
    point: str
    fstype: str
    options: tuple[str, ...]


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134
    if "\\" not in text:
        return text
    out, index = [], 0
    while index < len(text):
        if text[index] == "\\" and text[index + 1 : index + 4].isdigit():
            out.append(chr(int(text[index + 1 : index + 4], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo text (proc(5)); malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        mounts.append(
            Mount(
                root=_unescape(fields[3]),
                point=_unescape(fields[4]),
                fstype=rest[0],
                options=tuple(rest[2].split(",")),
            )
        )
    return mounts


def is_socket_tag_reliable(release: str, mounts: Iterable[Mount]) -> bool:
    """Whether a socket's cgroup id names its creator's cgroup on this kernel.

    Before Linux 5.15 one field of the socket held either the cgroup v2 pointer or the
    net_cls/net_prio v1 data; once those v1 controllers were used, every new socket was
    tagged with the root cgroup ("cgroup: disabling cgroup2 socket matching due to net_prio
    or net_cls activation"). On such a kernel with either controller mounted, trust no tag.
    """
    parts = release.split(".")
    try:
        version = (int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0))
    except (IndexError, ValueError):
        return False
    if version >= (5, 15):
        return True
    return not any(
        mount.fstype == "cgroup" and ("net_cls" in mount.options or "net_prio" in mount.options)
        for mount in mounts
    )


def unified_mount(mounts: Iterable[Mount]) -> str | None:
    """Where the whole cgroup2 hierarchy is mounted. A mount of a subtree (a container's
    cgroup namespace, a bind mount) cannot name the ids outside it; it is used only when
    there is nothing better, and the ids it does not hold stay unknown."""
    points = [(mount.root != "/", mount.point) for mount in mounts if mount.fstype == "cgroup2"]
    return min(points)[1] if points else None


class Hierarchy:
    """The cgroup2 tree mounted at ``mount``, read lazily: ``paths`` walks only until every
    asked id is found, and each directory's listing is kept for the next question. (A plain
    class: a dataclass costs a millisecond of start-up.)"""

    __slots__ = ("_found", "_pending", "mount")

    def __init__(self, mount: str) -> None:
        self.mount = mount
        self._found: dict[int, str] = {}
        self._pending: list[str] | None = None

    def paths(self, ids: Iterable[int]) -> dict[int, str]:
        """Directory of each id in ``ids`` that this hierarchy holds; others are left out."""
        wanted = set(ids)
        if self._pending is None:
            self._pending = [self.mount]
            try:
                self._found[os.stat(self.mount).st_ino] = self.mount
            except OSError:
                self._pending = []
        missing = wanted - self._found.keys()
        while missing and self._pending:
            directory = self._pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue  # removed while we walked: its ids are gone too
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    ident = entry.inode()
                    self._found[ident] = entry.path
                    missing.discard(ident)
                    self._pending.append(entry.path)
        return {ident: self._found[ident] for ident in wanted if ident in self._found}

    @staticmethod
    def members(path: str) -> tuple[int, ...] | None:
        """The pids in the cgroup at ``path`` (not its descendants), ascending; None when it
        cannot be read or is gone. A 0 stands for a process outside our pid namespace."""
        try:
            fd = os.open(f"{path}/cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            chunks, size = [], 0
            while size < _PROCS_LIMIT:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError:
            return None
        finally:
            os.close(fd)
        try:
            return tuple(sorted({int(token) for token in b"".join(chunks).split()}))
        except ValueError:
            return None


def _mounts(mountinfo: str) -> list[Mount] | None:
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            return parse_mountinfo(handle.read(_MOUNTINFO_LIMIT))
    except OSError:
        return None


def node_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where this node mounts its cgroup2 hierarchy (``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on a hybrid v1/v2 host), or None."""
    mounts = _mounts(mountinfo)
    return unified_mount(mounts) if mounts else None


def open_hierarchy(mountinfo: str = "/proc/self/mountinfo") -> Hierarchy | None:
    """This node's cgroup2 hierarchy if socket tags can be trusted here, else None (no
    cgroup2 mount, an unreadable mountinfo, or a kernel whose tags lie)."""
    mounts = _mounts(mountinfo)
    if mounts is None or not is_socket_tag_reliable(os.uname().release, mounts):
        return None
    point = unified_mount(mounts)
    return Hierarchy(point) if point else None
