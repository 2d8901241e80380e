"""Who holds a listener, through its cgroup first: a recorded /proc tree (fd links are real
symbolic links) and a directory tree standing in for the cgroup2 filesystem. Every answer is
checked against the full fd scan, which the cgroup path must match."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netaudit import cgroupmap, fdscan, owners
from tests.unit.fakeproc import FakeProc


class Node:
    """A fake /proc and cgroup tree; ``cgroup`` returns the id sock_diag would tag with."""

    def __init__(self, tmp_path: Path) -> None:
        self.proc = FakeProc(tmp_path / "proc")
        self.root = tmp_path / "cgroup"
        self.root.mkdir()
        self.hierarchy = cgroupmap.Hierarchy(str(self.root))

    def cgroup(self, name: str, *pids: int) -> int:
        path = self.root / name
        path.mkdir(parents=True)
        (path / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        return os.stat(path).st_ino

    def find(self, tags: dict[int, int | None], mode: owners.Mode = "cgroup") -> fdscan.FdScan:
        found = owners.find(tags, str(self.proc.root), mode, self.hierarchy)
        assert found.owners == fdscan.scan(set(tags), str(self.proc.root)).owners or not found.is_full_scan
        return found


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def test_a_process_alone_in_its_cgroup_is_read_only_for_its_listeners(node: Node) -> None:
    # Given a rank alone in its task cgroup (two listeners, then 300 connections), and a
    # client alone in another cgroup holding 300 connections and no listener
    node.proc.process(100, sockets=(1001, 1002, *range(50_000, 50_300)))
    node.proc.process(200, sockets=tuple(range(60_000, 60_300)))
    task = node.cgroup("job_1/step_0/task_0", 100)
    node.cgroup("clients", 200)

    # When the listeners are attributed
    found = node.find({1001: task, 1002: task})

    # Then the rank owns them, and the client's table was never opened
    assert found.owners == {1001: (100,), 1002: (100,)}
    assert found.tables_read == {100}
    assert not found.is_full_scan
    assert found.owners == fdscan.scan({1001, 1002}, str(node.proc.root)).owners


def test_several_processes_in_one_cgroup_are_told_apart_by_their_fds(node: Node) -> None:
    # Given an agent and the worker it forked (which inherited the store socket) in one cgroup
    node.proc.process(300, sockets=(2001,))
    node.proc.process(301, ppid=300, sockets=(2001, 2002))
    node.proc.process(302, sockets=(9,))
    shared = node.cgroup("job_2", 300, 301)
    node.cgroup("other", 302)

    found = node.find({2001: shared, 2002: shared})

    assert found.owners == {2001: (300, 301), 2002: (301,)}
    assert found.tables_read == {300, 301}


@pytest.mark.parametrize(
    "case", ["moved-away", "untagged", "init-alone", "empty", "unknown-id", "fd-scan-mode"]
)
def test_what_the_cgroup_cannot_settle_falls_back_to_the_full_scan(node: Node, case: str) -> None:
    # Given a listener held by process 500 in cgroup B, and a process 400 alone in cgroup A
    node.proc.process(1, sockets=(7,))
    node.proc.process(400, sockets=(3002,))
    node.proc.process(500, sockets=(3001,))
    node.proc.process(600, sockets=(11, 12, 13))
    a, b = node.cgroup("a", 400), node.cgroup("b", 500)
    tag = {
        "moved-away": a,  # 500 created it in A and moved to B: A's member does not hold it
        "untagged": None,  # procfs, or a kernel before 5.7
        "init-alone": node.cgroup("init.scope", 1),  # systemd passes its sockets to services
        "empty": node.cgroup("gone.scope"),
        "unknown-id": 123_456_789,  # outside the mounted tree (a cgroup namespace)
        "fd-scan-mode": b,
    }[case]

    found = node.find({3001: tag, 3002: a}, "fd-scan" if case == "fd-scan-mode" else "cgroup")

    # Then every table was read, and the answer is the full scan's
    assert found.is_full_scan
    assert found.tables_read >= {1, 400, 500, 600}
    assert found.owners == {3001: (500,), 3002: (400,)}


def test_a_listener_no_one_visible_holds_in_a_cgroup_we_cannot_see_into_stays_unowned(node: Node) -> None:
    # Given a cgroup whose only member is outside our pid namespace (cgroup.procs says 0)
    node.proc.process(700, sockets=(42,))
    hidden = node.cgroup("container", 0)

    found = node.find({4001: hidden})

    assert found.owners == {}
    assert not found.is_full_scan  # a full scan could not see that process either
    assert found.tables_read == frozenset()


def test_a_socket_passed_to_another_cgroup_lists_its_creator_alone(node: Node) -> None:
    # Given a creator alone in A that also holds a socket made in B (passed over SCM_RIGHTS):
    # the documented limit of the cgroup path, which reads the creator only until its own
    # listener turns up
    node.proc.process(800, sockets=(5001, 5002))
    node.proc.process(900, sockets=(5002,))
    a, b = node.cgroup("a", 800), node.cgroup("b", 900)

    found = node.find({5001: a, 5002: b})

    assert found.owners == {5001: (800,), 5002: (900,)}
    assert fdscan.scan({5001, 5002}, str(node.proc.root)).owners[5002] == (800, 900)


def test_no_sockets_reads_nothing(node: Node) -> None:
    node.proc.process(100, sockets=(1,))
    assert node.find({}) == fdscan.FdScan({}, 0)
