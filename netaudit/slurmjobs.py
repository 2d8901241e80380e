"""Which Slurm jobs are active on this node, and which job a process belongs to, read from
/proc alone: a prolog must not call Slurm commands (Slurm's prolog guide), and must not depend
on the cgroup plugin (proctrack/linuxproc nodes have no job cgroups).

Every running job step on a node has a slurmstepd process whose command line names it,
`slurmstepd: [4242.0]`, `[4242.batch]`, `[4242.extern]` (src/slurmd/slurmstepd/slurmstepd.c
sets the process title). A process belongs to a job when its environment or cgroup says so,
or when a slurmstepd of that job is among its ancestors.
"""

from __future__ import annotations

import os
import re

from netaudit import safeio

_STEP_TITLE = re.compile(rb"^slurmstepd: \[(?P<job>[0-9A-Za-z_]+)(?:\.[0-9A-Za-z_]+)?\]")
_MAX_DEPTH = 64


def _read(path: str, limit: int = 4096) -> bytes | None:
    try:
        return safeio.read_proc(path, limit)
    except OSError:
        return None


def _stepd_job(pid: int, proc: str) -> str | None:
    comm = _read(f"{proc}/{pid}/comm", 64)
    if comm is None or not comm.startswith(b"slurmstepd"):
        return None
    cmdline = _read(f"{proc}/{pid}/cmdline") or b""
    match = _STEP_TITLE.match(cmdline.replace(b"\0", b" ").strip())
    return match["job"].decode() if match else None


def active_jobs(proc: str = "/proc") -> set[str]:
    jobs: set[str] = set()
    for name in os.listdir(proc):
        if name.isdigit():
            job = _stepd_job(int(name), proc)
            if job is not None:
                jobs.add(job)
    return jobs


def _parent(pid: int, proc: str) -> int | None:
    stat = _read(f"{proc}/{pid}/stat")
    if stat is None:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses; split after the last ')'
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def job_of_ancestors(pid: int, proc: str = "/proc") -> str | None:
    """The job of the nearest slurmstepd ancestor of ``pid``, or None."""
    current: int | None = pid
    for _ in range(_MAX_DEPTH):
        if current is None or current <= 1:
            return None
        job = _stepd_job(current, proc)
        if job is not None:
            return job
        current = _parent(current, proc)
    return None
