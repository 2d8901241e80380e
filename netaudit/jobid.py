"""Who a process works for: Slurm job, torchrun run, rank, world size.

Slurm puts a job's processes in a cgroup whose path names the job: ``.../job_<id>/step_<n>``
(cgroup v1 and v2 up to 25.11), or since Slurm 26.05 the job's SLUID
(``system.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_0``) unless CgroupJobIdPaths=yes
(SchedMD/slurm doc/html/cgroup_v2.shtml). The environment names it too, but a process can
clear its environment; the cgroup it cannot leave.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from netaudit.models import JobIdentity

_JOB_DIR = re.compile(r"/job_(?P<id>\d+)(?:/|$)")
_SLUID_DIR = re.compile(r"/slurmstepd\.scope/(?P<id>[A-Za-z0-9]{8,32})/(?:step_|user/|slurm/|$)")


def slurm_job_from_cgroup(cgroup_text: str) -> str | None:
    """The job id or SLUID named by /proc/<pid>/cgroup, or None."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        match = _JOB_DIR.search(path)
        if match:
            return match["id"]
        match = _SLUID_DIR.search(path)
        if match and not match["id"].startswith("job_"):
            return match["id"]
    return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def identity(
    environment: Mapping[str, str],
    cgroup_job: str | None,
    torch_version: str | None,
    inherited_run_id: str | None = None,
) -> JobIdentity:
    """Job identity from allowlisted environment, cgroup and the mapped torch's version.

    ``inherited_run_id`` is a torchelastic run id read from the process's children: the
    elastic agent itself does not carry TORCHELASTIC_RUN_ID, its workers do.
    """
    slurm_job = environment.get("SLURM_JOB_ID") or environment.get("SLURM_JOBID") or cgroup_job
    run_id = environment.get("TORCHELASTIC_RUN_ID") or inherited_run_id
    return JobIdentity(
        slurm_job_id=slurm_job,
        slurm_job_user=environment.get("SLURM_JOB_USER"),
        rank=_int(environment.get("RANK")),
        local_rank=_int(environment.get("LOCAL_RANK")),
        world_size=_int(environment.get("WORLD_SIZE")),
        torchelastic_run_id=run_id,
        master_addr=environment.get("MASTER_ADDR"),
        master_port=_int(environment.get("MASTER_PORT")),
        torch_version=torch_version,
    )
