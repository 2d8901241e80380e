"""Map socket inodes to the processes that hold them, by reading /proc/<pid>/fd links.

This is O(every fd on the node) and mostly kernel time (about 5 us a link,
research/perf-baselines.md §A), which is already faster than `ss -p`. Without root, other
users' fd tables are unreadable: their sockets keep pid None and the count is reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FdScan:
    """Attributes:
    owners: inode -> pids holding it, ascending.
    unreadable_pids: processes whose fd table we may not read.
    """

    owners: dict[int, tuple[int, ...]]
    unreadable_pids: int


def scan(wanted: set[int], proc: str = "/proc") -> FdScan:
    owners: dict[int, list[int]] = {}
    unreadable = 0
    if not wanted:
        return FdScan({}, 0)
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        fd_dir = f"{proc}/{name}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            unreadable += 1
            continue
        except OSError:
            continue  # exited, or a kernel thread: nothing to map
        pid = int(name)
        is_denied = False
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except PermissionError:
                # The directory listed but its links are denied: a process more privileged
                # than us (ptrace access mode check), even as root.
                is_denied = True
                break
            except OSError:
                continue  # closed while we looked
            # "socket:[12345]"
            if link.startswith("socket:["):
                inode = int(link[8:-1])
                if inode in wanted:
                    holders = owners.setdefault(inode, [])
                    if not holders or holders[-1] != pid:
                        holders.append(pid)
        unreadable += is_denied
    return FdScan({inode: tuple(sorted(pids)) for inode, pids in owners.items()}, unreadable)
