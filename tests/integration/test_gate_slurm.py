"""The prolog gate and srun fan-out against a real single-node Slurm (munged, slurmctld,
slurmd on this host; tests/lab/slurmlab.py): the sample prolog runs `netaudit gate`, the node
drains while a stale exposed TCPStore listens, jobs run when it is clean, and a live job's own
store never fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netaudit.config import FanoutSettings
from netaudit.fanout import gather
from netaudit.fanout.results import to_inventory
from tests.lab.slurmlab import SlurmCluster, slurm_cluster, wait_for
from tests.lab.torchjobs import JOBS, TorchJob

pytestmark = [pytest.mark.requires_root, pytest.mark.requires_torch, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_configs"
NETAUDIT = f"/usr/bin/env PYTHONPATH={REPO} {sys.executable} -m netaudit"


def _install(sample: str, target: Path, config: Path) -> Path:
    """The sample script with this checkout's netaudit and config in place of the installed
    ones; everything else exactly as shipped."""
    text = (SAMPLES / sample).read_text()
    text = text.replace("/usr/local/bin/netaudit", NETAUDIT)
    text = text.replace("/etc/netaudit/prolog-gate.toml", str(config))
    target.write_text(text)
    target.chmod(0o755)
    return target


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SlurmCluster, Path]]:
    directory = tmp_path_factory.mktemp("gate")
    directory.chmod(0o755)
    config = directory / "gate.toml"
    config.write_text('[gate]\ndeadline_s = 8\non_error = "open"\n')
    prolog = _install("prolog.sh", directory / "prolog.sh", config)
    with slurm_cluster(prolog=str(prolog), prolog_flags="Alloc", prolog_timeout=20) as cluster:
        yield cluster, config


def _stale_store(tmp_path: Path) -> TorchJob:
    job = TorchJob(tmp_path / "stale", [str(JOBS / "tcpstore_server.py")])
    job.wait_ready()
    return job


def test_clean_node_runs_jobs(slurm: tuple[SlurmCluster, Path]) -> None:
    cluster, _config = slurm
    result = cluster.run_srun(["hostname"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert cluster.node_usable()


def test_stale_exposed_store_drains_the_node(slurm: tuple[SlurmCluster, Path], tmp_path: Path) -> None:
    cluster, _config = slurm
    # Given a TCPStore left listening on [::] by no Slurm job (a finished job's leftover)
    with _stale_store(tmp_path):
        # When a job starts, the prolog's gate fails the node
        result = cluster.run_srun(["hostname"], timeout=60)
        assert result.returncode != 0
        state, reason = wait_for(lambda: cluster.node_state() if "DRAIN" in cluster.node_state()[0] else None,
                                 timeout=20)  # fmt: skip
        assert "DRAIN" in state and "Prolog error" in reason
        # slurmd logs the prolog's one line: it names the process and the port
        log = (cluster.log_dir / "slurmd.log").read_text(errors="replace")
        assert "prolog failed: rc:1 output:netaudit: stale exposed tcpstore [::]:" in log
        assert "not part of any Slurm job" in log
    # Then, once the leftover is gone and the node resumed, jobs run again
    cluster.resume_node()
    assert cluster.run_srun(["hostname"], timeout=60).returncode == 0


def test_a_live_jobs_store_never_fails_the_gate(slurm: tuple[SlurmCluster, Path], tmp_path: Path) -> None:
    cluster, _config = slurm
    work = tmp_path / "live"
    work.mkdir()
    work.chmod(0o777)
    script = (
        "#!/bin/sh\n"
        f"exec /usr/bin/env NETAUDIT_TEST_DIR={work} PYTHONPATH={JOBS} NETAUDIT_TEST_HOLD_S=60 "
        f"{sys.executable} {JOBS / 'tcpstore_server.py'}\n"
    )
    job_id = cluster.submit(script, "--ntasks=1", f"--output={work}/out.txt")
    try:
        wait_for(lambda: (work / "ready-0.json").exists() or None, timeout=60)
        # Given another user's job with an exposed store running on this (shared) node,
        # when the next job starts, the gate passes
        second = cluster.run_srun(["hostname"], timeout=60)
        assert second.returncode == 0, second.stderr + cluster.logs()
        assert cluster.node_usable()
    finally:
        (work / "release").touch()
        cluster.wait_job(job_id, timeout=60)


def test_healthcheck_drains_with_its_own_reason(slurm: tuple[SlurmCluster, Path], tmp_path: Path) -> None:
    cluster, config = slurm
    script = _install("healthcheck.sh", tmp_path / "healthcheck.sh", config)
    env = cluster.env({"NETAUDIT_SCONTROL": "/usr/bin/scontrol", "SLURMD_NODENAME": cluster.nodename})
    clean = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    with _stale_store(tmp_path):
        failed = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    state, reason = cluster.node_state()
    assert "DRAIN" in state and reason.startswith("netaudit: stale exposed tcpstore")
    cluster.resume_node()


def test_srun_fanout_on_the_real_node(
    slurm: tuple[SlurmCluster, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, _config = slurm
    for key, value in cluster.env().items():
        if key.startswith("SLURM") or key == "PATH":
            monkeypatch.setenv(key, value)
    settings = FanoutSettings(method="srun", nodes=cluster.nodename, timeout_s=90,
                              remote_command=f"{NETAUDIT} probe --format json")  # fmt: skip
    inventories, failures = gather.inventories(settings, dict(os.environ))
    assert failures == []
    assert [inventory.host for inventory in inventories] == [cluster.nodename]
    assert inventories[0].listeners, "the node's own listeners (slurmd at least)"


def test_srun_fanout_over_an_allocation_with_a_standin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-node srun cannot exist here: a stand-in checks the exact command line netaudit
    builds and answers the way srun does (--label, 1024-byte chunks, one node silent)."""
    from netaudit import inventory_json
    from tests.unit.test_inventory_json import sample

    document = json.dumps(inventory_json.to_json(sample()), indent=2).encode()
    expected = ["--label", "--nodes", "3", "--ntasks", "3", "--ntasks-per-node=1", "--nodelist", "gpu[01-03]",
                "--partition=audit", "/bin/sh", "-c", 'echo "@node=$SLURMD_NODENAME"; exec "$@"',
                "netaudit-fanout", "/usr/local/bin/netaudit", "probe", "--format", "json"]  # fmt: skip
    chunks = []
    for task, node in ((0, "gpu01"), (2, "gpu03")):
        payload = f"@node={node}\n".encode() + document
        for line in payload.split(b"\n"):
            for start in range(0, max(len(line), 1), 1024):
                chunks.append(f"{task}: ".encode() + line[start : start + 1024])
    (tmp_path / "out.bin").write_bytes(b"\n".join(chunks) + b"\n")
    standin = tmp_path / "srun"
    standin.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"expected = {expected!r}\n"
        "if sys.argv[1:] != expected:\n"
        "    sys.stderr.write('unexpected argv: %r\\n' % (sys.argv[1:],)); sys.exit(99)\n"
        f"sys.stdout.buffer.write(open({str(tmp_path / 'out.bin')!r}, 'rb').read())\n"
        "sys.stderr.write('srun: error: gpu02: task 1: Exited with exit code 1\\n'); sys.exit(1)\n"
    )
    standin.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    settings = FanoutSettings(method="srun", srun_options=("--partition=audit",), timeout_s=30,
                              remote_command="/usr/local/bin/netaudit probe --format json")  # fmt: skip
    outputs = gather.run(settings, gather.nodes_of(settings, {"SLURM_JOB_NODELIST": "gpu[01-03]"}),
                         settings.remote_command)  # fmt: skip
    results = {output.node: to_inventory(output) for output in outputs}
    assert results["gpu01"].host == "gpu01" and results["gpu03"].host == "gpu03"
    assert results["gpu01"].listeners == sample().listeners
    assert results["gpu02"].node == "gpu02"
    assert (
        "no output from srun (exit 1: srun: error: gpu02: task 1: Exited with exit code 1)"
        in results["gpu02"].reason
    )
