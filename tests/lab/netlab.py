"""Test-only network lab: network namespaces, veths, bridges, nftables and processes.

Every lab object lives in network namespaces that the lab creates under unique names; the root
network namespace is never modified (no interfaces, routes, bridges, sysctls or nft rules).
Every ``ip`` command that configures something runs *inside* a lab namespace (``ip -n NS``);
veth pairs are created from inside one lab namespace with the peer placed straight into the
other (``ip -n A link add X type veth peer name Y netns B``), so no interface ever appears in
the root namespace, not even for a moment.  Only documentation addresses are accepted:
198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32 (anything else, including the
host's own 192.0.2.0/24, raises ``ValueError`` before any command runs).

API
---
``Lab()``                                      context manager owning namespaces and processes
``lab.namespace(role, hostname=None) -> Namespace``   new namespace ``na<pid><rand>-<role>``, lo up,
                                               IPv6 DAD off; ``hostname`` is the node name that
                                               ``run``/``popen`` give processes (own UTS ns)
``lab.link(a, b, addrs_a=(), addrs_b=(), name_a=None, name_b=None) -> (ifname_a, ifname_b)``
                                               veth pair between two lab namespaces, up, addressed
``lab.switch(name) -> Switch``                 bridge ``br-<name>`` in the lab's "switch" namespace
``lab.attach(ns, switch, addrs=(), ifname=None) -> str``   veth from ``ns`` into the bridge
``lab.close()``                                kill processes, delete namespaces and /etc/netns
                                               dirs; idempotent; ``RuntimeError`` on leftovers

``Namespace.name`` / ``.role`` / ``.hostname``
``ns.run(argv, check=True, timeout=30, input=None, env=None, hostname=True) -> CompletedProcess``
                                               ``ip netns exec`` with captured text output;
                                               failures raise ``CommandFailed`` (shows stderr)
``ns.popen(argv, env=None, hostname=True, **popen_kw) -> Popen``   tracked, own session and
                                               process group, killed on ``close``; ``env`` is
                                               *added to* ``os.environ``
``ns.stop(proc, timeout=3.0) -> int``          SIGTERM then SIGKILL the process group; returncode
``ns.ip(*args) -> str``                        ``ip -n <ns> ARGS`` (stdout), for anything else
``ns.add_address(ifname, cidr)``               checked address (IPv6 ``nodad``)
``ns.add_route(dst, via, dev=None)``           ``dst`` a CIDR or ``"default"``/``"default6"``
``ns.nft(ruleset_text)``                       ``nft -f -`` inside the namespace (see ``nft`` doc)
``ns.sysctl(key, value)``                      ``net.*`` keys only, checked not to leak to root
``ns.addresses(ifname=None) -> list[str]``     global-scope addresses as CIDRs
``ns.set_hosts({name: ip})``                   /etc/netns/<ns>/hosts, seen by ``ip netns exec``
``ns.wait_listening(port, timeout=10.0)``      poll ``ss -ltn`` until a TCP listener on ``port``
``ns.tcp_listener(host, port) -> Popen``       plain Python accept-loop server, waits until bound
``ns.probe_tcp(host, port, timeout=1.0) -> str``   "open" | "refused" | "timeout" | "unreachable"
                                               | "error:<errno>", via a real connect() in the ns

``hostname=True`` in run/popen means "the namespace's hostname, if it has one": the process
is started as ``unshare --uts sh -c 'hostname NAME && exec "$@"'`` so ``gethostname()`` returns
the node name; ``hostname=False`` disables this, a string uses that name.

``cluster(lab, nodes=2, ipv6=True, route_fabric_via_mgmt=False) -> Cluster`` (topology below):
``Cluster.nodes`` (``Node``: index, hostname, ns, fabric_if, mgmt_if, fabric_v4, mgmt_v4,
fabric_v6, mgmt_v6, ``addresses()``), ``.outside`` (``Outside``: ns, ifname, v4, v6),
``.router``, ``.fabric`` / ``.mgmt`` (``Switch``), ``.hosts()`` (the name table).
Addresses are bare IPs; v6 fields are ``None`` when ``ipv6=False``.

``check_cidr(cidr)`` / ``check_ip(addr)``       the address guard every helper applies

Fixtures (import them into the test module; the pytest name differs from the Python name so
ruff does not see a redefinition)::

    from tests.lab.netlab import lab_fixture, module_lab_fixture  # noqa: F401

    def test_x(lab): c = cluster(lab) ...          # function-scoped Lab, fixture name "lab"
    def test_y(module_lab): ...                     # module-scoped Lab, fixture name "module_lab"

Both skip with a reason (``skip_reason()``) when not root, when ``ip``/``nft``/``unshare``/``ss``
are missing, or when network namespaces cannot be created.  ``sweep_stale()`` (run once per
session by the fixtures) deletes namespace names and /etc/netns dirs left by lab processes that
no longer exist (e.g. a SIGKILLed pytest); it kills nothing.

Cleanup is layered: ``with Lab()`` / the fixture finalizer / an ``atexit`` hook all call
``close()``.  ``close()`` SIGTERMs then SIGKILLs the process group of every process it started
(only if the leader is still unreaped, so the pid cannot have been reused), then SIGKILLs any
remaining process whose network namespace is one of the lab's own namespaces (descendants that
left the process group; nothing else can live in a namespace with the lab's unique name; the
namespace inode is rechecked immediately before each kill), then deletes the namespaces.

Topology of ``cluster()``
-------------------------
::

                 fabric bridge (switch ns)             mgmt bridge (switch ns)
    nodeI "fabric" 198.18.0.(11+I)/24          nodeI "mgmt" 198.51.100.(11+I)/24
                   2001:db8:18::(11+I)/64                   2001:db8:51::(11+I)/64
                                               router "mgmt" 198.51.100.1/24, 2001:db8:51::1/64
    router "outside" 203.0.113.1/24, 2001:db8:203::1/64  <-veth->  outside "uplink"
                                                    203.0.113.10/24, 2001:db8:203::10/64

(``11+I`` is written in decimal for IPv4 and the same digits for IPv6, e.g. node1 is
198.18.0.12 and 2001:db8:18::12.)  Nodes' default routes (v4 and v6) go via the router's mgmt
address; the outside's default routes go via the router's outside address; the router forwards
v4 and v6 and has no default route.  Node forwarding stays off.  Paths that exist:

* node <-> node on the fabric and on mgmt (same L2 bridge), v4 and v6;
* outside <-> every node's mgmt addresses (routed through the router), v4 and v6;
* outside <-> router addresses; node -> outside (source = mgmt address);
* outside -> node fabric addresses: NOT routed, like a real cluster whose fabric is not
  routed.  The router answers ICMP/ICMPv6 "no route"; ``probe_tcp`` reports "unreachable" for
  IPv4 but "timeout" for IPv6 (the kernel treats ICMPv6 no-route as a soft error for a SYN and
  keeps retrying), so assert "!= 'open'" when the family does not matter;
* with ``route_fabric_via_mgmt=True`` the router also has host routes
  198.18.0.(11+I)/32 via 198.51.100.(11+I) and 2001:db8:18::(11+I)/128 via
  2001:db8:51::(11+I): the packet arrives on the node's *mgmt* interface and Linux's weak host
  model accepts it for the fabric address, so a listener bound only to the fabric IP is
  reachable from outside (replies leave via the default route on mgmt).
* nothing reaches the root namespace or the host's network.

Every node and the outside get a hosts file: ``nodeI`` -> fabric v4, ``nodeI-mgmt`` -> mgmt v4,
``nodeI-fabric6`` / ``nodeI-mgmt6`` -> v6, ``router`` -> 198.51.100.1, ``outside`` ->
203.0.113.10.  Node namespaces have hostname ``nodeI`` so gloo/tensorpipe, which bind the
address their hostname resolves to, bind the fabric IPv4 address.

nft note: nft 1.0.6 (Debian 12) rejects one-line rulesets such as
``table inet f { chain input { ...; tcp dport 5555 drop } }`` ("unexpected '}'"), so ``nft()``
puts a newline before every ``}`` outside quotes when the text is a single line.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ALLOWED_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)

FABRIC_V4 = "198.18.0.0/24"
FABRIC_V6 = "2001:db8:18::/64"
MGMT_V4 = "198.51.100.0/24"
MGMT_V6 = "2001:db8:51::/64"
OUTSIDE_V4 = "203.0.113.0/24"
OUTSIDE_V6 = "2001:db8:203::/64"
ROUTER_MGMT_V4 = "198.51.100.1"
ROUTER_MGMT_V6 = "2001:db8:51::1"
ROUTER_OUTSIDE_V4 = "203.0.113.1"
ROUTER_OUTSIDE_V6 = "2001:db8:203::1"
OUTSIDE_HOST_V4 = "203.0.113.10"
OUTSIDE_HOST_V6 = "2001:db8:203::10"

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
NAME_PREFIX = "na"
_STALE_RE = re.compile(r"^na(\d+)([a-z]{4})-[a-z0-9_]+$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$")
_SYSCTL_RE = re.compile(r"^net\.[A-Za-z0-9_.-]+$")
_UTS_WRAPPER = 'hostname "$0" && exec "$@"'

_LISTENER_PY = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(64)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"netlab\\n")
    except OSError:
        pass
    c.close()
"""

_PROBE_PY = """
import errno, socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(timeout)
try:
    s.connect((host, port))
    print("open")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    unreach = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
    print("unreachable" if e.errno in unreach else f"error:{e.errno}")
"""


class CommandFailed(subprocess.CalledProcessError):
    """A lab command exited non-zero; ``str()`` shows the command and its stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else self.stderr
        return f"{' '.join(map(str, self.cmd))!r} exited {self.returncode}: {err}"


# ---------------------------------------------------------------------------------------------
# guards


def check_cidr(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Parse ``addr/prefix`` and refuse anything outside ``ALLOWED_NETWORKS``."""
    iface = ipaddress.ip_interface(cidr)
    if "/" not in cidr:
        raise ValueError(f"{cidr!r}: give an address with a prefix length, e.g. {cidr}/24")
    _check_ip(iface.ip)
    if not _net_allowed(iface.network):
        raise ValueError(f"{cidr!r}: prefix reaches outside the lab's documentation ranges")
    return iface


def check_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse a bare address and refuse anything outside ``ALLOWED_NETWORKS``."""
    ip = ipaddress.ip_address(addr)
    _check_ip(ip)
    return ip


def _net_allowed(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return any(net.network_address in n and net.broadcast_address in n for n in ALLOWED_NETWORKS)


def _check_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if not any(ip in n for n in ALLOWED_NETWORKS):
        allowed = ", ".join(map(str, ALLOWED_NETWORKS))
        raise ValueError(f"{ip} is not a lab address (allowed: {allowed})")


def _check_ifname(name: str) -> str:
    if not _IFNAME_RE.match(name):
        raise ValueError(f"bad interface name {name!r} (1-15 chars of [A-Za-z0-9_.-])")
    return name


def _cmd(argv: Sequence[str], *, timeout: float = 30.0, input: str | None = None) -> str:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, input=input, check=False
    )
    if proc.returncode != 0:
        raise CommandFailed(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc.stdout


def _netns_inode(name: str) -> int | None:
    try:
        return (NETNS_RUN_DIR / name).stat().st_ino
    except OSError:
        return None


def _pids_in_netns(inode: int) -> list[int]:
    me = os.getpid()
    want = f"net:[{inode}]"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/net") == want:
                pids.append(int(entry))
    return pids


def _kill_group(proc: subprocess.Popen[Any], sig: int) -> None:
    # Only while the leader is unreaped: its pid (== pgid) cannot have been reused.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _nft_one_line_fix(text: str) -> str:
    if "\n" in text.strip():
        return text
    out, quoted = [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "}" and not quoted:
            out.append("\n")
        out.append(ch)
    return "".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# namespaces


class Namespace:
    """One lab network namespace.  Create with ``Lab.namespace``."""

    def __init__(self, lab: Lab, role: str, name: str, hostname: str | None) -> None:
        self.lab = lab
        self.role = role
        self.name = name
        self.hostname = hostname
        self.etc_dir: Path | None = None
        self.procs: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    # -- commands ----------------------------------------------------------------------------

    def _argv(self, argv: Sequence[str], hostname: str | bool) -> list[str]:
        args = [str(a) for a in argv]
        if not args:
            raise ValueError("empty argv")
        name = self.hostname if hostname is True else (hostname or None)
        if name:
            if not _HOSTNAME_RE.match(name):
                raise ValueError(f"bad hostname {name!r}")
            args = ["unshare", "--uts", "--", "sh", "-c", _UTS_WRAPPER, name, *args]
        return ["ip", "netns", "exec", self.name, *args]

    def ip(self, *args: str, timeout: float = 30.0) -> str:
        """Run ``ip -n <ns> ARGS`` (always inside this namespace) and return stdout."""
        self.lab._check_open()
        return _cmd(["ip", "-n", self.name, *args], timeout=timeout)

    def run(
        self,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        hostname: str | bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace, capture text output, wait up to ``timeout`` s."""
        self.lab._check_open()
        full = self._argv(argv, hostname)
        proc = subprocess.run(
            full,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, **env} if env else None,
            check=False,
        )
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, full, proc.stdout, proc.stderr)
        return proc

    def popen(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        hostname: str | bool = True,
        **popen_kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace in its own session; tracked, killed on close.

        ``env`` is merged over ``os.environ``.  Other keywords go to ``subprocess.Popen``
        (``stdout=subprocess.PIPE``, ``text=True``, ``cwd=...``); the session/process-group
        keywords are reserved because ``close()`` kills by process group.
        """
        self.lab._check_open()
        for reserved in ("start_new_session", "process_group", "preexec_fn"):
            if reserved in popen_kw:
                raise ValueError(f"{reserved} is managed by the lab")
        proc: subprocess.Popen[Any] = subprocess.Popen(
            self._argv(argv, hostname),
            env={**os.environ, **env} if env else None,
            start_new_session=True,
            **popen_kw,
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 3.0) -> int:
        """SIGTERM the process group of ``proc``, SIGKILL after ``timeout`` s; returncode."""
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout)
        # Group members that outlive the leader are left to close()'s namespace sweep: once the
        # leader is reaped, signalling its pgid could hit an unrelated, reused id.
        return proc.returncode  # pipes stay open for reading; close() closes them

    # -- configuration -----------------------------------------------------------------------

    def add_address(self, ifname: str, cidr: str) -> None:
        """Add ``cidr`` to ``ifname`` (IPv6 with ``nodad``: usable immediately)."""
        iface = check_cidr(cidr)
        extra = ["nodad"] if iface.version == 6 else []
        self.ip("addr", "add", str(iface), "dev", _check_ifname(ifname), *extra)

    def add_route(self, dst: str, via: str, dev: str | None = None) -> None:
        """Add a route; ``dst`` is a lab CIDR, ``"default"`` (v4) or ``"default6"`` (v6)."""
        gw = check_ip(via)
        if dst in ("default", "default6"):
            if (dst == "default6") != (gw.version == 6):
                raise ValueError(f"{dst} via {via}: address family mismatch")
            target = "default"
        else:
            net = ipaddress.ip_network(dst, strict=False)
            if not _net_allowed(net):
                raise ValueError(f"route to {dst} leaves the lab's documentation ranges")
            if net.version != gw.version:
                raise ValueError(f"{dst} via {via}: address family mismatch")
            target = str(net)
        args = ["-6" if gw.version == 6 else "-4", "route", "add", target, "via", str(gw)]
        if dev:
            args += ["dev", _check_ifname(dev)]
        self.ip(*args)

    def nft(self, ruleset_text: str) -> None:
        """Load ``ruleset_text`` with ``nft -f -`` inside the namespace (atomic per call).

        Single-line text gets a newline before each unquoted ``}`` (nft 1.0.6 needs it).
        ``ns.nft("flush ruleset")`` removes everything again.
        """
        self.lab._check_open()
        text = _nft_one_line_fix(ruleset_text)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.name, "nft", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise CommandFailed(proc.returncode, ["nft", "-f", "-", text], proc.stdout, proc.stderr)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set a ``net.*`` sysctl inside the namespace; raises if the root value changed."""
        if not _SYSCTL_RE.match(key) or ".." in key:
            raise ValueError(f"{key!r}: only per-namespace net.* sysctls may be set")
        root_path = Path("/proc/sys") / key.replace(".", "/")
        before = _read_or_none(root_path)
        self.run(["sysctl", "-q", "-w", f"{key}={value}"], hostname=False)
        after = _read_or_none(root_path)
        if before != after:
            with contextlib.suppress(OSError):
                root_path.write_text(before or "")
            raise RuntimeError(f"sysctl {key} is not per network namespace; root value restored")

    def addresses(self, ifname: str | None = None) -> list[str]:
        """Global-scope addresses (``addr/prefix``) of the namespace or of one interface."""
        args = ["-j", "addr", "show"] + (["dev", _check_ifname(ifname)] if ifname else [])
        out = []
        for link in json.loads(self.ip(*args) or "[]"):
            for a in link.get("addr_info", []):
                if a.get("scope") == "global":
                    out.append(f"{a['local']}/{a['prefixlen']}")
        return out

    def set_hosts(self, entries: Mapping[str, str]) -> None:
        """Write /etc/netns/<ns>/hosts (``name -> ip``) seen by every ``ip netns exec``."""
        self.lab._check_open()
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for name, addr in entries.items():
            if not _HOSTNAME_RE.match(name):
                raise ValueError(f"bad host name {name!r}")
            lines.append(f"{check_ip(addr)}\t{name}")
        if self.etc_dir is None:
            self.etc_dir = self.lab._make_etc_dir(self.name)
        (self.etc_dir / "hosts").write_text("\n".join(lines) + "\n")

    # -- helpers for tests -------------------------------------------------------------------

    def wait_listening(self, port: int, timeout: float = 10.0) -> None:
        """Poll ``ss -Hltn`` in the namespace until something listens on TCP ``port``."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.run(["ss", "-Hltn", f"sport = :{int(port)}"], hostname=False).stdout
            if out.strip():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on tcp port {port} in {self.name}")
            time.sleep(0.05)

    def tcp_listener(self, host: str, port: int, timeout: float = 10.0) -> subprocess.Popen[Any]:
        """Start a Python TCP server bound to ``host:port``; returns once it listens."""
        if host not in ("0.0.0.0", "::"):
            check_ip(host)
        proc = self.popen(
            [sys.executable, "-c", _LISTENER_PY, host, str(int(port))],
            hostname=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"listener {host}:{port} in {self.name} died: {err}")
            out = self.run(["ss", "-Hltn", f"sport = :{int(port)}"], hostname=False).stdout
            if out.strip():
                return proc
            if time.monotonic() > deadline:
                raise TimeoutError(f"listener {host}:{port} in {self.name} did not bind")
            time.sleep(0.02)

    def probe_tcp(self, host: str, port: int, timeout: float = 1.0) -> str:
        """connect() from inside the namespace: open|refused|timeout|unreachable|error:N."""
        check_ip(host)
        out = self.run(
            [sys.executable, "-c", _PROBE_PY, host, str(int(port)), str(timeout)],
            hostname=False,
            timeout=timeout + 15,
        ).stdout
        return out.strip()


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@dataclass(frozen=True)
class Switch:
    """A bridge ``bridge`` inside the lab's switch namespace ``ns``."""

    name: str
    bridge: str
    ns: Namespace


# ---------------------------------------------------------------------------------------------
# the lab


class Lab:
    """Owner of a set of uniquely named namespaces; see the module docstring."""

    def __init__(self) -> None:
        rand = "".join(random.choices(string.ascii_lowercase, k=4))
        self.prefix = f"{NAME_PREFIX}{os.getpid()}{rand}"
        self.namespaces: dict[str, Namespace] = {}
        self.switches: dict[str, Switch] = {}
        self._switch_ns: Namespace | None = None
        self._counter = 0
        self._closed = False
        self._etc_created = False
        atexit.register(self._atexit)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("lab is closed")

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    # -- building ----------------------------------------------------------------------------

    def namespace(self, role: str, hostname: str | None = None) -> Namespace:
        """Create namespace ``<prefix>-<role>``: lo up, IPv6 DAD off, tracked for close()."""
        self._check_open()
        if not _ROLE_RE.match(role):
            raise ValueError(f"bad role {role!r} (lowercase letters, digits, _; <= 24 chars)")
        if role in self.namespaces:
            raise ValueError(f"role {role!r} already exists in this lab")
        if hostname is not None and not _HOSTNAME_RE.match(hostname):
            raise ValueError(f"bad hostname {hostname!r}")
        name = f"{self.prefix}-{role}"
        _cmd(["ip", "netns", "add", name])
        ns = Namespace(self, role, name, hostname)
        self.namespaces[role] = ns  # tracked before anything else can fail
        ns.run(
            [
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
            hostname=False,
        )
        ns.ip("link", "set", "lo", "up")
        # Name lookups inside the lab never leave the machine: `ip netns exec` bind-mounts
        # this resolv.conf, so a name missing from the hosts file fails against the
        # namespace's own loopback instead of reaching the host's resolver.
        ns.etc_dir = self._make_etc_dir(name)
        (ns.etc_dir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        return ns

    def link(
        self,
        a: Namespace,
        b: Namespace,
        addrs_a: Iterable[str] = (),
        addrs_b: Iterable[str] = (),
        name_a: str | None = None,
        name_b: str | None = None,
    ) -> tuple[str, str]:
        """Veth pair between ``a`` and ``b`` (both up, addressed); returns the two names."""
        self._own(a)
        self._own(b)
        addrs_a, addrs_b = list(addrs_a), list(addrs_b)
        for c in (*addrs_a, *addrs_b):
            check_cidr(c)
        n = self._next()
        name_a = _check_ifname(name_a or f"v{n}-{b.role}"[:15])
        name_b = _check_ifname(name_b or f"v{n}-{a.role}"[:15])
        a.ip("link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", b.name)
        a.ip("link", "set", name_a, "up")
        b.ip("link", "set", name_b, "up")
        for c in addrs_a:
            a.add_address(name_a, c)
        for c in addrs_b:
            b.add_address(name_b, c)
        return name_a, name_b

    def switch(self, name: str) -> Switch:
        """Bridge ``br-<name>`` in the lab's switch namespace (created on first use)."""
        self._check_open()
        if not re.match(r"^[a-z0-9]{1,12}$", name):
            raise ValueError(f"bad switch name {name!r} ([a-z0-9], <= 12 chars)")
        if name in self.switches:
            raise ValueError(f"switch {name!r} already exists")
        if self._switch_ns is None:
            sw = self.namespace("switch")
            self._switch_ns = sw
            sw.run(
                [
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
                hostname=False,
            )
        bridge = f"br-{name}"
        sw = self._switch_ns
        sw.ip("link", "add", bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        sw.ip("link", "set", bridge, "up")
        s = Switch(name, bridge, sw)
        self.switches[name] = s
        return s

    def attach(
        self, ns: Namespace, switch: Switch, addrs: Iterable[str] = (), ifname: str | None = None
    ) -> str:
        """Veth from ``ns`` (named ``ifname``) into ``switch``'s bridge; returns ``ifname``."""
        self._own(ns)
        if self.switches.get(switch.name) is not switch:
            raise ValueError(f"{switch!r} does not belong to this lab")
        addrs = list(addrs)
        for c in addrs:
            check_cidr(c)
        n = self._next()
        ifname = _check_ifname(ifname or f"{switch.name}{n}"[:15])
        port = _check_ifname(f"p{n}-{ns.role}"[:15])
        ns.ip("link", "add", ifname, "type", "veth", "peer", "name", port, "netns", switch.ns.name)
        switch.ns.ip("link", "set", port, "master", switch.bridge)
        switch.ns.ip("link", "set", port, "up")
        ns.ip("link", "set", ifname, "up")
        for c in addrs:
            ns.add_address(ifname, c)
        return ifname

    def _own(self, ns: Namespace) -> None:
        self._check_open()
        if self.namespaces.get(ns.role) is not ns:
            raise ValueError(f"{ns!r} does not belong to this lab")

    def _make_etc_dir(self, name: str) -> Path:
        if not NETNS_ETC_DIR.exists():
            NETNS_ETC_DIR.mkdir(mode=0o755, exist_ok=True)
            self._etc_created = True
        d = NETNS_ETC_DIR / name
        d.mkdir(mode=0o755)
        return d

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the lab's processes, delete its namespaces and /etc/netns dirs (idempotent)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._atexit)
        errors: list[str] = []
        nss = list(self.namespaces.values())
        procs = [p for ns in nss for p in ns.procs]
        for p in procs:
            _kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            _kill_group(p, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                errors.append(f"pid {p.pid} survived SIGKILL")
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for ns in nss:
            errors += _kill_netns_stragglers(ns.name)
            try:
                _cmd(["ip", "netns", "del", ns.name])
            except (CommandFailed, subprocess.TimeoutExpired) as e:
                if (NETNS_RUN_DIR / ns.name).exists():
                    errors.append(f"cannot delete namespace {ns.name}: {e}")
            if ns.etc_dir is not None:
                shutil.rmtree(ns.etc_dir, ignore_errors=True)
                if ns.etc_dir.exists():
                    errors.append(f"cannot remove {ns.etc_dir}")
        if self._etc_created:
            with contextlib.suppress(OSError):
                NETNS_ETC_DIR.rmdir()  # only if empty: another lab may be using it
        if errors:
            raise RuntimeError("lab cleanup incomplete: " + "; ".join(errors))

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _kill_netns_stragglers(name: str, timeout: float = 3.0) -> list[str]:
    inode = _netns_inode(name)
    if inode is None:
        return []
    want = f"net:[{inode}]"
    deadline = time.monotonic() + timeout
    while pids := _pids_in_netns(inode):
        for pid in pids:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/net") == want:  # still ours right now
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return [f"processes {pids} still in {name}"]
        time.sleep(0.02)
    return []


def sweep_stale() -> list[str]:
    """Delete lab namespaces and /etc/netns dirs whose creating pid is gone; kills nothing.

    Returns the names removed.  Processes a dead lab left running keep their (now anonymous)
    namespace alive; they are not touched.
    """
    removed = []
    names: set[str] = set()
    for d in (NETNS_RUN_DIR, NETNS_ETC_DIR):
        with contextlib.suppress(OSError):
            names.update(os.listdir(d))
    for name in sorted(names):
        m = _STALE_RE.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        if (NETNS_RUN_DIR / name).exists():
            with contextlib.suppress(CommandFailed, subprocess.TimeoutExpired):
                _cmd(["ip", "netns", "del", name])
        shutil.rmtree(NETNS_ETC_DIR / name, ignore_errors=True)
        removed.append(name)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# cluster topology


@dataclass(frozen=True)
class Node:
    """One compute node; addresses are bare IPs (prefixes: /24 and /64)."""

    index: int
    hostname: str
    ns: Namespace
    fabric_if: str
    mgmt_if: str
    fabric_v4: str
    mgmt_v4: str
    fabric_v6: str | None
    mgmt_v6: str | None

    def addresses(self) -> list[str]:
        """All of the node's lab addresses (fabric and mgmt, v4 then v6)."""
        addrs = [self.fabric_v4, self.mgmt_v4, self.fabric_v6, self.mgmt_v6]
        return [a for a in addrs if a]


@dataclass(frozen=True)
class Outside:
    """The vantage namespace outside the cluster."""

    ns: Namespace
    ifname: str
    v4: str
    v6: str | None


@dataclass(frozen=True)
class Cluster:
    """Result of ``cluster()``; see the module docstring for addresses and paths."""

    nodes: tuple[Node, ...]
    outside: Outside
    router: Namespace
    fabric: Switch
    mgmt: Switch
    ipv6: bool
    route_fabric_via_mgmt: bool

    def hosts(self) -> dict[str, str]:
        """The name -> address table written into every node's and the outside's hosts."""
        table: dict[str, str] = {}
        for n in self.nodes:
            table[n.hostname] = n.fabric_v4
            table[f"{n.hostname}-mgmt"] = n.mgmt_v4
            if n.fabric_v6 and n.mgmt_v6:
                table[f"{n.hostname}-fabric6"] = n.fabric_v6
                table[f"{n.hostname}-mgmt6"] = n.mgmt_v6
        table["router"] = ROUTER_MGMT_V4
        table["outside"] = self.outside.v4
        return table


def cluster(lab: Lab, nodes: int = 2, ipv6: bool = True, route_fabric_via_mgmt: bool = False) -> Cluster:
    """Build the compute-node / router / outside topology described in the module docstring."""
    if not 1 <= nodes <= 80:
        raise ValueError("nodes must be between 1 and 80")
    fabric = lab.switch("fabric")
    mgmt = lab.switch("mgmt")

    router = lab.namespace("router")
    lab.attach(
        router,
        mgmt,
        [f"{ROUTER_MGMT_V4}/24"] + ([f"{ROUTER_MGMT_V6}/64"] if ipv6 else []),
        ifname="mgmt",
    )
    outside_ns = lab.namespace("outside")
    _, out_if = lab.link(
        router,
        outside_ns,
        [f"{ROUTER_OUTSIDE_V4}/24"] + ([f"{ROUTER_OUTSIDE_V6}/64"] if ipv6 else []),
        [f"{OUTSIDE_HOST_V4}/24"] + ([f"{OUTSIDE_HOST_V6}/64"] if ipv6 else []),
        name_a="outside",
        name_b="uplink",
    )
    outside_ns.add_route("default", ROUTER_OUTSIDE_V4)
    forwarding = ["net.ipv4.ip_forward=1"]
    if ipv6:
        outside_ns.add_route("default6", ROUTER_OUTSIDE_V6)
        forwarding.append("net.ipv6.conf.all.forwarding=1")
    router.run(["sysctl", "-q", "-w", *forwarding], hostname=False)
    outside = Outside(outside_ns, out_if, OUTSIDE_HOST_V4, OUTSIDE_HOST_V6 if ipv6 else None)

    built = []
    for i in range(nodes):
        h = 11 + i
        name = f"node{i}"
        ns = lab.namespace(name, hostname=name)
        f4, m4 = f"198.18.0.{h}", f"198.51.100.{h}"
        f6, m6 = (f"2001:db8:18::{h}", f"2001:db8:51::{h}") if ipv6 else (None, None)
        lab.attach(ns, fabric, [f"{f4}/24"] + ([f"{f6}/64"] if f6 else []), ifname="fabric")
        lab.attach(ns, mgmt, [f"{m4}/24"] + ([f"{m6}/64"] if m6 else []), ifname="mgmt")
        ns.add_route("default", ROUTER_MGMT_V4)
        if ipv6:
            ns.add_route("default6", ROUTER_MGMT_V6)
        if route_fabric_via_mgmt:
            router.add_route(f"{f4}/32", m4)
            if f6 and m6:
                router.add_route(f"{f6}/128", m6)
        built.append(Node(i, name, ns, "fabric", "mgmt", f4, m4, f6, m6))

    c = Cluster(tuple(built), outside, router, fabric, mgmt, ipv6, route_fabric_via_mgmt)
    table = c.hosts()
    for n in c.nodes:
        n.ns.set_hosts(table)
    outside_ns.set_hosts(table)
    return c


# ---------------------------------------------------------------------------------------------
# pytest integration


@cache
def skip_reason() -> str | None:
    """Why lab tests cannot run here (``None`` if they can).  Probes netns creation once."""
    if os.geteuid() != 0:
        return "netlab requires root (network namespaces)"
    for tool in ("ip", "nft", "unshare", "ss", "sysctl"):
        if shutil.which(tool) is None:
            return f"netlab requires `{tool}` on PATH"
    probe = f"{NAME_PREFIX}{os.getpid()}prbe-probe"
    try:
        _cmd(["ip", "netns", "add", probe])
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as e:
        return f"netlab cannot create network namespaces: {e}"
    try:
        _cmd(["ip", "netns", "exec", probe, "nft", "list", "ruleset"])
    except (CommandFailed, OSError, subprocess.TimeoutExpired) as e:
        return f"netlab cannot use nftables inside a namespace: {e}"
    finally:
        with contextlib.suppress(CommandFailed, OSError, subprocess.TimeoutExpired):
            _cmd(["ip", "netns", "del", probe])
    return None


@cache
def _sweep_once() -> None:
    sweep_stale()


def _lab_or_skip() -> Lab:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    _sweep_once()
    return Lab()


@pytest.fixture(name="lab")
def lab_fixture() -> Iterator[Lab]:
    """A fresh ``Lab`` per test, closed (processes killed, namespaces deleted) afterwards."""
    lab = _lab_or_skip()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(name="module_lab", scope="module")
def module_lab_fixture() -> Iterator[Lab]:
    """A ``Lab`` shared by one test module (build a cluster once, reuse it across tests)."""
    lab = _lab_or_skip()
    try:
        yield lab
    finally:
        lab.close()
