"""Self-tests of the ssh lab (tests/lab/sshlab.py): real sshd per node namespace, key auth,
commands run inside the node, the failure modes a fan-out must survive, ClusterShell, teardown.

Node roles in the shared module lab: node0 and node1 stay healthy; node2..node4 are broken on
purpose by one test at a time and reset before it returns.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import sshlab
from tests.lab.netlab import (
    NETNS_RUN_DIR,
    Lab,
    cluster,
    lab_fixture,  # noqa: F401  (pytest fixture "lab")
    module_lab_fixture,  # noqa: F401  (pytest fixture "module_lab")
)
from tests.lab.sshlab import (
    SshLab,
    module_sshlab_fixture,  # noqa: F401  (pytest fixture "module_sshlab")
    netaudit_remote_command,
    remote_python_command,
    start_sshlab,
)

SSHLAB_NODES = 5
_HOME_SSH = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
_HOME_SSH_EXISTED = _HOME_SSH.exists()
pytestmark = pytest.mark.requires_root


def _inode(ns_name: str) -> int:
    return (NETNS_RUN_DIR / ns_name).stat().st_ino


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _timed(
    s: SshLab, node: str, command: str, **kw: object
) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    proc = s.run(node, command, **kw)  # type: ignore[arg-type]
    return proc, time.monotonic() - t0


# --- no root needed -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["-m", "netaudit", "probe", "--format", "json"], ["-c", "print('a b')"]])
def test_remote_python_command_is_absolute_and_quoted(args: list[str]) -> None:
    cmd = remote_python_command(args, env={"LC_ALL": "C.UTF-8"})
    argv = shlex.split(cmd)
    assert argv[:3] == ["env", f"PYTHONPATH={sshlab.REPO_ROOT}", "LC_ALL=C.UTF-8"]
    assert argv[3] == sys.executable and os.path.isabs(argv[3])
    assert argv[4:] == args
    assert netaudit_remote_command("probe").endswith("-m netaudit probe")


# --- key authentication and where commands run ---------------------------------------------


def test_key_auth_to_two_nodes_with_checked_host_keys(module_sshlab: SshLab, tmp_path: Path) -> None:
    s = module_sshlab
    for name in ("node0", "node1"):
        proc = s.run(name, "hostname", check=True)  # alias from the -F config
        assert proc.stdout.strip() == name
        assert f"Accepted publickey for root from {sshlab.ADMIN_V4}" in s.log(name)
    # The -o list (with -F none) against bare addresses, v4 and v6.
    n1 = s.nodes["node1"]
    assert n1.addresses == ("198.51.100.12", "2001:db8:51::12")
    for addr in n1.addresses:
        assert s.run(addr, "hostname", config=False, check=True).stdout.strip() == "node1"
    # The fabric address has no sshd (ListenAddress is mgmt only).
    assert s.run("198.18.0.12", "true", options=["-o", "ConnectTimeout=2"]).returncode == 255

    # Host keys are really checked: node0's name with node1's key is refused.
    bad_kh = tmp_path / "known_hosts"
    bad_kh.write_text(f"node0,198.51.100.11 {' '.join(n1.host_key_pub.split()[:2])}\n")
    proc = s.run("node0", "true", options=["-o", f"UserKnownHostsFile={bad_kh}"])
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr
    # Only the lab key is accepted (no password, no other key).
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    opts = [o.replace(str(s.identity), str(other)) for o in s.noconfig_args]
    proc = s.client_ns.run(["ssh", *opts, "198.51.100.11", "true"], check=False, hostname=False)
    assert proc.returncode == 255 and "Permission denied (publickey)" in proc.stderr
    assert _HOME_SSH.exists() == _HOME_SSH_EXISTED  # -F everywhere: ssh never creates ~/.ssh


def test_remote_command_runs_inside_the_node_namespace(module_sshlab: SshLab) -> None:
    s = module_sshlab
    assert s.cluster is not None
    node = s.cluster.nodes[0]
    out = s.run("node0", "readlink /proc/self/ns/net; hostname; ip -o addr show", check=True).stdout
    netns, host, addrs = out.split("\n", 2)
    assert netns == f"net:[{_inode(node.ns.name)}]"
    assert netns != os.readlink("/proc/self/ns/net")
    assert host == "node0"
    for addr in node.addresses():
        assert f" {addr}/" in addrs
    assert "198.51.100.2/" not in addrs  # the client's address is elsewhere
    # The outside namespace is a client too: routed through the router to the mgmt address.
    proc = s.run("node0", "echo $SSH_CONNECTION", client_ns=s.cluster.outside.ns, check=True)
    assert proc.stdout.split()[0::2] == ["203.0.113.10", "198.51.100.11"]


def test_remote_python_runs_netaudit_probe(module_sshlab: SshLab) -> None:
    s = module_sshlab
    # sshd resets the environment: no pyenv on the remote PATH, hence absolute paths.
    path = s.run("node1", "echo $PATH", check=True).stdout.strip()
    assert ".pyenv" not in path
    proc = s.run("node1", netaudit_remote_command("probe", "--format", "json", "--namespaces", "own"))
    assert proc.returncode == 0, proc.stderr
    inv = json.loads(proc.stdout)
    assert inv["host"] == "node1"
    ssh_listeners = {(x["address"], x["port"]) for x in inv["listeners"] if x["port"] == 22}
    assert ssh_listeners == {("198.51.100.12", 22), ("2001:db8:51::12", 22)}


# --- failure modes ---------------------------------------------------------------------------


def test_stopped_sshd_is_refused_at_once(module_sshlab: SshLab) -> None:
    s = module_sshlab
    s.stop_node("node2")
    try:
        assert not s.is_running("node2")
        proc, took = _timed(s, "node2", "true")
        assert proc.returncode == 255
        assert "Connection refused" in proc.stderr
        assert took < 2.0
    finally:
        s.reset_node("node2")
    assert s.run("node2", "hostname", check=True).stdout.strip() == "node2"


def test_dropped_node_times_out_after_connect_timeout(module_sshlab: SshLab) -> None:
    s = module_sshlab
    assert s.connect_timeout == 5
    s.drop_node("node3")
    try:
        proc, took = _timed(s, "node3", "true")
        assert proc.returncode == 255
        assert "timed out" in proc.stderr
        assert s.connect_timeout - 0.5 <= took <= s.connect_timeout + 2.0
    finally:
        s.reset_node("node3")
    assert s.run("node3", "hostname", check=True).stdout.strip() == "node3"


def test_bad_and_foreign_output(module_sshlab: SshLab) -> None:
    s = module_sshlab
    try:
        s.bad_output_node("node4")
        proc = s.run("node4", netaudit_remote_command("probe", "--format", "json"))
        assert proc.returncode == 0
        assert proc.stdout == "this is not json\n"
        with pytest.raises(json.JSONDecodeError):
            json.loads(proc.stdout)
        s.force_command("node4", 'printf \'{"kind": "other.tool", "cmd": "%s"}\\n\' "$SSH_ORIGINAL_COMMAND"')
        doc = json.loads(s.run("node4", "echo hi", check=True).stdout)
        assert doc == {"kind": "other.tool", "cmd": "echo hi"}
    finally:
        s.reset_node("node4")
    assert s.run("node4", "echo ok", check=True).stdout == "ok\n"


def test_hung_node_needs_a_command_timeout(module_sshlab: SshLab) -> None:
    s = module_sshlab
    s.hang_node("node4")
    try:
        t0 = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            s.run("node4", "hostname", timeout=1.5)
        assert time.monotonic() - t0 < 3.0
        assert "Starting session: forced-command" in s.log("node4")
        pids = s.session_pids("node4")
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in pids if _alive(p)]
        assert b"sleep\x003600\x00" in cmdlines  # the forced command outlives the killed client
    finally:
        s.reset_node("node4")
    assert s.session_pids("node4") == []
    assert all(not _alive(p) for p in pids)


# --- ClusterShell ------------------------------------------------------------------------------


def test_clustershell_fans_out_to_two_nodes(module_sshlab: SshLab) -> None:
    s = module_sshlab
    info = s.clustershell_info()
    assert info["ssh_options"] == f"-F {s.config_path}"
    res = s.run_clustershell("node[0-1]", "hostname")
    assert res["stdout"] == {"node0": "node0", "node1": "node1"}
    assert res["retcodes"] == {"node0": 0, "node1": 0}
    assert res["stderr"] == {} and res["timeouts"] == []

    # netaudit's real use: one JSON inventory per node.
    res = s.run_clustershell(
        ["node0", "node1"], netaudit_remote_command("probe", "--format", "json", "--namespaces", "own")
    )
    assert res["retcodes"] == {"node0": 0, "node1": 0}, res["stderr"]
    assert {k: json.loads(v)["host"] for k, v in res["stdout"].items()} == {
        "node0": "node0",
        "node1": "node1",
    }


def test_clustershell_in_root_namespace_via_ssh_path(module_sshlab: SshLab) -> None:
    """A Task running in the root namespace whose ssh runs in the lab (``ssh_path``)."""
    s = module_sshlab
    spec = s.clustershell_spec("node0,node1", "readlink /proc/self/ns/net", ssh_path=s.client_ssh_path())
    proc = subprocess.run(
        [sys.executable, "-c", sshlab.CLUSH_SCRIPT, spec],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    res = json.loads(proc.stdout)
    assert s.cluster is not None
    assert res["stdout"] == {n.hostname: f"net:[{_inode(n.ns.name)}]" for n in s.cluster.nodes[:2]}


def test_clustershell_connect_timeout_beats_the_config_file(module_sshlab: SshLab) -> None:
    """ClusterShell appends -oConnectTimeout=<connect_timeout, default 10> after ssh_options."""
    s = module_sshlab
    argv = ["ssh", "-G", *s.config_args, "-oConnectTimeout=10", "node0"]
    out = s.client_ns.run(argv, hostname=False).stdout
    assert "connecttimeout 10\n" in out
    argv = ["ssh", "-G", *s.config_args, "-oConnectTimeout=3", "-oConnectTimeout=10", "node0"]
    assert "connecttimeout 3\n" in s.client_ns.run(argv, hostname=False).stdout  # first -o wins


def test_clustershell_reports_every_failure_mode(module_sshlab: SshLab) -> None:
    s = module_sshlab
    s.bad_output_node("node1")
    s.stop_node("node2")
    s.drop_node("node3")
    s.hang_node("node4")
    try:
        res = s.run_clustershell("node[0-4]", "hostname", command_timeout=3, connect_timeout=2)
    finally:
        for name in ("node1", "node2", "node3", "node4"):
            s.reset_node(name)
    assert res["stdout"]["node0"] == "node0" and res["retcodes"]["node0"] == 0
    assert res["stdout"]["node1"] == "this is not json" and res["retcodes"]["node1"] == 0
    assert res["retcodes"]["node2"] == 255 and "Connection refused" in res["stderr"]["node2"]
    assert res["retcodes"]["node3"] == 255 and "timed out" in res["stderr"]["node3"]
    assert res["timeouts"] == ["node4"] and "node4" not in res["retcodes"]
    assert 2.5 <= res["elapsed"] < 6.0


# --- teardown ----------------------------------------------------------------------------------


def test_close_removes_daemons_sessions_and_files(lab: Lab) -> None:
    c = cluster(lab, nodes=1, ipv6=False)
    s = start_sshlab(lab, c)
    assert s.nodes["node0"].addresses == ("198.51.100.11",)
    assert s.run("node0", "hostname", check=True).stdout.strip() == "node0"
    s.hang_node("node0")
    with pytest.raises(subprocess.TimeoutExpired):
        s.run("node0", "true", timeout=1.0)
    node = s.nodes["node0"]
    assert node.proc is not None
    pids = [node.proc.pid, *s.session_pids("node0")]
    assert len(pids) >= 2
    tmp = s.dir
    assert (tmp / "node0" / "sshd_config").exists()
    s.close()
    assert not tmp.exists()
    assert not any(_alive(p) for p in pids)
    assert c.nodes[0].ns.run(["ss", "-Hltn"], hostname=False).stdout.strip() == ""
    s.close()  # idempotent
