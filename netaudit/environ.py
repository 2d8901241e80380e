"""The environment variables a probe may keep, and nothing else.

/proc/<pid>/environ holds whatever a user exported, tokens included. We keep an allowlist of
the variables that identify a distributed job or decide which interface a backend binds;
every other variable is dropped unread, and kept values are still passed through redaction.
"""

from __future__ import annotations

from netaudit.redact import redact_value

ALLOWED = frozenset(
    {
        # torch.distributed and torchrun (elastic/agent/server/local_elastic_agent.py)
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
        "ROLE_RANK", "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        # torchrun reads PET_<OPTION> for an option it is not given: Kubernetes launchers
        # (training operator's PyTorchJob, Kubeflow Trainer) pass the store's port this way
        "PET_MASTER_PORT", "PET_RDZV_ENDPOINT", "PET_NNODES", "PET_NPROC_PER_NODE",
        "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT",
        "TORCHELASTIC_MAX_RESTARTS", "USE_LIBUV", "TORCH_DISTRIBUTED_DEBUG",
        # interface pinning of the backends
        "GLOO_SOCKET_IFNAME", "GLOO_DEVICE_TRANSPORT", "TP_SOCKET_IFNAME",
        "NCCL_SOCKET_IFNAME", "NCCL_SOCKET_FAMILY", "NCCL_COMM_ID", "NCCL_RAS_ADDR",
        "NCCL_RAS_ENABLE", "NCCL_SET_THREAD_NAME", "NCCL_IB_DISABLE",
        # Slurm job identity
        "SLURM_JOB_ID", "SLURM_JOBID", "SLURM_JOB_USER", "SLURM_JOB_NAME", "SLURM_STEP_ID",
        "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_JOB_NODELIST",
        "SLURM_CLUSTER_NAME",
    }
)  # fmt: skip


def parse(raw: bytes) -> dict[str, str]:
    """Allowlisted variables of a NUL-separated environ block, values redacted and capped."""
    kept: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if not sep:
            continue
        key = name.decode("ascii", "replace")
        if key in ALLOWED:
            kept[key] = redact_value(key, value.decode("utf-8", "replace"))
    return kept
