"""Self-tests for tests/lab/slurmlab.py: a real munged + slurmctld + slurmd on this host.

One module-scoped cluster serves most checks. Its Prolog is switchable: the script reads a mode
file, so the same cluster shows both the passing and the failing prolog.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import slurmlab
from tests.lab.slurmlab import SlurmCluster, slurm_cluster, wait_for

# Slurm runs prologs with no PATH: only absolute paths and shell builtins below.
PROLOG = """#!/bin/sh
# slurmlab self-test prolog: record the environment, then pass or fail as {dir}/mode says.
/usr/bin/env > "{dir}/prolog-env.$SLURM_JOB_ID"
mode=pass
[ -r "{dir}/mode" ] && read -r mode < "{dir}/mode"
[ "$mode" = fail ] && exit 1
exit 0
"""


class SwitchablePrologLab:
    def __init__(self, cluster: SlurmCluster, prolog_dir: Path) -> None:
        self.cluster = cluster
        self.prolog_dir = prolog_dir

    def set_prolog(self, mode: str) -> None:
        (self.prolog_dir / "mode").write_text(mode + "\n")

    def prolog_env(self, job_id: int) -> dict[str, str]:
        path = self.prolog_dir / f"prolog-env.{job_id}"
        env = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key] = value
        return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchablePrologLab]:
    prolog_dir = tmp_path_factory.mktemp("slurmlab-prolog")
    prolog_dir.chmod(0o755)
    script = prolog_dir / "prolog.sh"
    script.write_text(PROLOG.format(dir=prolog_dir))
    script.chmod(0o755)
    with slurm_cluster(prolog=script, prolog_flags="Alloc", prolog_timeout=15) as cluster:
        print(f"\nslurmlab: cluster up in {cluster.startup_s:.2f}s at {cluster.root}")
        lab = SwitchablePrologLab(cluster, prolog_dir)
        lab.set_prolog("pass")
        yield lab


def _srun_job_id(cluster: SlurmCluster) -> int:
    proc = cluster.run_srun(["/bin/sh", "-c", 'echo "JOB=$SLURM_JOB_ID"'], timeout=30)
    assert proc.returncode == 0, proc.stderr + cluster.logs()
    match = re.search(r"JOB=(\d+)", proc.stdout)
    assert match, proc.stdout
    return int(match.group(1))


def _drained_by_prolog(cluster: SlurmCluster) -> tuple[str, str] | None:
    state, reason = cluster.node_state()
    return (state, reason) if "Prolog error" in reason else None


def _held(cluster: SlurmCluster, job_id: int) -> dict[str, str] | None:
    info = cluster.job_info(job_id)
    return info if "held" in info.get("Reason", "") else None


# ------------------------------------------------------------------------------------------
# No Slurm needed: skip logic and slurm.conf rendering


def test_skip_reason_names_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reason = slurmlab.skip_reason()
    assert reason is not None
    assert "root" in reason
    with pytest.raises(pytest.skip.Exception, match="root"), slurm_cluster():
        pass


def test_skip_reason_names_missing_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(slurmlab, "which", lambda name: None if name == "slurmd" else "/bin/x")
    reason = slurmlab.skip_reason()
    assert reason is not None
    assert "slurmd" in reason
    assert "slurm-wlm" in reason


def test_etc_hosts_lookup(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.1.1 n1.example n1  # comment\n#10.0.0.1 n1\n")
    assert slurmlab.etc_hosts_addresses("n1", str(hosts)) == ["127.0.1.1"]
    assert slurmlab.etc_hosts_addresses("n2", str(hosts)) == []


def test_render_conf_extra_conf_replaces_keys(tmp_path: Path) -> None:
    conf = slurmlab.render_conf(
        root=tmp_path,
        nodename="n1",
        cpus=4,
        ctld_port=1,
        slurmd_port=2,
        munge_socket=tmp_path / "m.sock",
        prolog=Path("/p.sh"),
        prolog_flags="Alloc",
        prolog_timeout=15,
        extra_conf="PrologEpilogTimeout=5\nEpilog=/e.sh\n",
    )
    lines = conf.splitlines()
    assert "PrologEpilogTimeout=5" in lines
    assert "PrologEpilogTimeout=15" not in lines
    assert "Epilog=/e.sh" in lines
    assert "SlurmctldHost=n1(127.0.0.1)" in lines
    assert any(ln.startswith("NodeName=n1 NodeAddr=127.0.0.1 ") and "CPUs=4" in ln for ln in lines)
    assert f"AuthInfo=socket={tmp_path / 'm.sock'}" in lines
    assert "ProctrackType=proctrack/linuxproc" in lines


# ------------------------------------------------------------------------------------------
# The real cluster


@pytest.mark.requires_root
@pytest.mark.slow
def test_srun_hostname(lab: SwitchablePrologLab) -> None:
    cluster = lab.cluster
    assert cluster.startup_s < 30, f"start-up took {cluster.startup_s:.1f}s"
    proc = cluster.run_srun(["hostname"], timeout=30)
    assert proc.returncode == 0, proc.stderr + cluster.logs()
    assert proc.stdout.strip() == socket.gethostname()


@pytest.mark.requires_root
@pytest.mark.slow
def test_job_environment_has_job_id(lab: SwitchablePrologLab) -> None:
    cluster = lab.cluster
    proc = cluster.run_srun(["/usr/bin/env"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^SLURM_JOB_ID=\d+$", proc.stdout, re.MULTILINE), proc.stdout

    job_id = cluster.submit('echo "JOB=$SLURM_JOB_ID"\n')
    assert cluster.wait_job(job_id, timeout=30) == "COMPLETED", cluster.job_info(job_id)
    assert f"JOB={job_id}" in cluster.job_output(job_id)


@pytest.mark.requires_root
@pytest.mark.slow
def test_prolog_runs_with_job_env_and_no_path(lab: SwitchablePrologLab) -> None:
    lab.set_prolog("pass")
    cluster = lab.cluster
    job_id = _srun_job_id(cluster)
    env = lab.prolog_env(job_id)
    assert "PATH" not in env, env
    assert env["SLURM_JOB_ID"] == str(job_id)
    assert env["SLURM_SCRIPT_CONTEXT"] == "prolog_slurmd"
    assert env["SLURMD_NODENAME"] == cluster.nodename
    assert env["SLURM_JOB_UID"] == "0"
    assert env["SLURM_JOB_USER"] == "root"
    assert env["SLURM_JOB_PARTITION"] == "debug"
    assert env["SLURM_CLUSTER_NAME"] == "netauditlab"
    assert env["SLURM_CONF"] == str(cluster.conf_path)


@pytest.mark.requires_root
@pytest.mark.slow
def test_failing_prolog_drains_node_and_resume_recovers(lab: SwitchablePrologLab) -> None:
    cluster = lab.cluster
    try:
        # 1. A batch job meets a failing prolog: node drained, job requeued and held.
        lab.set_prolog("fail")
        t0 = time.monotonic()
        held = cluster.submit("/bin/true\n")
        state, reason = wait_for(
            lambda: _drained_by_prolog(cluster),
            timeout=30,
            what="'Prolog error' drain after sbatch",
        )
        print(f"\nslurmlab: sbatch -> drain visible after {time.monotonic() - t0:.2f}s")
        assert "DRAIN" in state.split("+"), state
        info = wait_for(lambda: _held(cluster, held), timeout=15, what="job held after prolog failure")
        assert info["JobState"] == "PENDING", info
        assert info["Reason"] == "launch_failed_requeued_held", info

        # 2. Resume while the prolog still fails: an srun fails at once and drains again.
        cluster.resume_node()
        t0 = time.monotonic()
        proc = cluster.run_srun(["/bin/true"], timeout=30)
        assert proc.returncode != 0
        assert "Prolog failure" in proc.stderr, proc.stderr
        state, reason = wait_for(
            lambda: _drained_by_prolog(cluster), timeout=30, what="'Prolog error' drain after srun"
        )
        print(f"slurmlab: srun -> drain visible after {time.monotonic() - t0:.2f}s")
        assert "DRAIN" in state.split("+"), state
        assert reason.startswith("Prolog error"), reason

        # 3. Fix the prolog, resume: jobs run again.
        lab.set_prolog("pass")
        cluster.resume_node()
        assert cluster.node_state()[1] == ""
        proc = cluster.run_srun(["/bin/true"], timeout=30)
        assert proc.returncode == 0, proc.stderr + cluster.logs()
        job_id = cluster.submit("/bin/true\n")
        assert cluster.wait_job(job_id, timeout=30) == "COMPLETED", cluster.job_info(job_id)
    finally:
        lab.set_prolog("pass")
        cluster.cancel_all()
        if not cluster.node_usable():
            cluster.resume_node()


@pytest.mark.requires_root
@pytest.mark.slow
def test_slurm_traffic_stays_on_loopback(lab: SwitchablePrologLab) -> None:
    if shutil.which("ss") is None:
        pytest.skip("needs iproute2's ss")
    cluster = lab.cluster
    step = cluster.popen_srun(["/bin/sleep", "2"])
    seen = set()
    try:
        deadline = time.monotonic() + 4
        while step.poll() is None and time.monotonic() < deadline:
            seen.update(cluster.cluster_sockets())
            time.sleep(0.05)
    finally:
        _, err = step.communicate(timeout=30)
    assert step.returncode == 0, err
    assert any("srun" in s.processes or "slurmstepd" in s.processes for s in seen), seen
    off_loopback = [s for s in seen if not s.is_loopback]
    assert not off_loopback, off_loopback


@pytest.mark.requires_root
@pytest.mark.slow
def test_teardown_kills_escaped_job_processes(lab: SwitchablePrologLab, tmp_path: Path) -> None:
    """A second cluster, side by side with the module one: on exit it kills a process that
    escaped proctrack/linuxproc, stops its daemons, removes its directory, and leaves the other
    cluster running."""
    pid_file = tmp_path / "escaped.pid"
    with slurm_cluster(prolog=None) as other:
        assert other.ports != lab.cluster.ports
        job_id = other.submit(f"/usr/bin/setsid /bin/sleep 300 &\necho $! > {pid_file}\n")
        assert other.wait_job(job_id, timeout=30) == "COMPLETED", other.job_info(job_id)
        pid = int(pid_file.read_text())
        daemons = other.daemon_pids()
        root = other.root
        escaped = pid in other.leftover_processes()
    print(f"\nslurmlab: orphaned job process survived the job: {escaped}")
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    for name, daemon_pid in daemons.items():
        assert not Path(f"/proc/{daemon_pid}").exists() or _is_zombie(daemon_pid), name
    assert not root.exists()
    proc = lab.cluster.run_srun(["/bin/true"], timeout=30)
    assert proc.returncode == 0, proc.stderr


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


@pytest.mark.requires_root
@pytest.mark.slow
def test_env_helper_scrubs_outer_slurm(lab: SwitchablePrologLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "999999")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/other.conf")
    env = lab.cluster.env()
    assert env["SLURM_CONF"] == str(lab.cluster.conf_path)
    assert "SLURM_JOB_ID" not in env
