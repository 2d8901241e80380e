"""A real single-node Slurm (munged + slurmctld + slurmd) in a throw-away directory, for tests.

Usage::

    from tests.lab.slurmlab import slurm_cluster

    with slurm_cluster(prolog="/abs/path/prolog.sh", prolog_flags="Alloc") as cluster:
        proc = cluster.run_srun(["hostname"], timeout=30)
        job_id = cluster.submit("#!/bin/sh\\necho $SLURM_JOB_ID\\n")
        cluster.wait_job(job_id)
        state, reason = cluster.node_state()  # ("IDLE+DRAIN", "Prolog error [root@...]")
        cluster.resume_node()

Everything lives in one ``tempfile.mkdtemp`` directory: slurm.conf, munge key, munge socket, pid
files, logs, StateSaveLocation and SlurmdSpoolDir. Nothing under /etc, /run or /var is written
(only the usual /etc/hosts, /etc/passwd, ... lookups are read): munged gets ``--socket``,
``--key-file``, ``--pid-file``, ``--seed-file``, ``--log-file``; slurm.conf names the socket with
``AuthInfo=socket=...``; every Slurm command gets ``SLURM_CONF`` from :meth:`SlurmCluster.env`.

Network: Slurm is told to reach the node and the controller at 127.0.0.1 (``NodeAddr`` and
``SlurmctldHost=<name>(127.0.0.1)``) whatever the hostname resolves to, so its traffic stays on
loopback. Slurm 22.05 has no bind-address option that is safe here, so slurmctld, slurmd and srun
*listen* on the wildcard address (0.0.0.0) on the ports this module picks; nothing is sent to a
non-loopback address. (``CommunicationParameters=NoInAddrAny`` would bind to whatever the hostname
resolves to, which on a CI box may be the container's eth0 address, so it is not used.)

Requirements: root (SlurmUser=root, root-owned munge key, the prolog runs as root) and the
``slurmctld``, ``slurmd``, ``munged`` binaries (Debian: ``apt-get install slurm-wlm munge``).
Without them :func:`slurm_cluster` calls ``pytest.skip`` with the reason. Set
``SLURMLAB_KEEP=1`` to keep the directory after the run for post-mortems.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "sbatch", "scontrol", "sinfo", "squeue", "scancel")
# Variables that would steer the Slurm clients to another cluster or change their defaults
# (e.g. when the test suite itself runs inside a Slurm job on a CI cluster).
_SCRUB_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_")
TERMINAL_JOB_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)
LOOPBACK_RE = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$")


class SlurmLabError(RuntimeError):
    """The lab cluster failed to start or to answer; the message carries the daemon logs."""


def _search_path() -> str:
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    parts += [d for d in _SBIN_DIRS if d not in parts]
    return os.pathsep.join(parts)


def which(name: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories (daemons live there)."""
    return shutil.which(name, path=_search_path())


def skip_reason() -> str | None:
    """Why a lab cluster cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "slurmlab needs Linux"
    if os.geteuid() != 0:
        return "slurmlab needs root (SlurmUser=root, root-owned munge key, prolog runs as root)"
    missing = [name for name in (*DAEMONS, *CLIENTS) if which(name) is None]
    if missing:
        return (
            f"slurmlab needs {', '.join(missing)} on PATH or in /usr/sbin "
            "(Debian: apt-get install -y slurm-wlm munge)"
        )
    return _hostname_skip_reason()


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises TimeoutError naming ``what`` (and the last value seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = predicate()
    while last is None or not last:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = predicate()
    return last


def free_port() -> int:
    """A TCP port nothing listens on right now (wildcard and loopback), from the ephemeral range."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def etc_hosts_addresses(name: str, hosts_file: str = "/etc/hosts") -> list[str]:
    """Addresses ``name`` has in /etc/hosts (read directly, so no DNS query leaves the host)."""
    try:
        text = Path(hosts_file).read_text()
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name in fields[1:] and fields[0] not in found:
            found.append(fields[0])
    return found


def _hostname_skip_reason() -> str | None:
    # Slurm and munge look up the node's own name. If /etc/hosts does not have it, glibc asks the
    # DNS resolver, i.e. traffic leaves the host; refuse unless the caller allows that.
    if os.environ.get("SLURMLAB_ALLOW_DNS") == "1":
        return None
    full = socket.gethostname()
    missing = [n for n in dict.fromkeys((full, full.split(".", 1)[0])) if not etc_hosts_addresses(n)]
    if missing:
        return (
            f"slurmlab: {', '.join(missing)} not in /etc/hosts, so Slurm would resolve it over DNS "
            "(add it, e.g. '127.0.1.1 <name>', or set SLURMLAB_ALLOW_DNS=1)"
        )
    return None


# ---------------------------------------------------------------------------------------------
# /proc helpers, for finding what this cluster left behind


def _proc_starttime(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])  # field 22 (starttime); fields[0] is field 3 (state)


def _proc_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _proc_environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


@dataclass(frozen=True)
class TcpSocket:
    """One line of ``ss -tanp``."""

    state: str
    local: str
    peer: str
    processes: tuple[str, ...]

    @staticmethod
    def _host(endpoint: str) -> str:
        host = endpoint.rsplit(":", 1)[0]
        host = host.strip("[]")
        return host.split("%", 1)[0]

    @property
    def local_host(self) -> str:
        return self._host(self.local)

    @property
    def peer_host(self) -> str:
        return self._host(self.peer)

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])

    @property
    def peer_port(self) -> int:
        port = self.peer.rsplit(":", 1)[1]
        return int(port) if port.isdigit() else 0

    @property
    def is_loopback(self) -> bool:
        return bool(LOOPBACK_RE.match(self.local_host) and LOOPBACK_RE.match(self.peer_host))


def tcp_sockets() -> list[TcpSocket]:
    """All TCP sockets of this network namespace with their owning process names (``ss -tanp``)."""
    out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, timeout=10, check=True).stdout
    result = []
    for line in out.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        procs = tuple(re.findall(r'\("([^"]+)"', parts[5])) if len(parts) > 5 else ()
        result.append(TcpSocket(parts[0], parts[3], parts[4], procs))
    return result


# ---------------------------------------------------------------------------------------------


@dataclass
class SlurmCluster:
    """A running lab cluster. Build it with :func:`slurm_cluster`, not directly."""

    root: Path
    nodename: str
    hostname: str
    hostname_addrs: list[str]
    ctld_port: int
    slurmd_port: int
    prolog: Path | None
    startup_s: float = 0.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _job_seq: int = 0

    # -- paths -----------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def job_dir(self) -> Path:
        """Working directory for jobs started through this object; batch output lands here."""
        return self.root / "jobs"

    @property
    def ports(self) -> tuple[int, int]:
        return (self.ctld_port, self.slurmd_port)

    # -- running commands ------------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for Slurm commands against this cluster: SLURM_CONF set, SLURM_* scrubbed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
        env["SLURM_CONF"] = str(self.conf_path)
        env["PATH"] = _search_path()
        if extra:
            env.update(extra)
        return env

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 30,
        check: bool = False,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (``argv[0]`` is looked up in PATH + sbin) against this cluster."""
        exe = which(argv[0]) or argv[0]
        return subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=str(cwd or self.job_dir),
            env=self.env(env),
        )

    def run_srun(
        self,
        args: Sequence[str],
        timeout: float = 30,
        check: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``srun <args>``; returns the CompletedProcess (check=False: look at returncode)."""
        return self.run(["srun", *args], timeout=timeout, check=check, env=env)

    def popen_srun(self, args: Sequence[str]) -> subprocess.Popen[str]:
        """``srun <args>`` in the background (caller waits or kills it)."""
        return subprocess.Popen(
            [which("srun") or "srun", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(self.job_dir),
            env=self.env(),
        )

    def submit(self, script: str, *sbatch_args: str) -> int:
        """``sbatch`` a script given as text; returns the job id. Output: :meth:`job_output`."""
        self._job_seq += 1
        path = self.job_dir / f"script-{self._job_seq}.sh"
        if not script.startswith("#!"):
            script = "#!/bin/sh\n" + script
        path.write_text(script)
        path.chmod(0o755)
        proc = self.run(
            [
                "sbatch",
                "--parsable",
                f"--output={self.job_dir}/slurm-%j.out",
                *sbatch_args,
                str(path),
            ],
            timeout=30,
        )
        if proc.returncode != 0:
            raise SlurmLabError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";", 1)[0])

    def job_output(self, job_id: int) -> str:
        path = self.job_dir / f"slurm-{job_id}.out"
        return path.read_text() if path.exists() else ""

    # -- state -----------------------------------------------------------------------------

    def node_state(self) -> tuple[str, str]:
        """``(State, Reason)`` from ``scontrol show node``, e.g. ``("IDLE+DRAIN", "Prolog error
        [root@2026-...]")``; reason is "" when there is none."""
        proc = self.run(["scontrol", "show", "node", self.nodename], timeout=15, check=True)
        state, reason = "", ""
        for line in proc.stdout.splitlines():
            stripped = line.strip()
            if stripped.startswith("State="):
                state = stripped.split()[0].removeprefix("State=")
            elif stripped.startswith("Reason="):
                reason = stripped.removeprefix("Reason=")
        if reason == "(null)":
            reason = ""
        return state, reason

    def node_flags(self) -> set[str]:
        """The node state as a set: ``IDLE+DRAIN`` -> {"IDLE", "DRAIN"}."""
        state = self.node_state()[0]
        return set(state.split("+")) if state else set()

    def node_usable(self) -> bool:
        """Up, responding, not drained: a new job would start now."""
        flags = self.node_flags()
        bad = {"DRAIN", "DOWN", "NOT_RESPONDING", "FAIL", "UNKNOWN", "INVAL", "FUTURE"}
        return bool(flags) and not (flags & bad)

    def resume_node(self, wait: bool = True, timeout: float = 20) -> None:
        """``scontrol update nodename=<node> state=resume``; waits until the node is usable."""
        self.run(
            ["scontrol", "update", f"nodename={self.nodename}", "state=resume"],
            timeout=15,
            check=True,
        )
        if wait:
            wait_for(self.node_usable, timeout, what="node usable after resume")

    def job_info(self, job_id: int) -> dict[str, str]:
        """``scontrol -o show job <id>`` as a dict (JobState, Reason, ...); {} when unknown."""
        proc = self.run(["scontrol", "-o", "show", "job", str(job_id)], timeout=15)
        if proc.returncode != 0:
            return {}
        info: dict[str, str] = {}
        for token in proc.stdout.split():
            key, sep, value = token.partition("=")
            if sep and key not in info:
                info[key] = value
        return info

    def job_state(self, job_id: int) -> str:
        return self.job_info(job_id).get("JobState", "")

    def wait_job(self, job_id: int, timeout: float = 30, states: frozenset[str] = TERMINAL_JOB_STATES) -> str:
        """Wait until the job reaches one of ``states`` (default: any terminal one); return it."""

        def reached() -> str | None:
            state = self.job_state(job_id)
            return state if state in states else None

        return wait_for(reached, timeout, what=f"job {job_id} in {sorted(states)}")

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float,
        interval: float = 0.1,
        what: str = "condition",
    ) -> T:
        """Same as the module-level :func:`wait_for`."""
        return wait_for(predicate, timeout, interval, what)

    def job_ids(self) -> list[int]:
        proc = self.run(["squeue", "-h", "-o", "%i"], timeout=15)
        return [int(x) for x in proc.stdout.split() if x.isdigit()]

    def cancel_all(self, timeout: float = 10) -> None:
        ids = self.job_ids()
        if not ids:
            return
        self.run(["scancel", *map(str, ids)], timeout=15)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not self.job_ids(), timeout, interval=0.2, what="queue empty")

    def daemon_pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def cluster_sockets(self) -> list[TcpSocket]:
        """TCP sockets (not LISTEN) of this cluster: owned by a Slurm process or on our ports."""
        names = {"slurmctld", "slurmd", "slurmstepd", "srun", "sbatch", "scontrol", "squeue"}
        out = []
        for sock in tcp_sockets():
            if sock.state == "LISTEN":
                continue
            if set(sock.processes) & names or {sock.local_port, sock.peer_port} & set(self.ports):
                out.append(sock)
        return out

    def logs(self, tail: int = 40) -> str:
        """The last ``tail`` lines of every daemon log, for assertion messages."""
        chunks = []
        for path in sorted(self.log_dir.glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            chunks.append(f"==> {path.name} <==\n" + "\n".join(lines))
        return "\n".join(chunks)

    # -- processes left behind -------------------------------------------------------------

    def leftover_processes(self) -> dict[int, int]:
        """``{pid: starttime}`` of processes this cluster started that are still alive.

        A process belongs to the cluster when its environment carries our ``SLURM_CONF`` (slurmd
        passes it to slurmstepd, prolog and job tasks) or it descends from such a process or from
        one of our daemons. The test process itself is excluded.
        """
        marker = b"SLURM_CONF=" + str(self.conf_path).encode()
        me = os.getpid()
        pids = _all_pids()
        parents = {pid: _proc_ppid(pid) for pid in pids}
        owned = {pid for pid in pids if pid != me and marker in _proc_environ(pid).split(b"\0")}
        owned |= {p.pid for p in self.procs.values() if p.poll() is None}
        changed = True
        while changed:
            children = {pid for pid, ppid in parents.items() if ppid in owned and pid != me}
            changed = not children <= owned
            owned |= children
        owned.discard(me)
        result = {}
        for pid in owned:
            start = _proc_starttime(pid)
            if start is not None:
                result[pid] = start
        return result


def _kill_checked(pids: Mapping[int, int], sig: int) -> None:
    """Signal each pid whose start time still matches (guards against pid reuse)."""
    for pid, start in pids.items():
        if _proc_starttime(pid) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _alive(pids: Mapping[int, int]) -> dict[int, int]:
    alive = {}
    for pid, start in pids.items():
        if _proc_starttime(pid) != start:
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rfind(")") + 2] != "Z":
            alive[pid] = start
    return alive


def _stop_popen(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def render_conf(
    *,
    root: Path,
    nodename: str,
    cpus: int,
    ctld_port: int,
    slurmd_port: int,
    munge_socket: Path,
    prolog: Path | None,
    prolog_flags: str,
    prolog_timeout: int,
    extra_conf: str,
    cluster_name: str = "netauditlab",
) -> str:
    """The slurm.conf text. A ``Key=`` line in ``extra_conf`` replaces the generated one."""
    lines = [
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={nodename}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "CredType=cred/munge",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "MailProg=/bin/true",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/run/slurmctld.pid",
        f"SlurmdPidFile={root}/run/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "MessageTimeout=10",
        "KillWait=2",
    ]
    if prolog is not None:
        lines.append(f"Prolog={prolog}")
    if prolog_flags:
        lines.append(f"PrologFlags={prolog_flags}")
    lines.append(f"PrologEpilogTimeout={prolog_timeout}")
    lines += [
        f"NodeName={nodename} NodeAddr=127.0.0.1 NodeHostname={nodename} CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={nodename} Default=YES MaxTime=INFINITE State=UP",
    ]
    extra_lines = [ln.strip() for ln in extra_conf.splitlines() if ln.strip()]
    overridden = {ln.split("=", 1)[0].strip().lower() for ln in extra_lines if "=" in ln and ln[0] != "#"}
    kept = [ln for ln in lines if ln.split("=", 1)[0].lower() not in overridden]
    return "\n".join([*kept, *extra_lines]) + "\n"


@contextlib.contextmanager
def slurm_cluster(
    prolog: str | os.PathLike[str] | None = None,
    prolog_flags: str = "Alloc",
    extra_conf: str = "",
    *,
    prolog_timeout: int = 15,
    startup_timeout: float = 60,
) -> Iterator[SlurmCluster]:
    """Start munged + slurmctld + slurmd in a fresh temp dir; yield a :class:`SlurmCluster`.

    ``prolog`` is an absolute path to an executable run by slurmd as root (no PATH set).
    ``prolog_flags`` goes to ``PrologFlags=`` (empty: line left out). ``extra_conf`` is appended
    to slurm.conf; its ``Key=`` lines replace generated lines with the same key.

    Calls ``pytest.skip`` when not root or when the Slurm/munge binaries are missing. On exit:
    cancels jobs, stops the daemons by pid, kills leftover job processes (found by our
    SLURM_CONF in their environment or by descent) and removes the directory.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    if prolog is not None:
        prolog = Path(prolog)
        if not prolog.is_absolute():
            raise ValueError(f"prolog must be an absolute path (slurmd has no cwd): {prolog}")
        if not (prolog.is_file() and os.access(prolog, os.X_OK)):
            raise ValueError(f"prolog is not an executable file: {prolog}")

    with _one_lab_per_host():
        yield from _run_cluster(prolog, prolog_flags, extra_conf, prolog_timeout, startup_timeout)


# Two test sessions on one machine, each with its labs, tripped over each other's slurmd and job
# cleanup (seen when two sessions ran at once). A lock file serialises sessions, not the labs of
# one session, which may run side by side; the wait is bounded and then skips.
_LOCK_PATH = Path(tempfile.gettempdir()) / "netaudit-slurmlab.lock"
_LOCK_WAIT_S = 600.0


_HELD = {"labs": 0}  # labs this process runs now: side by side in one session is fine (a test does it)


@contextlib.contextmanager
def _one_lab_per_host() -> Iterator[None]:
    if _HELD["labs"]:
        _HELD["labs"] += 1
        try:
            yield
        finally:
            _HELD["labs"] -= 1
        return
    with open(_LOCK_PATH, "a+b") as lock:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip(f"another single-node Slurm lab held {_LOCK_PATH} for {_LOCK_WAIT_S:g} s")
                time.sleep(0.5)
        _HELD["labs"] = 1
        try:
            yield
        finally:
            _HELD["labs"] = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_cluster(
    prolog: Path | None, prolog_flags: str, extra_conf: str, prolog_timeout: int, startup_timeout: float
) -> Iterator[SlurmCluster]:
    full_hostname = socket.gethostname()
    nodename = full_hostname.split(".", 1)[0]
    root = Path(tempfile.mkdtemp(prefix="slurmlab-"))
    # munged refuses a socket whose directory chain is not searchable by everyone.
    root.chmod(0o755)
    for sub in ("etc", "munge", "state", "spool", "run", "log", "jobs"):
        (root / sub).mkdir(mode=0o755)
    ctld_port = free_port()
    slurmd_port = free_port()
    while slurmd_port == ctld_port:
        slurmd_port = free_port()
    cluster = SlurmCluster(
        root=root,
        nodename=nodename,
        hostname=full_hostname,
        hostname_addrs=etc_hosts_addresses(full_hostname),
        ctld_port=ctld_port,
        slurmd_port=slurmd_port,
        prolog=prolog,
    )
    cluster.conf_path.write_text(
        render_conf(
            root=root,
            nodename=nodename,
            cpus=os.cpu_count() or 1,
            ctld_port=ctld_port,
            slurmd_port=slurmd_port,
            munge_socket=cluster.munge_socket,
            prolog=prolog,
            prolog_flags=prolog_flags,
            prolog_timeout=prolog_timeout,
            extra_conf=extra_conf,
        )
    )
    try:
        t0 = time.monotonic()
        _start(cluster, startup_timeout)
        cluster.startup_s = time.monotonic() - t0
        yield cluster
    finally:
        _teardown(cluster)


def _spawn(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    out = (cluster.log_dir / f"{name}.stderr").open("wb")
    try:
        cluster.procs[name] = subprocess.Popen(
            [which(argv[0]) or argv[0], *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cluster.root),
            env=cluster.env(),
            start_new_session=True,
        )
    finally:
        out.close()


def _check_alive(cluster: SlurmCluster) -> None:
    for name, proc in cluster.procs.items():
        if proc.poll() is not None:
            raise SlurmLabError(f"{name} exited with {proc.returncode} during start-up\n{cluster.logs()}")


def _start(cluster: SlurmCluster, timeout: float) -> None:
    root = cluster.root
    key = root / "munge" / "munge.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(1024))
    _spawn(
        cluster,
        "munged",
        [
            "munged",
            "--foreground",
            f"--socket={cluster.munge_socket}",
            f"--key-file={key}",
            f"--pid-file={root}/munge/munged.pid",
            f"--seed-file={root}/munge/munged.seed",
            f"--log-file={root}/log/munged.log",
            "--origin=127.0.0.1",
            "--num-threads=4",
        ],
    )
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.1)

    def munge_ready() -> bool:
        _check_alive(cluster)
        return cluster.munge_socket.exists()

    try:
        wait_for(munge_ready, left(), interval=0.05, what="munged socket")
        conf = str(cluster.conf_path)
        _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-i", "-f", conf])
        _spawn(cluster, "slurmd", ["slurmd", "-D", "-f", conf, "-N", cluster.nodename])

        def node_idle() -> bool:
            _check_alive(cluster)
            proc = cluster.run(["sinfo", "-h", "-N", "-n", cluster.nodename, "-o", "%T"], timeout=left())
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        wait_for(node_idle, left(), interval=0.1, what="node idle in sinfo")
    except (TimeoutError, subprocess.TimeoutExpired) as exc:
        raise SlurmLabError(f"lab cluster did not come up: {exc}\n{cluster.logs()}") from exc


def _teardown(cluster: SlurmCluster) -> None:
    try:
        if all(p.poll() is None for p in cluster.procs.values()) and len(cluster.procs) == 3:
            with contextlib.suppress(Exception):
                cluster.cancel_all(timeout=5)
        # Snapshot before the daemons go: their children are re-parented once they exit.
        leftovers = cluster.leftover_processes()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = cluster.procs.get(name)
            if proc is not None:
                _stop_popen(proc, timeout=10)
        leftovers.update(cluster.leftover_processes())
        leftovers = _alive(leftovers)
        if leftovers:
            _kill_checked(leftovers, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not _alive(leftovers), 3, what="leftovers to exit")
            _kill_checked(_alive(leftovers), signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not _alive(leftovers), 3, what="leftovers killed")
    finally:
        if os.environ.get("SLURMLAB_KEEP") != "1":
            shutil.rmtree(cluster.root, ignore_errors=True)
