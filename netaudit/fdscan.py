"""Map socket inodes to the processes that hold them, by reading /proc/<pid>/fd links.

A full scan is O(every fd on the node) and mostly kernel time (about 5 us a link,
research/perf-baselines.md §A), which is already faster than `ss -p`. netaudit.owners reads
fewer tables where the socket's cgroup names its creator; ``Reader`` lets it read some
tables first, part of a table, and the rest of the node only if it must, and still count
what it found and what it could not read as one scan would. Without root, other users' fd
tables are unreadable: their sockets keep pid None and the count is reported.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FdScan:
    """Attributes:
    owners: inode -> pids holding it, ascending.
    unreadable_pids: processes whose fd table we may not read.
    tables_read: pids whose fd table was opened, in whole or in part.
    is_full_scan: every process's table was read (or found unreadable).
    """

    owners: dict[int, tuple[int, ...]]
    unreadable_pids: int
    tables_read: frozenset[int] = field(default_factory=frozenset)
    is_full_scan: bool = True


class Reader:
    """Reads fd tables one process at a time and keeps, across all of them, which wanted
    socket inodes each pid holds and which tables were denied."""

    def __init__(self, wanted: Collection[int], proc: str = "/proc") -> None:
        self.wanted = frozenset(wanted)
        self.proc = proc
        self.holders: dict[int, set[int]] = {}
        self.denied: set[int] = set()
        self.complete: set[int] = set()  # read to the end, or gone
        self.opened: set[int] = set()
        self.is_full_scan = False

    def read(self, pid: int, until_found: Collection[int] = ()) -> None:
        """Record every wanted inode in ``pid``'s table. With ``until_found``, stop as soon
        as each of those inodes has been seen in it: listeners are opened before the
        connections they accept, so they sit at the start of a long table."""
        self.opened.add(pid)
        try:
            # Links read relative to the open directory: one path component for the kernel to
            # walk per link instead of four (7 % of a scan).
            directory = os.open(f"{self.proc}/{pid}/fd", _DIRECTORY)
        except PermissionError:
            self.denied.add(pid)
            return
        except OSError:
            self.complete.add(pid)  # exited, or a kernel thread: nothing to map
            return
        try:
            if not until_found:
                is_whole = self._read_links(pid, directory, os.listdir(directory), ())
            else:
                # Listed lazily: the listeners sit at the start of a table that may hold
                # thousands of accepted connections, and listing them costs too.
                with os.scandir(directory) as entries:
                    is_whole = self._read_links(
                        pid, directory, (entry.name for entry in entries), until_found
                    )
        except OSError:
            is_whole = True  # exited while we listed it
        finally:
            os.close(directory)
        if is_whole:
            self.complete.add(pid)

    def _read_links(self, pid: int, directory: int, fds: Iterable[str], until_found: Collection[int]) -> bool:
        """False when the table was denied or left early."""
        remaining = set(until_found)
        wanted, holders = self.wanted, self.holders
        for fd in fds:
            try:
                link = os.readlink(fd, dir_fd=directory)
            except PermissionError:
                # The directory listed but its links are denied: a process more privileged
                # than us (ptrace access mode check), even as root.
                self.denied.add(pid)
                return False
            except OSError:
                continue  # closed while we looked
            # "socket:[12345]"
            if link[:8] == "socket:[":
                inode = int(link[8:-1])
                if inode in wanted:
                    holders.setdefault(inode, set()).add(pid)
                    if remaining:
                        remaining.discard(inode)
                        if not remaining:
                            return False
        return True

    def read_all(self) -> None:
        """Read every table not read to the end yet: with what was read before, one full
        scan of the node."""
        done = self.complete | self.denied
        for name in os.listdir(self.proc):
            if name.isdigit() and int(name) not in done:
                self.read(int(name))
        self.is_full_scan = True

    def probe_unopened(self) -> None:
        """Find the unreadable tables among the processes never opened, at one link each:
        every link of a table passes the same access check, so the first one tells."""
        for name in os.listdir(self.proc):
            if not name.isdigit() or int(name) in self.opened:
                continue
            prefix = f"{self.proc}/{name}/fd/"
            for fd in ("0", "1", "2"):
                try:
                    os.readlink(prefix + fd)
                    break
                except PermissionError:
                    self.denied.add(int(name))
                    break
                except OSError:
                    continue  # that fd is closed, or the process is gone
            else:
                self._probe_first_link(int(name), prefix)

    def _probe_first_link(self, pid: int, prefix: str) -> None:
        try:
            with os.scandir(prefix) as entries:
                first = next(entries, None)
        except PermissionError:
            self.denied.add(pid)
            return
        except OSError:
            return
        if first is None:
            return
        try:
            os.readlink(prefix + first.name)
        except PermissionError:
            self.denied.add(pid)
        except OSError:
            return

    def result(self) -> FdScan:
        return FdScan(
            owners={
                inode: (next(iter(pids)),) if len(pids) == 1 else tuple(sorted(pids))
                for inode, pids in self.holders.items()
            },
            unreadable_pids=len(self.denied),
            tables_read=frozenset(self.opened),
            is_full_scan=self.is_full_scan,
        )


def scan(wanted: set[int], proc: str = "/proc") -> FdScan:
    """Every process's table: the answer the other ways of attributing must match."""
    if not wanted:
        return FdScan({}, 0)
    reader = Reader(wanted, proc)
    reader.read_all()
    return reader.result()
