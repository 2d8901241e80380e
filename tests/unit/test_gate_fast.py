"""The gate reads listeners first and process facts only where they can change its answer,
and its answer is the one the probe's full inventory gave (the reference below is the gate as
it was: inventory.collect, then stale_listeners and verdict_reasons).

No sockets: a recorded /proc (tests/unit/fakeproc.py) holds the processes, and their network
namespace is one the gate cannot enter, so both paths read its listeners from that /proc's
tcp tables, as they do for any namespace without root. This host's own namespace is read as
well, but no process of the recorded /proc holds its sockets, so nothing there has an owner.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from netaudit import gate, gatescan, inventory, sigcache, signatures, slurmjobs
from netaudit.audit import verdict
from netaudit.config import GateSettings
from tests.unit.fakeproc import FakeProc, torch_maps

NS = 7  # a network namespace inode that no real one has: it is never entered
INIT, STORE, OTHER_STORE, GLOO, STEPD, SSHD = 4100001, 4100100, 4100200, 4100300, 4100400, 4100500
SETTINGS = GateSettings()
SIGNATURES = signatures.load()
ROOT = Path(__file__).parents[2]


class Node:
    """Processes in namespace NS, and the listeners and IPv6 addresses NS has."""

    def __init__(self, root: Path) -> None:
        self.fake = FakeProc(root / "proc")
        self.proc = str(root / "proc")
        self.rows: list[tuple[str, int, int]] = []
        self.addresses: list[str] = []
        self.fake.process(INIT, comm="systemd", cmdline=("/sbin/init",), ppid=0, netns=NS)
        self._write()

    def process(self, pid: int, **facts: object) -> None:
        self.fake.process(pid, netns=NS, **facts)  # type: ignore[arg-type]

    def listen(self, address: str, port: int, inode: int) -> None:
        self.rows.append((address, port, inode))
        self._write()

    def address(self, text: str) -> None:
        self.addresses.append(text)
        self._write()

    def _write(self) -> None:
        net = Path(self.proc) / str(INIT) / "net"
        net.mkdir(exist_ok=True)
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
            lines = [header]
            for index, (address, port, inode) in enumerate(self.rows):
                if (":" in address) != (family == socket.AF_INET6):
                    continue
                packed = socket.inet_pton(family, address)
                words = "".join(f"{word:08X}" for word in struct.unpack(f"={len(packed) // 4}I", packed))
                remote = "0" * len(words)
                lines.append(
                    f"   {index}: {words}:{port:04X} {remote}:0000 0A 00000000:00000000 00:00000000 "
                    f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
                )
            (net / name).write_text("".join(lines))
        (net / "if_inet6").write_text(
            "00000000000000000000000000000001 01 80 10 80       lo\n"
            + "".join(
                f"{socket.inet_pton(socket.AF_INET6, a).hex()} 02 40 00 80     eth0\n" for a in self.addresses
            )
        )


def torch_store(node: Node, pid: int, inode: int, port: int, **facts: object) -> None:
    """A process hosting a TCPStore on [::]:port, as torch 2.x leaves one behind."""
    node.process(pid, comm="python3", cmdline=("python3", "train.py"), maps=torch_maps(),
                 threads={"python3": 1, "pt_tcpstore_uv": 1}, sockets=(inode,), **facts)  # fmt: skip
    node.listen("::", port, inode)


def reference(
    node: Node, environ: dict[str, str] | None = None, template: str | None = None
) -> gate.GateResult:
    """The gate before this change: every listener of the node, classified, then judged."""
    found = inventory.collect(SIGNATURES, proc=node.proc)
    active = slurmjobs.active_jobs(node.proc)
    reasons = gate.stale_listeners(found, active, node.proc)
    warnings: list[str] = []
    if template:
        read = verdict.read(verdict.path_for(template, gate.node_name(environ or {})))
        failing, notes = gate.verdict_reasons(found, read.exposures, active, node.proc)
        reasons += [reason for reason in failing if reason not in reasons]
        warnings += notes
    if not reasons:
        return gate.GateResult(True, "", (), tuple(warnings))
    more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return gate.GateResult(False, f"netaudit: {reasons[0]}{more}", tuple(reasons), tuple(warnings))


def judge(node: Node, environ: dict[str, str] | None = None, template: str | None = None) -> gate.GateResult:
    result = gate.evaluate(SIGNATURES, SETTINGS, environ or {}, template, proc=node.proc)
    assert result == reference(node, environ, template)
    return result


def classified(node: Node) -> frozenset[int]:
    """The processes the gate classified: the only ones whose maps and threads it read."""
    return gatescan.collect(SIGNATURES, (), node.proc).classified_pids


def test_leftover_stores_fail_the_node_in_the_probes_order(tmp_path: Path) -> None:
    # Given two leftover stores, the later port first in pid order, and a loopback listener
    node = Node(tmp_path)
    torch_store(node, STORE, 3900000001, 39500)
    torch_store(node, OTHER_STORE, 3900000002, 39400)
    node.listen("127.0.0.1", 39501, 3900000003)
    result = judge(node)
    assert result.details == (
        f"stale exposed tcpstore [::]:39400 (pid {OTHER_STORE} python3, user root; not part of any Slurm job)",
        f"stale exposed tcpstore [::]:39500 (pid {STORE} python3, user root; not part of any Slurm job)",
    )
    assert result.line.endswith("(+1 more)")


def test_a_running_jobs_store_passes_without_classifying_anything(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.process(STEPD, comm="slurmstepd", cmdline=("slurmstepd: [4242.0]",))
    torch_store(node, STORE, 3900000001, 39500, environ={"SLURM_JOB_ID": "4242"})
    result = judge(node)
    assert result.is_pass
    assert STORE not in classified(node)  # its job was enough


def test_a_finished_jobs_store_fails_naming_the_job(tmp_path: Path) -> None:
    node = Node(tmp_path)
    torch_store(node, STORE, 3900000001, 39500, environ={"SLURM_JOB_ID": "4242"})
    result = judge(node)
    assert result.details == (
        f"stale exposed tcpstore [::]:39500 (pid {STORE} python3, user root; slurm job 4242 is not active here)",
    )


def test_a_slurmstepd_ancestor_makes_it_the_jobs(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.process(STEPD, comm="slurmstepd", cmdline=("slurmstepd: [77.batch]",))
    torch_store(node, STORE, 3900000001, 39500, ppid=STEPD)
    result = judge(node)
    assert result.is_pass
    assert STORE not in classified(node)


def test_thread_capacity_is_shared_with_the_process_loopback_listeners(tmp_path: Path) -> None:
    # Given a Gloo-like process with one gloo_tcp_loop thread and two specific binds: the
    # loopback one comes first in port order and takes the thread, so the exposed one is not
    # Gloo's but an unidentified torch listener (only classifying the whole process says so)
    node = Node(tmp_path)
    node.process(GLOO, comm="python3", maps=torch_maps(), threads={"python3": 1, "gloo_tcp_loop": 1},
                 sockets=(3900000011, 3900000012))  # fmt: skip
    node.listen("127.0.0.1", 39600, 3900000011)
    node.listen("198.18.0.7", 39601, 3900000012)
    result = judge(node)
    assert result.details == (
        f"stale exposed torch-unknown 198.18.0.7:39601 (pid {GLOO} python3, user root; not part of any Slurm job)",
    )


def test_a_process_that_is_not_torch_is_read_but_never_fails(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.process(SSHD, comm="sshd", cmdline=("sshd: /usr/sbin/sshd -D",), sockets=(3900000021,))
    node.listen("0.0.0.0", 39022, 3900000021)
    result = judge(node)
    assert result.is_pass
    view = gatescan.collect(SIGNATURES, (), node.proc)
    assert SSHD in view.classified_pids  # read and classified, then left out of what is judged
    assert [listener for listener in view.listeners if listener.pid == SSHD] == []


def test_nothing_exposed_needs_no_signature_and_no_owner(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.process(GLOO, comm="python3", maps=torch_maps(), threads={"python3": 1, "gloo_tcp_loop": 1},
                 sockets=(3900000011,))  # fmt: skip
    node.listen("127.0.0.1", 39600, 3900000011)
    node.listen("fe80::1", 39601, 3900000012)
    result = judge(node)
    assert result.is_pass
    view = gatescan.collect(SIGNATURES, (), node.proc)
    assert [listener for listener in view.listeners if listener.netns == NS] == []
    assert GLOO not in view.classified_pids


def _verdict(tmp_path: Path, exposures: list[tuple[str, int]]) -> str:
    document = {
        "kind": verdict.KIND,
        "schema_version": verdict.SCHEMA_VERSION,
        "host": "node01",
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "critical": [],
        "exposures": [
            {
                "rule_id": "NA001",
                "service": "tcpstore",
                "address": address,
                "port": port,
                "source": "203.0.113.9",
            }
            for address, port in exposures
        ],
        "is_incomplete": False,
    }
    (tmp_path / "verdict-node01.json").write_text(json.dumps(document))
    return str(tmp_path / "verdict-%h.json")


def test_the_verdict_is_judged_against_the_same_listeners(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.address("2001:db8:18::1")
    node.process(STEPD, comm="slurmstepd", cmdline=("slurmstepd: [4242.0]",))
    torch_store(node, STORE, 3900000001, 39500, environ={"SLURM_JOB_ID": "4242"})
    node.process(GLOO, comm="python3", maps=torch_maps(), threads={"python3": 1, "gloo_tcp_loop": 1},
                 sockets=(3900000011, 3900000012))  # fmt: skip
    node.listen("127.0.0.1", 39600, 3900000011)
    node.listen("198.18.0.7", 39601, 3900000012)
    node.listen("198.18.0.1", 39700, 3900000031)  # held by no process we can see
    template = _verdict(
        tmp_path,
        [
            ("2001:db8:18::1", 39500),  # the store, through its wildcard: the running job's
            ("198.18.0.1", 39500),  # IPv4 at a dual-stack socket whose v6only procfs cannot tell
            ("2001:db8:99::9", 39500),  # not an address of that namespace
            ("198.18.0.1", 39700),
            ("198.18.0.7", 39601),
            ("198.18.0.7", 39602),  # closed since
        ],
    )
    result = judge(node, {"SLURMD_NODENAME": "node01"}, template)
    assert result.details == (
        f"stale exposed torch-unknown 198.18.0.7:39601 (pid {GLOO} python3, user root; not part of any Slurm job)",
        "unresolved critical exposure: NA001 tcpstore 198.18.0.7:39601 from 203.0.113.9 "
        f"(pid {GLOO} python3, user root; not part of any Slurm job)",
    )
    assert result.warnings == (
        "critical exposure NA001 tcpstore [2001:db8:18::1]:39500 from 203.0.113.9 belongs to running slurm job 4242",
        "critical exposure NA001 tcpstore 198.18.0.1:39700 from 203.0.113.9: its owner cannot be seen",
    )


def test_a_verdict_too_old_to_judge_still_reads_no_process_for_it(tmp_path: Path) -> None:
    node = Node(tmp_path)
    template = _verdict(tmp_path, [("198.18.0.1", 39700)])
    path = tmp_path / "verdict-node01.json"
    document = json.loads(path.read_text())
    document["generated_at"] = "2020-01-01T00:00:00Z"
    path.write_text(json.dumps(document))
    node.listen("198.18.0.1", 39700, 3900000031)
    strict = GateSettings(fail_on_stale_verdict=True)
    result = gate.evaluate(SIGNATURES, strict, {"SLURMD_NODENAME": "node01"}, template, proc=node.proc)
    [reason] = result.details
    assert reason.startswith(f"verdict {path} is ") and reason.endswith("h old (limit 48.0 h)")
    assert result.warnings == ()  # the exposure's listener, unowned, was not looked at


JUPYTER, ZMQ, NCCL, LOOKALIKE = 4100600, 4100700, 4100800, 4100900


def test_processes_that_map_no_library_keep_every_rule_that_needs_none(tmp_path: Path) -> None:
    # Given owners that map no torch library but that rules needing none recognise (a
    # Jupyter server by its name, a ZeroMQ process by its I/O thread), one that maps only
    # NCCL, one whose maps name "libtorch" in a folder but no library the globs match,
    # and a leftover store
    node = Node(tmp_path)
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    node.process(JUPYTER, comm="jupyter-lab", maps=(libc,), sockets=(3900000041,))
    node.listen("0.0.0.0", 39888, 3900000041)
    node.process(ZMQ, maps=(libc,), threads={"python3": 1, "ZMQbg/IO/0": 1}, sockets=(3900000051,))
    node.listen("198.18.0.7", 39555, 3900000051)
    node.process(NCCL, maps=(libc, "/opt/nccl/lib/libnccl.so.2"), sockets=(3900000061,))
    node.listen("0.0.0.0", 28028, 3900000061)
    node.process(LOOKALIKE, maps=(libc, "/opt/libtorch/lib/libc10.so", "/opt/libtorch/share/libtorch.txt"),
                 sockets=(3900000071,))  # fmt: skip
    node.listen("0.0.0.0", 39777, 3900000071)
    torch_store(node, STORE, 3900000001, 39500)
    # When the gate judges them, each by the rules it can fit
    result = judge(node)
    # Then it answers as the probe's full classification does, naming each service
    services = [detail.split()[2] for detail in result.details]
    assert services == ["nccl-ras", "tcpstore", "zeromq", "jupyter-server"]
    assert {JUPYTER, ZMQ, NCCL, LOOKALIKE, STORE} <= classified(node)


def test_a_maps_text_read_in_part_is_left_to_the_process_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given maps longer than the gate reads for its quick look (its first line names no
    # library), the store's libraries are still asked of its ProcessFacts
    node = Node(tmp_path)
    torch_store(node, STORE, 3900000001, 39500)
    monkeypatch.setattr(gatescan, "_MAPS_LIMIT_BYTES", 16)
    result = judge(node)
    assert result.details == (
        f"stale exposed tcpstore [::]:39500 (pid {STORE} python3, user root; not part of any Slurm job)",
    )


def test_with_no_job_active_the_answer_still_names_each_owners_job(tmp_path: Path) -> None:
    # Given no slurmstepd at all (so no owner's job is looked up to decide), a store whose
    # job only its cgroup names, and a verdict exposure at an unrecognised process's port
    node = Node(tmp_path)
    torch_store(
        node,
        STORE,
        3900000001,
        39500,
        cgroup="0::/system.slice/slurmstepd.scope/job_4243/step_0/user/task_0\n",
    )
    node.process(SSHD, comm="sshd", cmdline=("sshd: /usr/sbin/sshd -D",), sockets=(3900000021,))
    node.listen("198.18.0.1", 39022, 3900000021)
    template = _verdict(tmp_path, [("198.18.0.1", 39022)])
    result = judge(node, {"SLURMD_NODENAME": "node01"}, template)
    assert result.details == (
        f"stale exposed tcpstore [::]:39500 (pid {STORE} python3, user root; slurm job 4243 is not active here)",
        "unresolved critical exposure: NA001 tcpstore 198.18.0.1:39022 from 203.0.113.9 "
        f"(pid {SSHD} sshd, user root; not part of any Slurm job)",
    )


_WORKER = """
import json, sys
from netaudit import gate, sigcache
from netaudit.config import GateSettings
signatures = sigcache.load((), sys.argv[2])
result = gate.evaluate(signatures, GateSettings(), {}, None, proc=sys.argv[1])
print(json.dumps([result.is_pass, sorted(sys.modules)]))
"""


def test_the_worker_imports_only_what_the_answer_needs(tmp_path: Path) -> None:
    # Given a node whose namespace has nothing exposed (this host's own listeners have no
    # owner in the recorded /proc), the gate's worker builds no classifier, reads no
    # signature file, loads no OpenSSL and needs neither the probe's inventory nor the verdict reader
    node = Node(tmp_path)
    node.listen("127.0.0.1", 39600, 3900000011)
    cache = tmp_path / "cache"
    sigcache.load((), str(cache))
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, node.proc, str(cache)],
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    is_pass, modules = json.loads(done.stdout)
    assert is_pass
    unneeded = {"netaudit.classify", "netaudit.inventory", "netaudit.audit.verdict", "netaudit.inventory_json",
                "hashlib", "_hashlib", "netaudit.atomic"}  # fmt: skip
    assert unneeded.isdisjoint(modules), unneeded & set(modules)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1", "fe80::1", "169.254.1.1"])
def test_loopback_and_link_local_are_not_exposed(address: str) -> None:
    family = gatescan.Family.IPV6 if ":" in address else gatescan.Family.IPV4
    assert not gatescan.is_exposed(family, address, None)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "198.18.0.7", "2001:db8::1"])
def test_wildcards_and_routable_addresses_are_exposed(address: str) -> None:
    family = gatescan.Family.IPV6 if ":" in address else gatescan.Family.IPV4
    assert gatescan.is_exposed(family, address, True)
