"""cgroup v2 ids to directories and members: recorded mountinfo texts, and a directory tree on
disk standing in for the cgroup2 filesystem (there too an id is a directory's inode)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netaudit import cgroupmap

# A hybrid node (this project's VMs): v1 controllers, the unified hierarchy at .../unified.
HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd node with the unified hierarchy only, and a container's view of its own subtree.
UNIFIED = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
)
CONTAINER = "612 600 0:26 /../.. /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw\n"
NET_CLS = "36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw,relatime - cgroup cgroup rw,net_cls,net_prio\n"


def test_mountinfo_fields_and_escapes() -> None:
    mounts = cgroupmap.parse_mountinfo(
        HYBRID + "50 31 0:40 / /mnt/with\\040space rw - cgroup2 none rw\nbroken\n"
    )

    assert [m.point for m in mounts][-2:] == ["/sys/fs/cgroup/unified", "/mnt/with space"]
    memory = mounts[3]
    assert (memory.fstype, memory.options, memory.root) == ("cgroup", ("rw", "memory"), "/")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HYBRID, "/sys/fs/cgroup/unified"),
        (UNIFIED, "/sys/fs/cgroup"),
        (CONTAINER, "/sys/fs/cgroup"),  # a subtree is better than nothing: unknown ids fall back
        (CONTAINER.replace("/sys/fs/cgroup", "/inner") + UNIFIED, "/sys/fs/cgroup"),  # the whole tree wins
        (HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"), None),
    ],
    ids=["hybrid", "unified", "container", "whole-tree-first", "none"],
)
def test_the_unified_mount_is_found(text: str, expected: str | None) -> None:
    assert cgroupmap.unified_mount(cgroupmap.parse_mountinfo(text)) == expected


@pytest.mark.parametrize(
    ("release", "text", "expected"),
    [
        ("6.18.44-fc-v1252", HYBRID + NET_CLS, True),  # 5.15 split the socket's cgroup from net_cls
        ("5.15.0-91-generic", HYBRID + NET_CLS, True),
        ("5.14.0-362.el9.x86_64", UNIFIED, True),
        ("5.14.0-362.el9.x86_64", HYBRID + NET_CLS, False),  # net_cls in use: tags may say root
        ("5.10.0", HYBRID.replace("rw,memory", "rw,net_prio"), False),
        ("weird", UNIFIED, False),
    ],
)
def test_socket_tags_are_trusted_only_where_the_kernel_keeps_them(
    release: str, text: str, expected: bool
) -> None:
    assert cgroupmap.is_socket_tag_reliable(release, cgroupmap.parse_mountinfo(text)) is expected


def _cgroup(path: Path, pids: str | None = None) -> int:
    path.mkdir(parents=True)
    if pids is not None:
        (path / "cgroup.procs").write_text(pids)
    return os.stat(path).st_ino


def test_ids_map_to_directories_by_inode(tmp_path: Path) -> None:
    # Given a tree shaped like a Slurm node's
    root = tmp_path / "cg"
    root_id = _cgroup(root)
    job = _cgroup(root / "system.slice" / "slurmstepd.scope" / "job_42")
    task = _cgroup(root / "system.slice" / "slurmstepd.scope" / "job_42" / "step_0" / "user" / "task_1")
    sshd = _cgroup(root / "system.slice" / "sshd.service")
    (root / "cgroup.procs").write_text("")  # a file, never taken for a cgroup
    hierarchy = cgroupmap.Hierarchy(str(root))

    # When ids are asked in two rounds, and one id is nowhere
    first = hierarchy.paths({task, 999_999_999})
    second = hierarchy.paths([job, sshd, root_id])

    # Then each known id names its directory, the unknown one is left out
    assert first == {task: f"{root}/system.slice/slurmstepd.scope/job_42/step_0/user/task_1"}
    assert second == {
        job: f"{root}/system.slice/slurmstepd.scope/job_42",
        sshd: f"{root}/system.slice/sshd.service",
        root_id: str(root),
    }


def test_members_are_read_sorted_and_unreadable_is_none(tmp_path: Path) -> None:
    _cgroup(tmp_path / "a", "812\n17\n812\n")
    _cgroup(tmp_path / "empty", "")
    _cgroup(tmp_path / "gone")
    _cgroup(tmp_path / "garbage", "12\nnot-a-pid\n")

    assert cgroupmap.Hierarchy.members(str(tmp_path / "a")) == (17, 812)
    assert cgroupmap.Hierarchy.members(str(tmp_path / "empty")) == ()
    assert cgroupmap.Hierarchy.members(str(tmp_path / "gone")) is None
    assert cgroupmap.Hierarchy.members(str(tmp_path / "garbage")) is None


def test_this_node_is_read_when_its_tags_can_be_trusted(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(UNIFIED)
    found = cgroupmap.open_hierarchy(str(mountinfo))
    assert found is not None and found.mount == "/sys/fs/cgroup"
    mountinfo.write_text(HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"))
    assert cgroupmap.open_hierarchy(str(mountinfo)) is None
    assert cgroupmap.open_hierarchy(str(tmp_path / "missing")) is None
