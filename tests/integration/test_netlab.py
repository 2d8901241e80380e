"""Self-tests of the network lab (tests/lab/netlab.py): lifecycle, root safety, reachability."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.netlab import (
    NETNS_ETC_DIR,
    NETNS_RUN_DIR,
    Cluster,
    Lab,
    check_cidr,
    check_ip,
    cluster,
    lab_fixture,  # noqa: F401  (pytest fixture "lab")
    skip_reason,
)

REPO = Path(__file__).resolve().parents[2]


def _root_state() -> dict[str, str]:
    """Read-only snapshot of the root namespace's network configuration."""

    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    return {
        "link": out("ip", "-o", "link"),
        "addr": out("ip", "-o", "addr"),
        "route4": out("ip", "-4", "route", "show", "table", "all"),
        "route6": out("ip", "-6", "route", "show", "table", "all"),
        "nft": out("nft", "list", "ruleset"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "v6_forwarding": Path("/proc/sys/net/ipv6/conf/all/forwarding").read_text(),
    }


def _exists(name: str) -> bool:
    return (NETNS_RUN_DIR / name).exists() or (NETNS_ETC_DIR / name).exists()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- guards: no root needed --------------------------------------------------------------------


@pytest.mark.parametrize(
    "cidr",
    ["192.0.2.5/24", "10.0.0.1/24", "127.0.0.2/8", "fd00::5/64", "198.18.0.1/14", "2001:db8::1/16"],
)
def test_addresses_outside_the_lab_ranges_are_refused(cidr: str) -> None:
    with pytest.raises(ValueError):
        check_cidr(cidr)


def test_lab_ranges_are_accepted() -> None:
    for cidr in ("198.19.255.1/16", "198.51.100.7/24", "203.0.113.9/32", "2001:db8:51::1/64"):
        check_cidr(cidr)
    check_ip("2001:db8:203::10")
    with pytest.raises(ValueError):
        check_ip("192.0.2.2")
    with pytest.raises(ValueError):
        check_cidr("198.18.0.1")  # a prefix length is required


# --- lifecycle and root safety -----------------------------------------------------------------


@pytest.mark.requires_root
def test_root_namespace_untouched_and_everything_removed(lab: Lab) -> None:
    before = _root_state()
    c = cluster(lab, nodes=2, route_fabric_via_mgmt=True)
    names = [ns.name for ns in lab.namespaces.values()]
    assert {ns.role for ns in lab.namespaces.values()} == {
        "switch",
        "router",
        "outside",
        "node0",
        "node1",
    }
    assert all((NETNS_RUN_DIR / n).exists() for n in names)
    assert (NETNS_ETC_DIR / c.nodes[0].ns.name / "hosts").exists()
    proc = c.nodes[1].ns.popen(["sleep", "300"])
    c.router.sysctl("net.ipv4.conf.all.log_martians", 1)
    c.nodes[0].ns.nft("table inet f { chain input { type filter hook input priority 0; } }")
    assert _root_state() == before  # nothing appeared in the root namespace while running
    lab.close()
    assert not any(_exists(n) for n in names)
    assert not _alive(proc.pid)
    assert _root_state() == before
    lab.close()  # idempotent


@pytest.mark.requires_root
def test_cleanup_when_the_body_raises() -> None:
    if skip_reason():
        pytest.skip(skip_reason() or "")
    names: list[str] = []
    pids: list[int] = []
    with pytest.raises(ZeroDivisionError), Lab() as lab:
        c = cluster(lab, nodes=1)
        names += [ns.name for ns in lab.namespaces.values()]
        pids.append(c.nodes[0].ns.popen(["sleep", "300"]).pid)
        _ = 1 / 0
    assert names
    assert not any(_exists(n) for n in names)
    assert not any(_alive(p) for p in pids)


@pytest.mark.requires_root
def test_cleanup_when_building_fails() -> None:
    if skip_reason():
        pytest.skip(skip_reason() or "")
    lab = Lab()
    a = lab.namespace("a", hostname="a")
    a.set_hosts({"a": "198.18.5.1"})
    b = lab.namespace("b")
    with pytest.raises(ValueError, match="not a lab address"):
        lab.link(a, b, ["198.18.5.1/24"], ["192.0.2.77/24"])
    with pytest.raises(subprocess.CalledProcessError, match="nonexistent0"):
        a.ip("link", "set", "nonexistent0", "up")
    with pytest.raises(ValueError, match="net"):
        a.sysctl("kernel.hostname", "x")
    names = [a.name, b.name]
    lab.close()
    assert not any(_exists(n) for n in names)
    with pytest.raises(RuntimeError, match="closed"):
        lab.namespace("c")


@pytest.mark.requires_root
def test_atexit_safety_net_removes_an_unclosed_lab() -> None:
    if skip_reason():
        pytest.skip(skip_reason() or "")
    code = (
        "from tests.lab.netlab import Lab\n"
        "lab = Lab()\n"
        "ns = lab.namespace('x', hostname='x')\n"
        "ns.set_hosts({'x': '198.18.9.9'})\n"
        "p = ns.popen(['sleep', '300'])\n"
        "print(ns.name, p.pid, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    name, pid = out.split()
    assert not _exists(name)
    assert not _alive(int(pid))


@pytest.mark.requires_root
def test_processes_including_escaped_descendants_are_gone_after_close(lab: Lab) -> None:
    ns = lab.namespace("procs")
    # the grandchild leaves the process group with setsid: only the netns sweep finds it
    shell = ns.popen(
        ["sh", "-c", "setsid sleep 301 & echo $!; exec sleep 300"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdout is not None
    grandchild = int(shell.stdout.readline())
    assert _alive(shell.pid)
    assert _alive(grandchild)
    lab.close()
    assert not _alive(shell.pid)
    assert not _alive(grandchild)


# --- reachability ------------------------------------------------------------------------------


@pytest.fixture
def two_nodes(lab: Lab) -> Cluster:
    return cluster(lab, nodes=2)


@pytest.mark.requires_root
def test_outside_reaches_mgmt_v4_and_v6_but_not_the_fabric(two_nodes: Cluster) -> None:
    c = two_nodes
    n0, n1 = c.nodes
    out = c.outside.ns
    assert n0.mgmt_v6 and n0.fabric_v6
    for addr in (n0.mgmt_v4, n0.mgmt_v6, n0.fabric_v4, n0.fabric_v6):
        n0.ns.tcp_listener(addr, 5555)
    assert out.probe_tcp(n0.mgmt_v4, 5555) == "open"
    assert out.probe_tcp(n0.mgmt_v6, 5555) == "open"
    assert out.probe_tcp(n0.mgmt_v4, 5556) == "refused"
    # fabric is not routed: ICMP unreachable (v4); ICMPv6 is a soft error for a SYN: timeout
    assert out.probe_tcp(n0.fabric_v4, 5555) == "unreachable"
    assert out.probe_tcp(n0.fabric_v6, 5555, timeout=0.5) == "timeout"
    # node to node on the fabric works
    assert n1.ns.probe_tcp(n0.fabric_v4, 5555) == "open"
    assert n1.ns.probe_tcp(n0.fabric_v6, 5555) == "open"


@pytest.mark.requires_root
def test_route_fabric_via_mgmt_exposes_fabric_listeners(lab: Lab) -> None:
    c = cluster(lab, nodes=2, route_fabric_via_mgmt=True)
    out = c.outside.ns
    for node in c.nodes:
        assert node.fabric_v6
        node.ns.tcp_listener(node.fabric_v4, 6000)
        node.ns.tcp_listener(node.fabric_v6, 6000)
        assert out.probe_tcp(node.fabric_v4, 6000) == "open"
        assert out.probe_tcp(node.fabric_v6, 6000) == "open"


@pytest.mark.requires_root
def test_inet_nft_rule_drops_one_port_in_both_families(two_nodes: Cluster) -> None:
    n0 = two_nodes.nodes[0]
    out = two_nodes.outside.ns
    assert n0.mgmt_v6
    for addr in (n0.mgmt_v4, n0.mgmt_v6):
        n0.ns.tcp_listener(addr, 5555)
        n0.ns.tcp_listener(addr, 5556)
    n0.ns.nft("table inet f { chain input { type filter hook input priority 0; tcp dport 5555 drop } }")
    assert out.probe_tcp(n0.mgmt_v4, 5555, timeout=0.5) == "timeout"
    assert out.probe_tcp(n0.mgmt_v6, 5555, timeout=0.5) == "timeout"
    assert out.probe_tcp(n0.mgmt_v4, 5556) == "open"
    assert out.probe_tcp(n0.mgmt_v6, 5556) == "open"
    n0.ns.nft("flush ruleset")
    assert out.probe_tcp(n0.mgmt_v4, 5555) == "open"


@pytest.mark.requires_root
def test_ipv4_only_nft_rule_leaves_ipv6_reachable(two_nodes: Cluster) -> None:
    n0 = two_nodes.nodes[0]
    out = two_nodes.outside.ns
    assert n0.mgmt_v6
    n0.ns.tcp_listener("::", 5555)  # dual-stack listener, as torch binds by default
    n0.ns.nft(
        "table ip f4 {\n"
        "  chain input {\n"
        "    type filter hook input priority 0; policy accept;\n"
        "    tcp dport 5555 drop\n"
        "  }\n"
        "}\n"
    )
    assert out.probe_tcp(n0.mgmt_v4, 5555, timeout=0.5) == "timeout"
    assert out.probe_tcp(n0.mgmt_v6, 5555) == "open"
    assert "table ip f4" in n0.ns.run(["nft", "list", "ruleset"]).stdout


@pytest.mark.requires_root
def test_hostname_resolves_to_the_fabric_address(two_nodes: Cluster) -> None:
    n0, n1 = two_nodes.nodes
    code = (
        "import socket\n"
        "h = socket.gethostname()\n"
        "print(h, socket.gethostbyname(h), socket.gethostbyname('node1-mgmt'))\n"
    )
    got = n0.ns.run([sys.executable, "-c", code]).stdout.split()
    assert got == ["node0", n0.fabric_v4, n1.mgmt_v4]
    env_code = "import os, socket; print(socket.gethostname(), os.environ['NETLAB_X'])"
    proc = n1.ns.popen(
        [sys.executable, "-c", env_code], env={"NETLAB_X": "42"}, stdout=subprocess.PIPE, text=True
    )
    stdout, _ = proc.communicate(timeout=10)
    assert stdout.split() == ["node1", "42"]
    plain = n0.ns.run(["hostname"], hostname=False).stdout.strip()
    assert plain == os.uname().nodename  # without the UTS wrapper: the host's name


@pytest.mark.requires_root
def test_addresses_and_routes(two_nodes: Cluster) -> None:
    n0 = two_nodes.nodes[0]
    assert set(n0.ns.addresses()) == {
        "198.18.0.11/24",
        "2001:db8:18::11/64",
        "198.51.100.11/24",
        "2001:db8:51::11/64",
    }
    assert n0.ns.addresses("mgmt") == ["198.51.100.11/24", "2001:db8:51::11/64"]
    assert two_nodes.outside.ns.addresses() == ["203.0.113.10/24", "2001:db8:203::10/64"]
    with pytest.raises(ValueError):
        n0.ns.add_route("0.0.0.0/0", "198.51.100.1")
    with pytest.raises(ValueError):
        n0.ns.add_route("default", "192.0.2.1")
    n0.ns.popen(
        [sys.executable, "-m", "http.server", "-b", n0.mgmt_v4, "7000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    n0.ns.wait_listening(7000)
    with pytest.raises(TimeoutError):
        n0.ns.wait_listening(7001, timeout=0.2)
    n0.ns.add_route("198.19.0.0/16", "198.18.0.12")
    assert "198.19.0.0/16 via 198.18.0.12" in n0.ns.ip("-4", "route")
