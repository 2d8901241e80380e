"""Network namespaces visible through /proc and /run/netns, and a way to step into one.

setns(CLONE_NEWNET) changes the namespace of the calling thread only, and a socket keeps the
namespace it was created in. So ``entered()`` switches this thread, the caller creates its
netlink sockets, and the thread switches back before anything else runs on it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
RUN_NETNS = "/run/netns"  # where `ip netns add` bind-mounts named namespaces


class NamespaceError(OSError):
    """A namespace could not be entered (privilege, or it vanished)."""


@dataclass(slots=True)
class NamespaceEntry:
    """A namespace and the ways to reach it.

    Attributes:
        pids: processes living in it, ascending.
        names: /run/netns names bound to it.
    """

    inode: int
    pids: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def handle_paths(self) -> list[str]:
        """Paths that open this namespace, most stable first."""
        paths = [f"{RUN_NETNS}/{name}" for name in self.names]
        paths += [f"/proc/{pid}/ns/net" for pid in self.pids[:8]]
        return paths


@dataclass(slots=True)
class Discovery:
    """Attributes:
    unreadable_pids: processes whose namespace link we may not read (other users, not root).
    """

    own_inode: int
    namespaces: dict[int, NamespaceEntry]
    unreadable_pids: int


def _inode_of(link: str) -> int | None:
    # "net:[4026531840]"
    if link.startswith("net:[") and link.endswith("]"):
        return int(link[5:-1])
    return None


def own_inode() -> int:
    inode = _inode_of(os.readlink("/proc/thread-self/ns/net"))
    if inode is None:
        raise NamespaceError("cannot read this process's network namespace")
    return inode


def discover(proc: str = "/proc") -> Discovery:
    """Group every readable pid by network namespace; add the named ones of /run/netns."""
    mine = own_inode()
    namespaces: dict[int, NamespaceEntry] = {mine: NamespaceEntry(mine)}
    unreadable = 0
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            inode = _inode_of(os.readlink(f"{proc}/{name}/ns/net"))
        except PermissionError:
            unreadable += 1
            continue
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited while we looked: gone, not an error
        except OSError:
            # kernel threads have no ns links readable by anyone but themselves
            continue
        if inode is not None:
            namespaces.setdefault(inode, NamespaceEntry(inode)).pids.append(int(name))
    try:
        names = sorted(os.listdir(RUN_NETNS))
    except OSError:
        names = []
    for name in names:
        try:
            inode = os.stat(f"{RUN_NETNS}/{name}").st_ino
        except OSError:
            continue
        namespaces.setdefault(inode, NamespaceEntry(inode)).names.append(name)
    for entry in namespaces.values():
        entry.pids.sort()
    return Discovery(own_inode=mine, namespaces=namespaces, unreadable_pids=unreadable)


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc  # noqa: PLW0603 - loaded once, on first use: ctypes costs start-up time
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise NamespaceError(code, os.strerror(code))


@contextmanager
def entered(entry: NamespaceEntry) -> Iterator[None]:
    """Run the body with this thread inside ``entry``'s network namespace."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = -1
        last_error: OSError | None = None
        for path in entry.handle_paths():
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                last_error = error
                continue
            # A pid can be reused by a process of another namespace between discovery
            # and now: check that the handle still names the namespace we want.
            if os.fstat(target).st_ino == entry.inode:
                break
            os.close(target)
            target = -1
        if target < 0:
            raise NamespaceError(f"namespace {entry.inode} vanished or is unreadable: {last_error}")
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Failing to come home would leave this thread in a foreign namespace; there is
            # no safe way to continue then.
            _setns(home)
    finally:
        os.close(home)
