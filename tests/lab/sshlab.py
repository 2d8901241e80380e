"""Test-only ssh lab: a real OpenSSH ``sshd`` per lab node namespace, with key authentication.

Built on :mod:`tests.lab.netlab`.  Every daemon runs *inside* a node's network namespace and
listens only on that node's lab addresses; every ssh client runs *inside* a lab namespace too
(by default an "admin" namespace plugged into the cluster's management switch).  Nothing is
ever sent from the root network namespace, and no interface, route or firewall rule of the root
namespace is touched.

All files live in one ``tempfile.mkdtemp`` directory, removed by :meth:`SshLab.close`: the
client key pair, one ed25519 host key per node, one ``sshd_config``/``authorized_keys``/log per
node, the client ``ssh_config`` and a pre-written ``known_hosts`` (host keys are checked:
``StrictHostKeyChecking yes``).  The one system path written is the privilege-separation
directory ``/run/sshd`` that Debian's sshd refuses to start without; it is created (mode 0755)
when missing, recorded in :data:`CREATED_PRIVSEP_DIR`, and left in place (another lab or the
host's own sshd may be using it).  ``/etc/ssh`` is never read by the daemons (``-f`` names our
config, which has no ``Include``) nor by the clients (``-F``).

API
---
``start_sshlab(lab, cluster, nodes=None, client_ns=None, port=22, connect_timeout=5,
             bashrc=False) -> SshLab``
    sshd on the management addresses (v4 and, when the cluster has them, v6) of every node of a
    ``netlab.cluster()`` (``nodes``: indices or names to restrict).  ``client_ns`` defaults to
    :func:`admin_namespace` (role ``sshadmin``, 198.51.100.2 / 2001:db8:51::2 on the mgmt
    switch; its hosts file maps ``nodeI`` to the *mgmt* address).  ``cluster.outside.ns`` works
    as a client too (routed through the router).
``SshLab(lab, nodes=[(name, ns, [addr, ...]), ...], client_ns, port=22, connect_timeout=5,
       bashrc=False)``  the same for any namespaces; ``with SshLab(...) as s:`` closes it.
    Every sshd is started as ``ip netns exec <ns> [unshare --uts hostname] /usr/sbin/sshd -D -e
    -E <log> -f <cfg>`` through ``Namespace.popen`` (tracked by the lab, killed on close) and
    waited for until ``ss`` shows it on every listen address (~0.1 s per node).

``s.dir`` (temp dir) / ``s.config_path`` (client ssh_config) / ``s.known_hosts`` /
``s.identity`` (client private key) / ``s.client_ns`` / ``s.nodes`` (name -> :class:`SshNode`)
``s.ssh_options``       ``["-o", "User=root", "-o", "IdentityFile=...", ...]``: the config file's
                        ``Host *`` block as options (no host aliases: target an address, or a
                        name the client's hosts file resolves).  Without any ``-F``, OpenSSH
                        also reads ``~/.ssh/config`` and ``/etc/ssh/ssh_config`` *and creates
                        ``~/.ssh`` if missing*, so give tools ``s.noconfig_args`` instead
``s.noconfig_args``     ``["-F", "none", *s.ssh_options]``
``s.config_args``       ``["-F", s.config_path]`` (aliases ``node0`` ... -> mgmt addresses)
``s.address(name)``     the address the config maps ``name`` to (the first listen address)
``s.ssh_argv(node, command, options=(), config=True) -> list``   ``ssh -F cfg [options] node cmd``
``s.client_ssh_path()`` ``"ip netns exec <client ns> ssh"``: ClusterShell's ``ssh_path`` for a
                        Task running in the root namespace (ssh itself then runs in the lab)
``s.run(node, command, client_ns=None, options=(), timeout=30, check=False, config=True)``
                        ssh from the client namespace -> ``CompletedProcess`` (text);
                        ``command`` is a remote shell string or an argv (``shlex.join``-ed)
``s.clustershell_info(ssh_path="ssh") -> dict``   ``task.set_info`` keys for ClusterShell:
                        ``ssh_user=root``, ``ssh_options="-F <cfg>"`` (the setting that carries
                        ``-F``; ClusterShell shlex-splits it), ``connect_timeout=5``
``s.run_clustershell(nodes, command, client_ns=None, command_timeout=0, connect_timeout=None,
                     ssh_path="ssh")`` -> dict: :data:`CLUSH_SCRIPT` (a ClusterShell Task) in a
                        child Python inside the client namespace; ``{"stdout": {node: text},
                        "stderr": {...}, "retcodes": {node: rc}, "timeouts": [node, ...],
                        "elapsed": s}``.  ``s.clustershell_spec(...)`` is its JSON argument, for
                        running ``python -c CLUSH_SCRIPT SPEC`` elsewhere (root namespace +
                        ``ssh_path=s.client_ssh_path()``)

ClusterShell notes (1.10): ``-oConnectTimeout=<connect_timeout info, default 10>`` is appended
*after* ``ssh_options`` and a command-line option beats ``-F``'s file, so set
``connect_timeout`` (or put ``-oConnectTimeout=N`` in ``ssh_options``: the first ``-o`` wins).
The ``command_timeout`` info key is read only by the ``clush`` CLI: the library needs
``task.shell(cmd, nodes=..., timeout=N)``; timed-out nodes are in ``task.iter_keys_timeout()``
and have no retcode.  Without ``stderr=True`` ssh's own errors land in the stdout buffer.

Failure modes (what netaudit's fan-out must survive), all per node and reversible:

``s.stop_node(name)`` / ``s.start_node(name)``   sshd down: connect() is *refused* at once
                        (exit 255, "Connection refused"); stopping also kills its sessions
``s.drop_node(name)`` / ``s.undrop_node(name)``  nft table ``inet sshlab`` in the node's
                        namespace drops TCP to the ssh port: the client *times out* after
                        ``ConnectTimeout`` (exit 255, "Connection timed out")
``s.hang_node(name, seconds=3600)``              authentication succeeds, the command never
                        returns (forced ``sleep``): only a command timeout ends it
``s.bad_output_node(name, text="this is not json")``  the command prints ``text`` and exits 0
``s.force_command(name, shell_text)``            any forced command (authorized_keys
                        ``command="..."``, read afresh on every connection: no restart needed)
``s.reset_node(name)``  undo all of the above;  ``s.session_pids(name)`` / ``s.kill_sessions``
                        the node's sshd session processes and everything their commands started
                        (every session carries ``SSHLAB_SESSION=<random>`` from sshd's SetEnv)
``s.log(name)``         the node's sshd log (``LogLevel VERBOSE``, ``-E`` file)
``s.close()``           stop every sshd and session, drop nft tables, remove the temp dir;
                        idempotent (also runs at exit)

Remote commands: sshd runs them as ``<root's login shell> -c '<command>'`` with a fresh
environment: PATH is sshd's default ``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:
/bin`` (a bare ``python3`` is Debian's /usr/bin/python3, not this interpreter), and nothing of
this process's PYTHONPATH or pyenv shims arrives.  Debian's bash also sources ~/.bashrc when it
is started by sshd (SSH_CLIENT set, SHLVL < 2); here that file runs ``pyenv init`` (+0.2 s per
command, and it would put pyenv on PATH), so by default sshd's ``SetEnv`` passes ``SHLVL=1``,
which makes bash skip it (``bashrc=True`` keeps the host's behaviour).  Build commands with
absolute paths: :func:`remote_python_command` / :func:`netaudit_remote_command` give
``env PYTHONPATH=<repo> <sys.executable> -m netaudit probe --format json``.

Fixture: ``from tests.lab.sshlab import module_sshlab_fixture  # noqa: F401`` gives the
module-scoped ``module_sshlab`` (a ``cluster(module_lab, nodes=SSHLAB_NODES)`` where the test
module may set ``SSHLAB_NODES``, default 2; the cluster is ``s.cluster``).  It needs the netlab
fixture ``module_lab`` imported as well.  Skips with :func:`skip_reason` (not root, no netns,
no ``/usr/sbin/sshd``, ``ssh``, ``ssh-keygen``, no ``sshd`` privsep user).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.lab import netlab
from tests.lab.netlab import Cluster, Lab, Namespace, check_ip

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_V4 = "198.51.100.2"
ADMIN_V6 = "2001:db8:51::2"
NFT_TABLE = "sshlab"
MARK_VAR = "SSHLAB_SESSION"

#: True once this process created /run/sshd (it is never removed again).
CREATED_PRIVSEP_DIR = False

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

#: ``python -c CLUSH_SCRIPT SPEC``: one ClusterShell fan-out, result as JSON on stdout.
CLUSH_SCRIPT = r"""
import json, sys, time
from ClusterShell.Task import task_self
spec = json.loads(sys.argv[1])
task = task_self()
for key, value in spec["info"].items():
    task.set_info(key, value)
t0 = time.monotonic()
# The library ignores the "command_timeout" info key (only the clush CLI reads it):
# a per-node command timeout is shell()'s timeout argument.
task.shell(spec["command"], nodes=spec["nodes"], stderr=True, timeout=spec["timeout"] or None)
task.resume()
out = {"stdout": {}, "stderr": {}, "retcodes": {}, "timeouts": []}
for buf, keys in task.iter_buffers():
    for k in keys:
        out["stdout"][str(k)] = buf.message().decode(errors="replace")
for buf, keys in task.iter_errors():
    for k in keys:
        out["stderr"][str(k)] = buf.message().decode(errors="replace")
for rc, keys in task.iter_retcodes():
    for k in keys:
        out["retcodes"][str(k)] = rc
out["timeouts"] = sorted(str(k) for k in task.iter_keys_timeout())
out["elapsed"] = time.monotonic() - t0
print(json.dumps(out))
"""


class SshLabError(RuntimeError):
    """sshd failed to start or the lab was misused; the message carries the sshd log."""


# ---------------------------------------------------------------------------------------------
# skip logic and remote command helpers


@cache
def skip_reason() -> str | None:
    """Why the ssh lab cannot run here (``None`` if it can)."""
    reason = netlab.skip_reason()
    if reason:
        return reason
    if not os.access(SSHD, os.X_OK):
        return f"sshlab requires {SSHD} (apt-get install openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"sshlab requires `{tool}` on PATH (apt-get install openssh-client)"
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        return "sshlab requires the `sshd` privilege separation user (openssh-server package)"
    return None


def remote_python_command(
    args: Sequence[str],
    *,
    python: str = sys.executable,
    pythonpath: str | os.PathLike[str] | None = REPO_ROOT,
    env: dict[str, str] | None = None,
) -> str:
    """Remote shell string ``env PYTHONPATH=<repo> K=V <python> ARGS`` (everything absolute).

    sshd hands the command to the login shell with a reset environment, so neither this
    process's PATH (pyenv shims) nor its PYTHONPATH reaches the remote side.
    """
    assigns = [f"PYTHONPATH={pythonpath}"] if pythonpath else []
    assigns += [f"{k}={v}" for k, v in (env or {}).items()]
    return shlex.join(["env", *assigns, python, *map(str, args)])


def netaudit_remote_command(*args: str, **kw: Any) -> str:
    """``env PYTHONPATH=<repo> <python> -m netaudit ARGS`` for ssh / ClusterShell."""
    return remote_python_command(["-m", "netaudit", *args], **kw)


# ---------------------------------------------------------------------------------------------
# small process helpers


def _netns_inode(ns: Namespace) -> int | None:
    try:
        return (netlab.NETNS_RUN_DIR / ns.name).stat().st_ino
    except OSError:
        return None


def _pids_in(inode: int) -> list[int]:
    want, me, pids = f"net:[{inode}]", os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/net") == want:
                    pids.append(int(entry))
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _ensure_privsep_dir() -> None:
    global CREATED_PRIVSEP_DIR  # noqa: PLW0603  (reported once per process)
    if PRIVSEP_DIR.is_dir():
        return
    with contextlib.suppress(FileExistsError):
        PRIVSEP_DIR.mkdir(mode=0o755)
        PRIVSEP_DIR.chmod(0o755)  # whatever the umask: sshd refuses a group-writable chroot
        CREATED_PRIVSEP_DIR = True


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


# ---------------------------------------------------------------------------------------------
# the lab


@dataclass
class SshNode:
    """One node's sshd: its namespace, listen addresses and files."""

    name: str
    ns: Namespace
    addresses: tuple[str, ...]
    dir: Path
    config: Path
    log_path: Path
    stderr_path: Path
    authorized_keys: Path
    pid_file: Path
    proc: subprocess.Popen[Any] | None = None
    dropped: bool = False
    forced: str | None = None
    host_key_pub: str = ""
    started: list[float] = field(default_factory=list)  # seconds each start took


class SshLab:
    """sshd in every given namespace plus client configuration; see the module docstring."""

    def __init__(
        self,
        lab: Lab,
        nodes: Iterable[tuple[str, Namespace, Sequence[str]]],
        client_ns: Namespace,
        *,
        port: int = 22,
        connect_timeout: int = 5,
        bashrc: bool = False,
    ) -> None:
        reason = skip_reason()
        if reason:
            raise SshLabError(reason)
        self.lab = lab
        self.client_ns = client_ns
        self.port = int(port)
        self.connect_timeout = int(connect_timeout)
        self.bashrc = bashrc
        self.cluster: Cluster | None = None
        self.mark = secrets.token_hex(8)
        self.dir = Path(tempfile.mkdtemp(prefix="sshlab-"))
        self._closed = False
        atexit.register(self._atexit)
        self.nodes: dict[str, SshNode] = {}
        try:
            self._build(list(nodes))
        except BaseException:
            self.close()
            raise

    # -- construction ------------------------------------------------------------------------

    def _build(self, nodes: list[tuple[str, Namespace, Sequence[str]]]) -> None:
        if not nodes:
            raise ValueError("no nodes")
        _ensure_privsep_dir()
        self.dir.chmod(0o700)
        cdir = self.dir / "client"
        cdir.mkdir()
        self.identity = cdir / "id_ed25519"
        client_pub = _keygen(self.identity, "sshlab-client")
        self._client_pub = client_pub
        for name, ns, addrs in nodes:
            if not _NAME_RE.match(name) or name in self.nodes:
                raise ValueError(f"bad or duplicate node name {name!r}")
            addresses = tuple(str(check_ip(a)) for a in addrs)
            if not addresses:
                raise ValueError(f"node {name!r}: no listen address")
            ndir = self.dir / name
            ndir.mkdir()
            node = SshNode(
                name=name,
                ns=ns,
                addresses=addresses,
                dir=ndir,
                config=ndir / "sshd_config",
                log_path=ndir / "sshd.log",
                stderr_path=ndir / "sshd.stderr",
                authorized_keys=ndir / "authorized_keys",
                pid_file=ndir / "sshd.pid",
            )
            node.host_key_pub = _keygen(ndir / "ssh_host_ed25519_key", f"sshlab-{name}")
            node.config.write_text(self._sshd_config(node))
            self._write_authorized_keys(node)
            self.nodes[name] = node
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text("".join(self._known_hosts_line(n) for n in self.nodes.values()))
        self.config_path = self.dir / "ssh_config"
        self.config_path.write_text(self._ssh_config())
        for node in self.nodes.values():
            self.start_node(node.name)

    def _sshd_config(self, node: SshNode) -> str:
        lines = [
            "# sshd_config written by tests/lab/sshlab.py (read with sshd -f; no Include)",
            f"Port {self.port}",
            *(f"ListenAddress {a}" for a in node.addresses),
            "AddressFamily any",
            f"HostKey {node.dir / 'ssh_host_ed25519_key'}",
            f"PidFile {node.pid_file}",
            f"AuthorizedKeysFile {node.authorized_keys}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "AllowUsers root",
            "PubkeyAuthentication yes",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitEmptyPasswords no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "PermitTunnel no",
            "PermitUserEnvironment no",
            "PermitUserRC no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LoginGraceTime 15",
            "MaxStartups 200:30:400",
            "MaxSessions 20",
            # SHLVL=1: bash then skips ~/.bashrc for ssh commands (see module docstring).
            f"SetEnv {MARK_VAR}={self.mark}" + ("" if self.bashrc else " SHLVL=1"),
            "LogLevel VERBOSE",
        ]
        return "\n".join(lines) + "\n"

    def _known_hosts_line(self, node: SshNode) -> str:
        names = [node.name, *node.addresses]
        if self.port != 22:
            names = [f"[{n}]:{self.port}" for n in names]
        keytype, key = node.host_key_pub.split()[:2]
        return f"{','.join(names)} {keytype} {key}\n"

    def _client_settings(self) -> list[tuple[str, str]]:
        return [
            ("User", "root"),
            ("Port", str(self.port)),
            ("IdentityFile", str(self.identity)),
            ("IdentitiesOnly", "yes"),
            ("IdentityAgent", "none"),
            ("UserKnownHostsFile", str(self.known_hosts)),
            ("GlobalKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "yes"),
            ("UpdateHostKeys", "no"),
            ("CheckHostIP", "no"),
            ("BatchMode", "yes"),
            ("ConnectTimeout", str(self.connect_timeout)),
            ("ConnectionAttempts", "1"),
            ("PreferredAuthentications", "publickey"),
            ("PasswordAuthentication", "no"),
            ("KbdInteractiveAuthentication", "no"),
            ("ForwardAgent", "no"),
            ("ForwardX11", "no"),
            ("ClearAllForwardings", "yes"),
            ("ControlMaster", "no"),
            ("ControlPath", "none"),
            ("RequestTTY", "no"),
            ("ServerAliveInterval", "5"),
            ("ServerAliveCountMax", "3"),
            ("LogLevel", "ERROR"),
        ]

    def _ssh_config(self) -> str:
        out = ["# ssh_config written by tests/lab/sshlab.py (use with ssh -F)"]
        for node in self.nodes.values():
            out += [f"Host {node.name}", f"    HostName {node.addresses[0]}"]
        out.append("Host *")
        out += [f"    {k} {v}" for k, v in self._client_settings()]
        return "\n".join(out) + "\n"

    def _write_authorized_keys(self, node: SshNode) -> None:
        if node.forced is None:
            line = self._client_pub
        else:
            script = node.dir / "forced.sh"
            script.write_text(node.forced + "\n")
            line = f'command="/bin/sh {script}",restrict {self._client_pub}'
        tmp = node.authorized_keys.with_suffix(".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(node.authorized_keys)  # atomic: a connection sees the old or the new file

    # -- client side -------------------------------------------------------------------------

    @property
    def ssh_options(self) -> list[str]:
        """The client settings as ``-o K=V`` pairs (no host aliases; see module docstring)."""
        return [x for k, v in self._client_settings() for x in ("-o", f"{k}={v}")]

    @property
    def noconfig_args(self) -> list[str]:
        """``-F none`` + :attr:`ssh_options`: no ssh_config read, ``~/.ssh`` never created."""
        return ["-F", "none", *self.ssh_options]

    @property
    def config_args(self) -> list[str]:
        return ["-F", str(self.config_path)]

    def address(self, name: str) -> str:
        return self._node(name).addresses[0]

    def hosts(self) -> dict[str, str]:
        """Node name -> the address the client config maps it to."""
        return {n.name: n.addresses[0] for n in self.nodes.values()}

    def ssh_argv(
        self,
        node: str,
        command: str | Sequence[str],
        options: Sequence[str] = (),
        config: bool = True,
    ) -> list[str]:
        """``ssh -F cfg [options] node command`` (``config=False``: :attr:`noconfig_args`)."""
        cmd = command if isinstance(command, str) else shlex.join(map(str, command))
        base = self.config_args if config else self.noconfig_args
        return ["ssh", *base, *options, node, cmd]

    def client_ssh_path(self, client_ns: Namespace | None = None) -> str:
        """``ip netns exec <client> ssh``: an ssh command that runs inside the client ns."""
        return shlex.join(["ip", "netns", "exec", (client_ns or self.client_ns).name, "ssh"])

    def run(
        self,
        node: str,
        command: str | Sequence[str],
        *,
        client_ns: Namespace | None = None,
        options: Sequence[str] = (),
        timeout: float = 30.0,
        check: bool = False,
        config: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """ssh ``node command`` from inside the client namespace; text output captured."""
        ns = client_ns or self.client_ns
        return ns.run(
            self.ssh_argv(node, command, options, config),
            check=check,
            timeout=timeout,
            hostname=False,
        )

    def clustershell_info(self, ssh_path: str = "ssh") -> dict[str, Any]:
        """``task.set_info`` keys: ``ssh_options`` carries ``-F cfg`` (shlex-split by ClusterShell).

        ``connect_timeout`` is set as well: ClusterShell appends ``-oConnectTimeout=<its
        default 10>`` *after* ``ssh_options``, and a command-line option beats the config file.
        """
        return {
            "ssh_path": ssh_path,
            "ssh_user": "root",
            "ssh_options": shlex.join(self.config_args),
            "connect_timeout": self.connect_timeout,
        }

    def run_clustershell(
        self,
        nodes: str | Iterable[str],
        command: str,
        *,
        client_ns: Namespace | None = None,
        command_timeout: float = 0,
        connect_timeout: float | None = None,
        ssh_path: str = "ssh",
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Fan ``command`` out with ClusterShell from a Python child inside the client ns."""
        spec = self.clustershell_spec(nodes, command, command_timeout, connect_timeout, ssh_path)
        proc = (client_ns or self.client_ns).run(
            [sys.executable, "-c", CLUSH_SCRIPT, spec], timeout=timeout, hostname=False
        )
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def clustershell_spec(
        self,
        nodes: str | Iterable[str],
        command: str,
        command_timeout: float = 0,
        connect_timeout: float | None = None,
        ssh_path: str = "ssh",
    ) -> str:
        """The JSON argument of :data:`CLUSH_SCRIPT` (``python -c CLUSH_SCRIPT SPEC``)."""
        info = self.clustershell_info(ssh_path)
        if connect_timeout is not None:
            info["connect_timeout"] = connect_timeout
        node_spec = nodes if isinstance(nodes, str) else ",".join(nodes)
        spec = {"info": info, "command": command, "nodes": node_spec, "timeout": command_timeout}
        return json.dumps(spec)

    # -- node control ------------------------------------------------------------------------

    def _node(self, name: str) -> SshNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no ssh node {name!r} (have {sorted(self.nodes)})") from None

    def log(self, name: str) -> str:
        node = self._node(name)
        parts = []
        for p in (node.stderr_path, node.log_path):
            with contextlib.suppress(OSError):
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def start_node(self, name: str, timeout: float = 10.0) -> None:
        """Start (or restart) the node's sshd; returns once it listens on every address."""
        node = self._node(name)
        if node.proc is not None and node.proc.poll() is None:
            return
        t0 = time.monotonic()
        with node.stderr_path.open("ab") as err:
            node.proc = node.ns.popen(
                [SSHD, "-D", "-e", "-E", str(node.log_path), "-f", str(node.config)],
                hostname=node.ns.hostname or node.name,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        want = len(node.addresses)
        deadline = t0 + timeout
        while True:
            if node.proc.poll() is not None:
                raise SshLabError(f"sshd for {name} exited {node.proc.returncode}:\n{self.log(name)}")
            out = node.ns.run(["ss", "-Hltn", f"sport = :{self.port}"], hostname=False).stdout
            if len(out.strip().splitlines()) >= want:
                break
            if time.monotonic() > deadline:
                raise SshLabError(f"sshd for {name} does not listen:\n{self.log(name)}")
            time.sleep(0.02)
        node.started.append(time.monotonic() - t0)

    def stop_node(self, name: str) -> None:
        """Stop the node's sshd and kill its sessions: new connections are refused."""
        node = self._node(name)
        if node.proc is not None:
            node.ns.stop(node.proc)
            node.proc = None
        self.kill_sessions(name)

    def is_running(self, name: str) -> bool:
        proc = self._node(name).proc
        return proc is not None and proc.poll() is None

    def drop_node(self, name: str) -> None:
        """Drop every TCP packet to the ssh port inside the node's namespace (connect hangs)."""
        node = self._node(name)
        if node.dropped:
            return
        node.ns.nft(
            f"table inet {NFT_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority -10; policy accept;\n"
            f"    tcp dport {self.port} drop\n"
            "  }\n"
            "}\n"
        )
        node.dropped = True

    def undrop_node(self, name: str) -> None:
        node = self._node(name)
        if node.dropped:
            node.ns.nft(f"delete table inet {NFT_TABLE}\n")
            node.dropped = False

    def force_command(self, name: str, shell_text: str | None) -> None:
        """Run ``shell_text`` (``/bin/sh``) instead of any command; ``None`` removes it.

        The original command is in ``$SSH_ORIGINAL_COMMAND``.  Takes effect on the next
        connection (authorized_keys is read per connection).
        """
        node = self._node(name)
        node.forced = shell_text
        self._write_authorized_keys(node)

    def hang_node(self, name: str, seconds: int = 3600) -> None:
        """Authentication works, then the command sleeps ``seconds`` and prints nothing."""
        self.force_command(name, f"exec sleep {int(seconds)}")

    def bad_output_node(self, name: str, text: str = "this is not json") -> None:
        """Every command prints ``text`` on stdout and exits 0."""
        self.force_command(name, f"printf '%s\\n' {shlex.quote(text)}")

    def reset_node(self, name: str) -> None:
        """Undo stop/drop/forced command; kill leftover sessions (e.g. hung ones)."""
        self.force_command(name, None)
        self.undrop_node(name)
        self.kill_sessions(name)
        self.start_node(name)

    def session_pids(self, name: str) -> list[int]:
        """sshd session processes of the node and every process carrying our session mark."""
        node = self._node(name)
        inode = _netns_inode(node.ns)
        if inode is None:
            return []
        listener = node.proc.pid if node.proc is not None and node.proc.poll() is None else None
        marker = f"{MARK_VAR}={self.mark}".encode()
        pids = []
        for pid in _pids_in(inode):
            if pid == listener or _is_zombie(pid):
                continue
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if exe == SSHD or marker in env:
                pids.append(pid)
        return pids

    def kill_sessions(self, name: str, timeout: float = 3.0) -> None:
        """SIGKILL :meth:`session_pids` (namespace rechecked right before each kill)."""
        node = self._node(name)
        deadline = time.monotonic() + timeout
        while pids := self.session_pids(name):
            inode = _netns_inode(node.ns)
            for pid in pids:
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]":
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise SshLabError(f"sessions {pids} on {name} survive SIGKILL")
            time.sleep(0.02)

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every sshd and session, remove nft tables and the temp dir (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        errors = []
        for node in self.nodes.values():
            try:
                if node.proc is not None:
                    # Namespace.stop works even after lab.close(); it only signals the group.
                    node.ns.stop(node.proc)
                    node.proc = None
                if _netns_inode(node.ns) is not None:
                    self.kill_sessions(node.name)
                    if node.dropped:
                        with contextlib.suppress(RuntimeError, subprocess.CalledProcessError):
                            self.undrop_node(node.name)
            except Exception as e:  # keep going: remove everything we can
                errors.append(f"{node.name}: {e}")
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            errors.append(f"cannot remove {self.dir}")
        if errors:
            raise SshLabError("sshlab cleanup incomplete: " + "; ".join(errors))

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> SshLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# cluster glue


def admin_namespace(
    lab: Lab,
    cluster: Cluster,
    role: str = "sshadmin",
    v4: str = ADMIN_V4,
    v6: str | None = ADMIN_V6,
) -> Namespace:
    """An admin host on the cluster's mgmt switch; its hosts file maps ``nodeI`` to mgmt v4."""
    ns = lab.namespace(role, hostname=role.replace("_", "-"))
    addrs = [f"{v4}/24"] + ([f"{v6}/64"] if v6 and cluster.ipv6 else [])
    lab.attach(ns, cluster.mgmt, addrs, ifname="mgmt")
    table = {n.hostname: n.mgmt_v4 for n in cluster.nodes}
    for n in cluster.nodes:
        table[f"{n.hostname}-mgmt"] = n.mgmt_v4
        if n.mgmt_v6:
            table[f"{n.hostname}-mgmt6"] = n.mgmt_v6
    ns.set_hosts(table)
    return ns


def start_sshlab(
    lab: Lab,
    cluster: Cluster,
    nodes: Iterable[int | str] | None = None,
    client_ns: Namespace | None = None,
    *,
    port: int = 22,
    connect_timeout: int = 5,
    bashrc: bool = False,
) -> SshLab:
    """sshd on the mgmt addresses of ``cluster``'s nodes; client in an admin namespace."""
    wanted = None if nodes is None else {str(x) for x in nodes}
    chosen = [n for n in cluster.nodes if wanted is None or n.hostname in wanted or str(n.index) in wanted]
    specs = [(n.hostname, n.ns, [a for a in (n.mgmt_v4, n.mgmt_v6) if a]) for n in chosen]
    if client_ns is None:
        client_ns = admin_namespace(lab, cluster)
    s = SshLab(lab, specs, client_ns, port=port, connect_timeout=connect_timeout, bashrc=bashrc)
    s.cluster = cluster
    return s


@pytest.fixture(name="module_sshlab", scope="module")
def module_sshlab_fixture(request: pytest.FixtureRequest, module_lab: Lab) -> Iterator[SshLab]:
    """``start_sshlab(module_lab, cluster(module_lab, nodes=<module SSHLAB_NODES or 2>))``."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    count = int(getattr(request.module, "SSHLAB_NODES", 2))
    c = netlab.cluster(module_lab, nodes=count)
    s = start_sshlab(module_lab, c)
    try:
        yield s
    finally:
        s.close()
