"""Small parsers on recorded text: /proc/net/tcp, cgroup paths, environ, argv redaction."""

from __future__ import annotations

import pytest

from netaudit import environ, jobid, procnet
from netaudit.models import Family
from netaudit.redact import REDACTED, redact_argv

# Recorded from a node running a torchrun job (ground truth §4) plus an established socket.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 562 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9D9F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 91234 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9D9F 0100007F:C3A2 01 00000000:00000000 00:00000000 00000000  1000        0 91240 1 0000000000000000 20 4 30 10 -1
   3: 010012C6:B50D 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 91300 1 0000000000000000 100 0 0 10 0
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:7334 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 88001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:A8B9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 88002 1 0000000000000000 100 0 0 10 0
   2: B80D0120000000000000000011000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 88003 1 0000000000000000 100 0 0 10 0
   3: garbage line that must be skipped
"""


def test_proc_net_tcp_listeners_only() -> None:
    assert procnet.parse(PROC_NET_TCP) == [
        (Family.IPV4, "0.0.0.0", 2024, 0, 562),
        (Family.IPV4, "127.0.0.1", 40351, 1000, 91234),
        (Family.IPV4, "198.18.0.1", 46349, 1000, 91300),
    ]


def test_proc_net_tcp6_words_are_host_order() -> None:
    assert procnet.parse(PROC_NET_TCP6) == [
        (Family.IPV6, "::", 29492, 1000, 88001),
        (Family.IPV6, "::1", 43193, 1000, 88002),
        (Family.IPV6, "2001:db8::11", 8080, 0, 88003),
    ]


@pytest.mark.parametrize(
    ("cgroup", "job"),
    [
        ("0::/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0\n", "4242"),
        ("12:pids:/slurm/uid_1000/job_77/step_batch\n0::/\n", "77"),
        ("0::/system.slice/slurmstepd.scope/s5K1KKYAYG5D00/step_0/user/task_1\n", "s5K1KKYAYG5D00"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
        ("0::/system.slice/slurmstepd.scope/system\n", None),
    ],
)
def test_slurm_job_from_cgroup(cgroup: str, job: str | None) -> None:
    assert jobid.slurm_job_from_cgroup(cgroup) == job


def test_environ_keeps_only_the_allowlist() -> None:
    raw = (
        b"RANK=1\0MASTER_PORT=29500\0HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz\0"
        b"AWS_SECRET_ACCESS_KEY=abc\0SLURM_JOB_ID=4242\0NCCL_COMM_ID=https://u:pw@h:29600\0junk\0"
    )
    assert environ.parse(raw) == {
        "RANK": "1",
        "MASTER_PORT": "29500",
        "SLURM_JOB_ID": "4242",
        "NCCL_COMM_ID": f"https://u:{REDACTED}@h:29600",
    }


def test_identity_prefers_environment_and_inherits_run_id() -> None:
    job = jobid.identity({"RANK": "3", "WORLD_SIZE": "8", "MASTER_PORT": "x"}, "55", "2.13.0", "run-1")
    assert (job.slurm_job_id, job.rank, job.world_size, job.master_port) == ("55", 3, 8, None)
    assert job.torchelastic_run_id == "run-1" and job.torch_version == "2.13.0"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train.py", "--hf-token=hf_x"], ["train.py", f"--hf-token={REDACTED}"]),
        (
            ["train.py", "--api-key", "k", "--lr", "3"],
            ["train.py", "--api-key", REDACTED, "--lr", "3"],
        ),
        (["WANDB_API_KEY=abc", "python"], [f"WANDB_API_KEY={REDACTED}", "python"]),
        (
            ["--tokenizer", "gpt2", "--max-tokens", "5"],
            ["--tokenizer", "gpt2", "--max-tokens", "5"],
        ),
        (["--db", "postgres://me:pw@db/x"], ["--db", f"postgres://me:{REDACTED}@db/x"]),
        (["ghp_0123456789abcdefghijABCDEFGHIJ"], [REDACTED]),
        (["--password", "--verbose"], ["--password", "--verbose"]),
        (["--rdzv-endpoint=198.18.0.1:29400"], ["--rdzv-endpoint=198.18.0.1:29400"]),
        # inside longer arguments: a header, -c code, a JSON blob
        (
            ["curl", "-H", "Authorization: Bearer abcdefghijkl0123"],
            ["curl", "-H", f"Authorization: Bearer {REDACTED}"],
        ),
        (
            ["-c", "import os; os.environ['HF_TOKEN']='hf_abcdefghijklmnopqrstuvwxyz'; main(lr=3)"],
            ["-c", f"import os; os.environ['HF_TOKEN']='{REDACTED}'; main(lr=3)"],
        ),
        (["-c", "login('hf_abcdefghijklmnopqrstuvwxyz')"], ["-c", f"login('{REDACTED}')"]),
        (['{"api_key": "s3cr3t", "lr": 3}'], [f'{{"api_key": "{REDACTED}", "lr": 3}}']),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert list(redact_argv(argv)) == expected


def test_a_secret_straddling_the_cut_leaves_nothing_of_itself() -> None:
    code = "x = 1; " * 71 + "login(token='hf_abcdefghijklmnopqrstuvwxyz')"
    assert 490 < code.index("hf_") < 512 < len(code)
    (out,) = redact_argv([code])
    assert "hf_" not in out and "abcdef" not in out and out.endswith("...")


def test_redact_caps_length_and_count() -> None:
    out = redact_argv(["x" * 5000] + ["a"] * 400)
    assert len(out[0]) < 600
    assert out[-1].startswith("... (")


# sock_diag LISTEN dumps, recorded on Linux 6.18 as root: 127.0.0.1:51751 (backlog 7) and
# [::1]:42393 with IPV6_V6ONLY (backlog 9). Each record: nlmsghdr, inet_diag_msg, then
# INET_DIAG_SHUTDOWN, (SKV6ONLY), MARK, CGROUP_ID (the root cgroup, 1) and SOCKOPT.
DIAG_V4 = bytes.fromhex(
    "7c000000140002000100000046590000020a0000ca2700007f00000100000000000000000000000000000000"
    "0000000000000000000000000000000091f708000000000000000000000000000700000000000000d8e65b00"
    "050008000000000008000f00000000000c00150001000000000000000600160052000000"
)
DIAG_V6 = bytes.fromhex(
    "840000001400020001000000465900000a0a0000a59900000000000000000000000000000000000100000000"
    "0000000000000000000000000000000092f708000000000000000000000000000900000000000000d9e65b00"
    "050008000000000005000b000100000008000f00000000000c00150001000000000000000600160012000000"
)
DIAG_DONE = bytes.fromhex("1400000003000200010000004659000000000000")


def _with_cgroup(record: bytes, cgroup_id: int | None) -> bytes:
    """The record with another cgroup id, or without the attribute (a kernel before 5.7)."""
    import struct

    at = record.index(bytes.fromhex("0c001500"))
    if cgroup_id is not None:
        return record[: at + 4] + struct.pack("=Q", cgroup_id) + record[at + 12 :]
    shorter = record[:at] + record[at + 12 :]
    return struct.pack("=I", len(shorter)) + shorter[4:]


def test_sock_diag_listen_records_decode() -> None:
    import socket

    from netaudit import netlink

    v4, is_done = netlink.listen_records(DIAG_V4 + DIAG_DONE, socket.AF_INET)
    v6, _ = netlink.listen_records(_with_cgroup(DIAG_V6, 0x1_0000_2A51), socket.AF_INET6)

    assert is_done
    assert v4 == [(Family.IPV4, "127.0.0.1", 51751, 6022872, None, 7, 0, 1)]
    assert v6 == [(Family.IPV6, "::1", 42393, 6022873, True, 9, 0, 0x1_0000_2A51)]


def test_sock_diag_without_cgroup_ids_and_with_foreign_records() -> None:
    import socket

    from netaudit import netlink

    older = _with_cgroup(DIAG_V6, None)
    other_sequence = DIAG_V4[:8] + (7).to_bytes(4, "little") + DIAG_V4[12:]

    rows, is_done = netlink.listen_records(other_sequence + older, socket.AF_INET6)

    assert rows == [(Family.IPV6, "::1", 42393, 6022873, True, 9, 0, None)]
    assert not is_done


def test_sock_diag_error_record_raises() -> None:
    import errno
    import socket

    from netaudit import netlink

    # NLMSG_ERROR carrying -EPERM, then the request's header
    error = bytes.fromhex("24000000020000000100000046590000ffffffff") + DIAG_DONE[:16]
    with pytest.raises(netlink.NetlinkError) as raised:
        netlink.listen_records(error, socket.AF_INET)
    assert raised.value.errno == errno.EPERM
