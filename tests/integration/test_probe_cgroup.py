"""Listeners attributed through their sockets' cgroups give the same pids as the full fd scan,
on real sockets of real processes placed in real cgroup v2 directories (loopback only): a
process alone in its cgroup with established connections, an agent and its forked worker
sharing a cgroup with a sibling, a client cgroup with no listener, and a process that moved
to another cgroup after it opened its listener."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netaudit import cgroupmap, fdscan, inventory, netlink, owners, signatures

pytestmark = pytest.mark.requires_root

# One fixture process: joins its cgroup, opens its listeners (forking a worker that inherits
# them if asked), connects to or accepts from a peer, prints what it holds, waits for EOF.
_CHILD = r"""
import json, os, socket, sys, threading
spec = json.loads(sys.argv[1])
with open(spec["cgroup"] + "/cgroup.procs", "w") as procs:
    procs.write(str(os.getpid()))
def listen(family, address):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(512)
    return sock
held = [listen(socket.AF_INET, "127.0.0.1") for _ in range(spec.get("listeners", 0))]
held += [listen(socket.AF_INET6, "::1") for _ in range(spec.get("listeners6", 0))]
facts = {"pid": os.getpid(), "inodes": [os.fstat(s.fileno()).st_ino for s in held],
         "ports": [s.getsockname()[1] for s in held]}
if spec.get("move_to"):  # the socket keeps the cgroup it was made in
    with open(spec["move_to"] + "/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))
if spec.get("fork"):
    read_end, write_end = os.pipe()
    worker = os.fork()
    if worker == 0:  # inherits every listener, adds one of its own
        own = listen(socket.AF_INET, "127.0.0.1")
        os.write(write_end, json.dumps([os.fstat(own.fileno()).st_ino]).encode())
        sys.stdin.read()
        os._exit(0)
    facts["worker"] = {"pid": worker, "inodes": json.loads(os.read(read_end, 4096))}
accepted = []
def accept_all():
    while True:
        accepted.append(held[0].accept()[0])
if spec.get("accept"):
    threading.Thread(target=accept_all, daemon=True).start()
clients = [socket.create_connection(("127.0.0.1", spec["connect_to"])) for _ in range(spec.get("connections", 0))]
print(json.dumps(facts), flush=True)
sys.stdin.read()
if spec.get("fork"):
    os.kill(facts["worker"]["pid"], 9)
    os.waitpid(facts["worker"]["pid"], 0)
"""


@dataclass
class Child:
    process: subprocess.Popen[str]
    facts: dict  # pid, inodes, ports (and worker: pid, inodes)


class CgroupLab:
    """cgroup v2 directories under one parent of our own, and the processes put in them.
    ``close()`` ends only those processes, by pid, and removes the directories."""

    def __init__(self, mount: str) -> None:
        self.parent = Path(mount) / f"netaudit-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.parent.mkdir()
        self.dirs: list[Path] = [self.parent]
        self.children: list[Child] = []

    def cgroup(self, name: str) -> str:
        path = self.parent / name
        path.mkdir()
        self.dirs.append(path)
        return str(path)

    def start(self, cgroup: str, **spec: object) -> Child:
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps({"cgroup": cgroup, **spec})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        child = Child(process, {})
        self.children.append(child)
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"fixture process exited with {process.wait()}"
        child.facts = json.loads(line)
        return child

    def close(self) -> None:
        for child in self.children:
            with contextlib.suppress(OSError):
                child.process.stdin.close()  # type: ignore[union-attr]
        for child in self.children:
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        for path in reversed(self.dirs):
            deadline = time.monotonic() + 5
            while path.exists():
                try:
                    path.rmdir()
                except OSError:  # a reaped process can linger in its cgroup for a moment
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


@pytest.fixture
def lab() -> Iterator[CgroupLab]:
    hierarchy = cgroupmap.open_hierarchy()
    if hierarchy is None:
        pytest.skip("needs a cgroup v2 hierarchy whose ids this kernel tags sockets with")
    if not any(row[7] for row in netlink.listening_rows()):
        pytest.skip("this kernel sends no INET_DIAG_CGROUP_ID (Linux < 5.7)")
    try:
        made = CgroupLab(hierarchy.mount)
    except OSError as error:
        pytest.skip(f"cannot create a cgroup under {hierarchy.mount}: {error}")
    try:
        yield made
    finally:
        made.close()


def _tags(*children: Child) -> dict[int, int | None]:
    """The fixture's listeners with their sock_diag cgroup ids, as the probe reads them."""
    wanted = {inode for child in children for inode in _inodes(child)}
    tags = {row[3]: row[7] for row in netlink.listening_rows() if row[3] in wanted}
    assert tags.keys() == wanted
    return tags


def _inodes(child: Child) -> list[int]:
    return child.facts["inodes"] + child.facts.get("worker", {}).get("inodes", [])


def test_cgroup_attribution_matches_the_fd_scan_and_skips_other_tables(lab: CgroupLab) -> None:
    # Given a rank alone in its cgroup (listeners first, then 200 accepted connections), a
    # client alone in another cgroup holding the other 200 ends, and a cgroup of three: an
    # agent, the worker it forked (which inherited the agent's listeners) and a sibling
    rank = lab.start(lab.cgroup("rank"), listeners=3, listeners6=1, accept=True)
    client = lab.start(lab.cgroup("client"), connect_to=rank.facts["ports"][0], connections=200)
    shared = lab.cgroup("agent")
    agent = lab.start(shared, listeners=2, fork=True)
    sibling = lab.start(shared, listeners=1)
    _wait_for_accepted(rank.facts["pid"], 200)

    # When the owners are found both ways
    tags = _tags(rank, agent, sibling)
    by_cgroup = owners.find(tags)
    by_fds = fdscan.scan(set(tags))

    # Then the answers are the same, and the client's 200 fds were never read
    assert by_cgroup.owners == by_fds.owners
    assert not by_cgroup.is_full_scan
    assert client.facts["pid"] not in by_cgroup.tables_read
    worker = agent.facts["worker"]["pid"]
    assert by_cgroup.owners[agent.facts["inodes"][0]] == tuple(sorted((agent.facts["pid"], worker)))
    assert by_cgroup.owners[agent.facts["worker"]["inodes"][0]] == (worker,)
    assert by_cgroup.owners[rank.facts["inodes"][3]] == (rank.facts["pid"],)  # the ::1 one


def test_a_process_that_moved_after_listening_is_still_found(lab: CgroupLab) -> None:
    # Given a process that opened a listener in cgroup A and moved to B, and a process now
    # alone in A with a listener of its own
    a, b = lab.cgroup("a"), lab.cgroup("b")
    mover = lab.start(a, listeners=1, move_to=b)
    stayer = lab.start(a, listeners=1)

    tags = _tags(mover, stayer)
    found = owners.find(tags)

    # Then A's member does not hold the mover's socket, so the full scan finds its owner
    assert found.is_full_scan
    assert found.owners == fdscan.scan(set(tags)).owners
    assert found.owners[mover.facts["inodes"][0]] == (mover.facts["pid"],)
    assert found.owners[stayer.facts["inodes"][0]] == (stayer.facts["pid"],)


def test_the_inventory_is_the_same_either_way(lab: CgroupLab) -> None:
    rank = lab.start(lab.cgroup("rank"), listeners=2, listeners6=1, accept=True)
    lab.start(lab.cgroup("client"), connect_to=rank.facts["ports"][0], connections=50)
    shared = lab.cgroup("agent")
    agent = lab.start(shared, listeners=2, fork=True)
    sibling = lab.start(shared, listeners=1)
    ours = {inode for child in (rank, agent, sibling) for inode in _inodes(child)}
    loaded = signatures.load()

    by_cgroup = inventory.collect(loaded, is_own_namespace_only=True, attribution="cgroup")
    by_fds = inventory.collect(loaded, is_own_namespace_only=True, attribution="fd-scan")

    def fixture(found: inventory.Inventory) -> dict[int, object]:
        return {item.inode: (item.pid, item.pids, item.process, item.classification, item.exposure)
                for item in found.listeners if item.inode in ours}  # fmt: skip

    assert fixture(by_cgroup) == fixture(by_fds)
    assert len(fixture(by_cgroup)) == len(ours)
    # the creator of a shared listener owns it, not the worker that inherited it
    assert fixture(by_cgroup)[agent.facts["inodes"][1]][0] == agent.facts["pid"]


def _wait_for_accepted(pid: int, count: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(os.listdir(f"/proc/{pid}/fd")) < count and time.monotonic() < deadline:
        time.sleep(0.02)
