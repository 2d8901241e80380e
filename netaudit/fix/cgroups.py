"""The job cgroups a port-independent rule can match.

nftables' ``socket cgroupv2 level N "PATH"`` matches a packet whose socket lives in the cgroup
PATH or below it, at depth N of the cgroup v2 tree: with Slurm's cgroup v2 plugin every job
step runs under ``/system.slice/slurmstepd.scope/job_<id>/...``, so one rule on that scope
covers every job's ephemeral Gloo, NCCL and TensorPipe ports, whatever port the next job picks.
nft resolves PATH to the directory's inode when the ruleset is loaded, relative to
``/sys/fs/cgroup``; on a hybrid host (cgroup v2 at /sys/fs/cgroup/unified) the text carries the
``unified/`` prefix while the level still counts from the v2 root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

NFT_CGROUP_BASE = "/sys/fs/cgroup"
SLURM_SCOPE = "/system.slice/slurmstepd.scope"
_JOB = re.compile(r"^job_\d+$")
# What may stand inside the rule's quoted path: a '"', '\\' or '#' would end or rewrite it.
_NFT_SAFE = re.compile(r"\A/[A-Za-z0-9._@+:=,/-]{0,4095}\Z")


@dataclass(frozen=True, slots=True)
class JobCgroup:
    """Attributes:
    path: in the cgroup v2 tree (``/system.slice/slurmstepd.scope``).
    level: its depth there (2 for that path).
    nft_path: the string nft resolves under /sys/fs/cgroup.
    """

    path: str
    level: int
    nft_path: str


def job_ancestor(cgroup: str) -> str | None:
    """The cgroup that holds every job of the scheduler that placed ``cgroup``, or None.

    ``/system.slice/slurmstepd.scope/job_42/step_0/user/task_0`` -> the slurmstepd scope;
    any other ``.../job_<id>/...`` layout -> the parent of ``job_<id>``.
    """
    parts = [part for part in cgroup.split("/") if part]
    for index, part in enumerate(parts):
        if part == "slurmstepd.scope":
            return "/" + "/".join(parts[: index + 1])
    for index, part in enumerate(parts):
        if _JOB.match(part) and index > 0:
            return "/" + "/".join(parts[:index])
    return None


def job_cgroup(path: str, mount: str) -> JobCgroup | str:
    """The rule's cgroup for ``path`` under the v2 mount ``mount``, or why there is none."""
    clean = "/" + "/".join(part for part in path.split("/") if part)
    if clean == "/" or ".." in clean.split("/"):
        return f"cgroup {path!r}: name a cgroup below the root, without '..'"
    if not _NFT_SAFE.match(clean):
        return f"cgroup {path!r}: not a cgroup path nft can be given (letters, digits, ._@+:=,- only)"
    absolute = os.path.normpath(mount + clean)
    if not _NFT_SAFE.match(absolute):
        return f"cgroup v2 mount {mount[:80]!r}: not a path nft can be given"
    if os.path.commonpath([absolute, NFT_CGROUP_BASE]) != NFT_CGROUP_BASE:
        return f"cgroup v2 is mounted at {mount}, outside {NFT_CGROUP_BASE} where nft looks"
    return JobCgroup(clean, clean.count("/"), os.path.relpath(absolute, NFT_CGROUP_BASE))


def infer(cgroups: Iterable[str | None]) -> tuple[str, ...]:
    """The job ancestors of the owning processes' cgroups, most common first."""
    counts: dict[str, int] = {}
    for cgroup in cgroups:
        ancestor = job_ancestor(cgroup) if cgroup else None
        if ancestor:
            counts[ancestor] = counts.get(ancestor, 0) + 1
    return tuple(sorted(counts, key=lambda path: (-counts[path], path)))
