#!/usr/bin/env python3
"""Cluster-scale benchmark: a simulated cluster's scan plan, fan-out over namespaces, the gate.

Three measurements, each a part (`--parts cluster,fanout,gate`):

* cluster: --nodes (4,096) node inventories with realistic sizes, built as netaudit models and
  written with inventory_json.to_json exactly as `netaudit probe --format json` writes them.
  Then, without sending a packet, `netaudit scan --inventory ... SCOPE --dry-run --format json`
  as a whole process (one --inventory per file; the same as one bundle on stdin; optionally
  /16 scopes, and a what-if with the cyclic GC off), and the pieces in-process: load, validate,
  plan.build, the dry-run endpoints, policy.evaluate on synthetic attempts, the JSON report as
  the CLI renders it, report_table.render.
* fanout: --fanout-nodes (64) network namespaces, each with lo up and one tiny Python listener;
  netaudit.fanout.gather.inventories() with method "command" (`ip netns exec %h python -m
  netaudit probe --format json --namespaces own`) at each --widths, and the same through
  `netaudit scan --config X` run inside an extra namespace that has only lo.
* gate: `python -m netaudit gate` whole-process wall time (median of --gate-runs), with and
  without an environment (env -i), against bare `python -c pass`, and -X importtime.

Run by hand as root (namespaces); it is not a test:

    python3 bench/cluster_bench.py                              # all three parts
    python3 bench/cluster_bench.py --parts cluster --nodes 8192 --scan-variants files,wide --no-stages
    python3 bench/cluster_bench.py --parts gate --gate-runs 41 --json /tmp/cluster.json

Network safety: the only traffic is loopback inside namespaces this script creates (with
tests/lab/netlab.py, which refuses addresses outside 198.18.0.0/15, 198.51.100.0/24,
203.0.113.0/24 and 2001:db8::/32). The scans run with --dry-run in a namespace whose only other
interface is a veth to an empty namespace, or in one with lo alone. The root namespace is never
changed; the namespaces are deleted also on errors, Ctrl-C, SIGTERM and SIGHUP. It ends only the
processes it started.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import hashlib
import io
import ipaddress
import json
import os
import pstats
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOST_NETNS = 4026531840
INTENDED = ("198.18.0.0/16", "2001:db8:18::/64")  # the fabric; mgmt 198.19.0.0/16 is outside
VANTAGE_V4, VANTAGE_V6 = "203.0.113.10", "2001:db8:203::10"  # the scanning host: outside
FANOUT_PORT = 29500  # the tiny listener of every fan-out namespace
GATE_TARGET_S = 0.150
CLUSTER_TARGET_S, CLUSTER_TARGET_MB = 10.0, 400  # scan --dry-run over 4,096 inventories (issue 8)
TORCH_VERSION = "2.5.1+cu124"


class BenchError(Exception):
    """The fixture or a command failed: one line, exit 2."""


# Measuring ------------------------------------------------------------------------------------


# The runner: a `python -S` process that spawns and times every measured command. The kernel
# starts a child's peak RSS (ru_maxrss) at the RSS of the process it was spawned from, fork or
# posix_spawn alike, so the bench itself (tens of MB, GBs after generating a cluster) would be
# every child's floor; the runner's floor is ~9 MB, below a bare `python -c pass`.
RUNNER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [(os.POSIX_SPAWN_OPEN, 0, job["stdin"], os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, job["stdout"], write, 0o600),
               (os.POSIX_SPAWN_OPEN, 2, job["stderr"], write, 0o600)]
    start = time.perf_counter()
    try:
        pid = os.posix_spawn(job["argv"][0], job["argv"], job["env"], file_actions=actions)
    except OSError as error:
        print(json.dumps({"error": f"{job['argv'][0]}: {error}"}), flush=True)
        continue
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
                      "maxrss_mb": usage.ru_maxrss / 1024,
                      "exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""
_runner: subprocess.Popen[str] | None = None


def start_runner(python: str) -> None:
    global _runner  # noqa: PLW0603 (one runner per bench)
    _runner = subprocess.Popen(
        [python, "-S", "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def stop_runner() -> None:
    global _runner  # noqa: PLW0603
    if _runner is not None:
        with contextlib.suppress(OSError):
            _runner.stdin.close()  # type: ignore[union-attr]
        try:
            _runner.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _runner.kill()  # the runner is ours; what it runs is waited for by it
            _runner.wait()
        _runner = None


def spawn(
    argv: list[str],
    env: dict[str, str],
    stdin_path: str | None = None,
    stdout_path: str | None = None,
    stderr_path: str | None = None,
    netns: str | None = None,
) -> dict[str, Any]:
    """Run argv as one process through the runner, timed from posix_spawn to wait4, with its
    own rusage. With ``netns`` it runs under `ip netns exec NAME`, which enters the namespace
    and execs in the same process: its few ms are in the wall time, not in the peak RSS."""
    if _runner is None or _runner.stdin is None or _runner.stdout is None:
        raise BenchError("the runner is not started")
    if netns is not None:
        argv = [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", netns, *argv]
    job = {"argv": argv, "env": env, "stdin": stdin_path or os.devnull,
           "stdout": stdout_path or os.devnull, "stderr": stderr_path or os.devnull}  # fmt: skip
    _runner.stdin.write(json.dumps(job) + "\n")
    _runner.stdin.flush()
    line = _runner.stdout.readline()
    if not line:
        raise BenchError("the runner died")
    result: dict[str, Any] = json.loads(line)
    if "error" in result:
        raise BenchError(f"cannot run: {result['error']}")
    return result


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, sum(fields[:8])


def cpu_busy(sample: float) -> float:
    busy0, total0 = _cpu_times()
    time.sleep(sample)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(threshold: float, max_wait: float, sample: float = 1.0) -> float:
    """Wait until the machine's CPU use over ``sample`` s is below ``threshold``; the last
    reading (the caller records it)."""
    end = time.monotonic() + max_wait
    busy = cpu_busy(sample)
    while busy > threshold and time.monotonic() < end:
        busy = cpu_busy(sample)
    return busy


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as handle:
        return " ".join(handle.read().split()[:3])


def busy_processes(limit: int = 6) -> list[str]:
    """The processes using the most CPU right now (not this bench), for the record."""
    out = subprocess.run(
        ["ps", "-eo", "pid,pcpu,rss,args", "--sort=-pcpu", "--no-headers"],
        capture_output=True, text=True, check=False,
    ).stdout.splitlines()  # fmt: skip
    mine = {os.getpid()}
    result = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4 or int(parts[0]) in mine or float(parts[1]) < 1.0 or parts[3].startswith("ps -eo"):
            continue
        result.append(f"{parts[0]} {parts[1]}% {parts[3][:90]}")
        if len(result) >= limit:
            break
    return result


def other_namespaces() -> list[str]:
    with contextlib.suppress(OSError):
        return sorted(os.listdir("/run/netns"))
    return []


def fd_count() -> tuple[int, int]:
    """Processes and open fds on the machine: what every probe and gate walks."""
    processes = fds = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fds += len(os.listdir(f"/proc/{entry}/fd"))
                processes += 1
    return processes, fds


def context_snapshot(label: str) -> dict[str, Any]:
    processes, fds = fd_count()
    return {
        "label": label,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg": loadavg(),
        "cpu_busy_1s": round(cpu_busy(1.0), 3),
        "busy_processes": busy_processes(),
        "netns": other_namespaces(),
        "processes": processes,
        "fds": fds,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def profile_top(path: str, lines: int, sort: str = "tottime") -> list[str]:
    stream = io.StringIO()
    stats = pstats.Stats(path, stream=stream)
    stats.strip_dirs().sort_stats(sort).print_stats(lines)
    text = stream.getvalue().splitlines()
    start = next((i for i, line in enumerate(text) if line.lstrip().startswith("ncalls")), 0)
    return [line.rstrip() for line in text[start:] if line.strip()]


# Part 1: the simulated cluster ----------------------------------------------------------------


def _interfaces(i: int, counters: Counter[str]) -> tuple[list[Any], dict[str, str | None]]:
    """Node i's addresses: ib0 (fabric v4, and v6 on 7 nodes in 8), eno1 (mgmt v4, link-local
    v6), ib1 (a second rail on every 4th node), docker0 (the same 203.0.113.1 on every 2nd
    node: a bridge the plan must attribute to none). Blocks are contiguous, so the scope that
    covers exactly the cluster is a handful of CIDRs."""
    from netaudit.models import Family, InterfaceAddress

    def v4(base: str, index: int) -> str:
        return str(ipaddress.ip_address(base) + index)

    fabric4 = v4("198.18.16.0", i)
    mgmt4 = v4("198.19.16.0", i)
    rail2 = v4("198.18.128.0", counters["rail2"]) if i % 4 == 0 else None
    fabric6 = str(ipaddress.ip_address("2001:db8:18::1:0") + counters["v6"]) if i % 8 != 7 else None
    if rail2:
        counters["rail2"] += 1
    if fabric6:
        counters["v6"] += 1
    items = [
        InterfaceAddress("lo", Family.IPV4, "127.0.0.1", 8, True, False),
        InterfaceAddress("ib0", Family.IPV4, fabric4, 16, False, False),
        InterfaceAddress("eno1", Family.IPV4, mgmt4, 16, False, False),
    ]
    if rail2:
        items.append(InterfaceAddress("ib1", Family.IPV4, rail2, 16, False, False))
    if i % 2 == 0:
        items.append(InterfaceAddress("docker0", Family.IPV4, "203.0.113.1", 24, False, False))
    items.append(InterfaceAddress("lo", Family.IPV6, "::1", 128, True, False))
    if fabric6:
        items.append(InterfaceAddress("ib0", Family.IPV6, fabric6, 64, False, False))
    for name, low in (("eno1", 1), ("ib0", 2)):
        link_local = str(ipaddress.ip_address("fe80::") + (i << 16) + low)
        items.append(InterfaceAddress(name, Family.IPV6, link_local, 64, False, True))
    return items, {"fabric4": fabric4, "mgmt4": mgmt4, "rail2": rail2, "fabric6": fabric6}


_SYSTEM = (
    # name, user, uid, cgroup, cmdline, [(family, address, port, v6only, backlog)]
    ("sshd", "root", 0, "/system.slice/ssh.service",
     ("sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",),
     [("ipv4", "0.0.0.0", 22, None, 128), ("ipv6", "::", 22, True, 128)]),
    ("node_exporter", "prometheus", 998, "/system.slice/prometheus-node-exporter.service",
     ("/usr/bin/prometheus-node-exporter", "--collector.textfile.directory=/var/lib/node_exporter"),
     [("ipv6", "::", 9100, False, 4096)]),
    ("slurmd", "root", 0, "/system.slice/slurmd.service", ("/usr/sbin/slurmd", "--systemd"),
     [("ipv4", "0.0.0.0", 6818, None, 4096)]),
    ("dcgm-exporter", "root", 0, "/system.slice/dcgm-exporter.service",
     ("/usr/bin/dcgm-exporter", "-f", "/etc/dcgm-exporter/default-counters.csv"),
     [("ipv6", "::", 9400, False, 4096)]),
    ("nv-hostengine", "root", 0, "/system.slice/nvidia-dcgm.service",
     ("/usr/bin/nv-hostengine", "-n", "--service-account", "nvidia-dcgm"),
     [("ipv4", "127.0.0.1", 5555, None, 4096)]),
    ("rpcbind", "_rpc", 107, "/system.slice/rpcbind.service", ("/sbin/rpcbind", "-f", "-w"),
     [("ipv4", "0.0.0.0", 111, None, 4096), ("ipv6", "::", 111, True, 4096)]),
    ("rpc.statd", "statd", 108, "/system.slice/rpc-statd.service", ("/sbin/rpc.statd",),
     [("ipv4", "0.0.0.0", -1, None, 64), ("ipv6", "::", -1, True, 64)]),
    ("master", "root", 0, "/system.slice/postfix@-.service",
     ("/usr/lib/postfix/sbin/master", "-w"),
     [("ipv4", "127.0.0.1", 25, None, 100), ("ipv6", "::1", 25, True, 100)]),
    ("systemd-resolve", "systemd-resolve", 101, "/system.slice/systemd-resolved.service",
     ("/lib/systemd/systemd-resolved",),
     [("ipv4", "127.0.0.53", 53, None, 4096), ("ipv4", "127.0.0.54", 53, None, 4096)]),
    ("process-exporte", "prometheus", 998, "/system.slice/process-exporter.service",
     ("/usr/bin/process-exporter", "-config.path", "/etc/process-exporter.yml"),
     [("ipv6", "::", 9256, False, 4096)]),
    ("ipmi_exporter", "prometheus", 998, "/system.slice/ipmi-exporter.service",
     ("/usr/bin/ipmi_exporter", "--config.file=/etc/ipmi_exporter.yml"),
     [("ipv6", "::", 9290, False, 4096)]),
    ("pmcd", "pcp", 997, "/system.slice/pmcd.service", ("/usr/libexec/pcp/bin/pmcd", "-A"),
     [("ipv4", "0.0.0.0", 44321, None, 5), ("ipv6", "::", 44321, True, 5)]),
    ("containerd", "root", 0, "/system.slice/containerd.service", ("/usr/bin/containerd",),
     [("ipv4", "127.0.0.1", -1, None, 4096)]),
)  # fmt: skip
_EXTRAS = (
    ("tensorboard", ("/opt/conda/bin/python3", "/opt/conda/bin/tensorboard", "--logdir", "runs"),
     "ipv4", "0.0.0.0", 6006),
    ("jupyter-lab", ("/opt/conda/bin/python3", "/opt/conda/bin/jupyter-lab", "--no-browser"),
     "ipv4", "127.0.0.1", 8888),
    ("wandb-core", ("/opt/conda/lib/python3.11/site-packages/wandb/bin/wandb-core",),
     "ipv4", "127.0.0.1", -1),
    ("node", ("/home/u/.vscode-server/cli/servers/Stable/server/node", "--port=0"),
     "ipv4", "127.0.0.1", -1),
    ("code-tunnel", ("/home/u/.vscode/cli/code-tunnel", "tunnel"), "ipv6", "::1", -1),
    ("mlflow", ("/opt/conda/bin/python3", "-m", "mlflow", "server"), "ipv4", "127.0.0.1", 5000),
)  # fmt: skip


def _torch_environment(job: dict[str, Any], rank: int | None, local_rank: int | None) -> tuple:
    env = {
        "SLURM_JOB_ID": job["id"], "SLURM_JOB_USER": job["user"], "SLURM_JOB_NAME": "pretrain",
        "SLURM_STEP_ID": "0", "SLURM_NODEID": str(job["node_rank"]), "SLURM_NTASKS": str(job["nodes"]),
        "SLURM_JOB_NODELIST": job["nodelist"], "SLURM_CLUSTER_NAME": "bench",
        "MASTER_ADDR": job["master"], "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": job["run_id"],
        "NCCL_SOCKET_IFNAME": "ib0", "GLOO_SOCKET_IFNAME": "ib0", "TP_SOCKET_IFNAME": "ib0",
        "NCCL_IB_DISABLE": "0", "USE_LIBUV": "1",
    }  # fmt: skip
    if rank is not None and local_rank is not None:
        env.update({
            "RANK": str(rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(job["world"]),
            "LOCAL_WORLD_SIZE": "8", "GROUP_RANK": str(job["node_rank"]),
            "GROUP_WORLD_SIZE": str(job["nodes"]), "ROLE_RANK": str(rank), "ROLE_NAME": "default",
            "ROLE_WORLD_SIZE": str(job["world"]), "TORCHELASTIC_USE_AGENT_STORE": "True",
            "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
            "SLURM_PROCID": str(job["node_rank"]), "SLURM_LOCALID": "0",
        })  # fmt: skip
    return tuple(sorted(env.items()))


def node_inventory(
    i: int, nodes: int, sigs: dict[str, Any], counters: Counter[str], collected_at: datetime
) -> Any:
    """One node's inventory, as the probe would see it as root (see the README for the mix)."""
    from netaudit import __version__, bindscope, exposure
    from netaudit.models import (
        Classification,
        Confidence,
        Family,
        Inventory,
        JobIdentity,
        Listener,
        ListenerSource,
        NetNamespace,
        Privilege,
        ProcessInfo,
    )

    rng = random.Random(i * 7919 + 17)
    interfaces, addr = _interfaces(i, counters)
    intended = exposure.parse_subnets(list(INTENDED))
    listeners: list[Listener] = []
    inode = 40_000_000 + i * 1000
    ephemeral = rng.sample(range(32768, 60999), 80)

    def add(family: str, address: str, port: int, v6only: bool | None, backlog: int | None,
            uid: int | None, process: ProcessInfo | None, found: Classification | None) -> None:  # fmt: skip
        nonlocal inode
        inode += 1
        if port < 0:
            port = ephemeral.pop()
        fam = Family(family)
        listener = Listener(
            netns=HOST_NETNS, family=fam, address=address, port=port, inode=inode,
            source=ListenerSource.NETLINK, v6only=v6only, backlog=backlog, uid=uid,
            pid=process.pid if process else None, pids=(process.pid,) if process else (),
            process=process, classification=found,
        )  # fmt: skip
        scope = bindscope.scope_of(fam, address, v6only, False)
        listeners.append(replace(listener, exposure=exposure.hint(listener, scope, interfaces, intended)))

    def process(pid: int, name: str, user: str, uid: int, cmdline: tuple[str, ...], cgroup: str,
                environment: tuple = (), threads: tuple = (), libraries: tuple = (),
                job: JobIdentity | None = None) -> ProcessInfo:  # fmt: skip
        return ProcessInfo(
            pid=pid, ppid=1, name=name, uid=uid, user=user, cmdline=cmdline, netns=HOST_NETNS,
            environment=environment, threads=threads or ((name, 1),), libraries=libraries,
            cgroup=cgroup, job=job or JobIdentity(),
        )  # fmt: skip

    def classification(sig_id: str, variant: str, evidence: list[str]) -> Classification:
        sig = sigs[sig_id]
        return Classification(
            signature=sig.id, service=sig.service, variant=variant, confidence=Confidence.HIGH,
            evidence=tuple(evidence), risk=sig.risk, is_do_not_touch=sig.is_do_not_touch,
            is_connect_safe=sig.is_connect_safe, handshake=sig.handshake,
        )  # fmt: skip

    # System services, then what users leave running
    pid = 900
    for name, user, uid, cgroup, cmdline, binds in _SYSTEM:
        if name == "containerd" and i % 2:
            continue
        pid += rng.randint(3, 40)
        info = process(pid, name, user, uid, cmdline, cgroup)
        for family, address, port, v6only, backlog in binds:
            add(family, address, port, v6only, backlog, uid, info, None)
    add("ipv4", "0.0.0.0", 988, None, 127, 0, None, None)  # lnet (Lustre): a kernel socket, no pid
    job_user = f"u{(i // 8) % 211:03d}"
    job_uid = 20000 + (i // 8) % 211
    for name, cmdline, family, address, port in rng.sample(_EXTRAS, rng.randint(0, len(_EXTRAS))):
        pid += rng.randint(100, 900)
        info = process(pid, name, job_user, job_uid, cmdline, f"/user.slice/user-{job_uid}.slice")
        add(family, address, port, None if family == "ipv4" else True, 128, job_uid, info, None)

    # The PyTorch job: 8 nodes per job, 8 ranks per node, under torchrun (c10d rendezvous)
    first = i - i % 8
    job = {
        "id": str(700000 + i // 8), "user": job_user, "node_rank": i % 8,
        "nodes": min(8, nodes - first), "world": 8 * min(8, nodes - first),
        "nodelist": f"gpu[{first + 1:04d}-{min(nodes, first + 8):04d}]",
        "master": str(ipaddress.ip_address("198.18.16.0") + first), "run_id": f"{700000 + i // 8}",
    }  # fmt: skip
    cgroup = f"/system.slice/slurmstepd.scope/job_{job['id']}/step_0/user/task_0"
    libraries = ("libnccl.so.2", "libtorch.so", "libtorch_cpu.so", "libtorch_cuda.so",
                 "libtorch_global_deps.so", "libtorch_python.so")  # fmt: skip
    agent_pid = pid + rng.randint(1000, 5000)
    agent = process(
        agent_pid, "pt_elastic", job_user, job_uid,
        ("/opt/conda/bin/python3", "/opt/conda/bin/torchrun", f"--nnodes={job['nodes']}",
         "--nproc-per-node=8", "--rdzv-backend=c10d", f"--rdzv-endpoint={job['master']}:29400",
         f"--rdzv-id={job['run_id']}", "train.py", "--config", "configs/pretrain-8b.yaml"),
        cgroup, _torch_environment(job, None, None),
        (("pt_elastic", 1), ("pt_tcpstore_uv", 2), ("python3", 3)), libraries[1:5],
        JobIdentity(job["id"], job_user, None, None, job["world"], job["run_id"], job["master"],
                    29500, TORCH_VERSION),
    )  # fmt: skip

    def torch(family: str, address: str, port: int, backlog: int, owner: ProcessInfo, sig_id: str,
              variant: str, evidence: list[str]) -> None:  # fmt: skip
        v6only = False if family == "ipv6" else None
        add(family, address, port, v6only, backlog, job_uid, owner, classification(sig_id, variant, evidence))

    libs = "maps libtorch.so, libtorch_cpu.so, libtorch_cuda.so"
    store = [libs, "thread pt_tcpstore_uv x2", "dual-stack wildcard [::] (every IPv4 and IPv6 address)"]
    torch("ipv6", "::", 29400, 2048, agent, "tcpstore", "rendezvous-store", [*store, "port 29400"])
    torch("ipv6", "::", 29500, 2048, agent, "tcpstore", "agent-worker-store", [*store, "port 29500"])
    rank_threads = (
        ("cuda-EvtHandlr", 1), ("cuda00001400006", 1), ("gloo_tcp_loop", 1), ("pt_autograd_0", 1),
        ("pt_main_thread", 24), ("pt_nccl_heartbt", 1), ("pt_nccl_watchdg", 1), ("python3", 4),
    )  # fmt: skip
    fabric = addr["fabric4"] or ""
    bound = f"bound to {fabric} only"
    nccl = ["maps libnccl.so.2", "thread pt_nccl_watchdg x1", bound]
    has_rpc = (i // 8) % 3 == 0
    has_debug = (i // 8) % 16 == 5
    for local in range(8):
        rank = job["node_rank"] * 8 + local
        threads = rank_threads
        if has_rpc and local == 0:
            threads = (*threads, ("TP_UV_loop", 17), ("TP_thread_pool", 16))
        if has_debug:
            threads = (*threads, ("pt_workerserver", 2))
        info = process(
            agent_pid + 20 + local, "pt_main_thread", job_user, job_uid,
            ("/opt/conda/bin/python3", "-u", "train.py", "--config", "configs/pretrain-8b.yaml"),
            cgroup, _torch_environment(job, rank, local), tuple(sorted(threads)), libraries,
            JobIdentity(job["id"], job_user, rank, local, job["world"], job["run_id"], job["master"],
                        29500, TORCH_VERSION),
        )  # fmt: skip
        gloo = [libs, "thread gloo_tcp_loop x1", bound, "backlog 4096 (somaxconn)"]
        torch("ipv4", fabric, -1, 4096, info, "c10d-gloo", "pair-listener", gloo)
        for _ in range(2):  # bootstrap ring and proxy
            torch("ipv4", fabric, -1, 4096, info, "c10d-nccl", "listener", nccl)
        if local == 0:  # the RAS network listener, and the RAS client port on loopback
            torch("ipv4", fabric, -1, 4096, info, "c10d-nccl", "listener", nccl)
            torch(
                "ipv4", "127.0.0.1", 28028, 4096, info, "c10d-nccl", "ras-client", [*nccl[:1], "port 28028"]
            )
        if has_rpc and local == 0:
            tensorpipe = [libs, "thread TP_UV_loop x17", bound, "backlog 128"]
            for _ in range(17):
                torch("ipv4", fabric, -1, 128, info, "rpc-tensorpipe", "listener", tensorpipe)
        if has_debug:
            server = [libs, "thread pt_workerserver x2", "dual-stack wildcard [::]", "backlog 5"]
            torch("ipv6", "::", -1, 5, info, "c10d-workerserver", "worker-server", server)
    namespace = NetNamespace(HOST_NETNS, True, (), 400 + rng.randint(0, 200), ListenerSource.NETLINK,
                             tuple(interfaces))  # fmt: skip
    listeners.sort(key=lambda item: (item.netns, item.port, item.family, item.address, item.inode))
    return Inventory(
        host=f"gpu{i + 1:04d}",
        collected_at=collected_at,
        netaudit_version=__version__,
        privilege=Privilege(True, True, True),
        intended_subnets=INTENDED,
        namespaces=(namespace,),
        listeners=tuple(listeners),
    )


def tight_scope(inventories: list[Any]) -> list[str]:
    """The CIDRs that cover exactly the nodes' routable addresses (the docker0 bridge aside)."""
    addresses: dict[int, list[Any]] = defaultdict(list)
    for inventory in inventories:
        for namespace in inventory.namespaces:
            for item in namespace.interfaces:
                parsed = ipaddress.ip_address(item.address)
                if item.is_loopback or item.is_link_local or item.name == "docker0":
                    continue
                addresses[parsed.version].append(parsed)
    return [str(net) for version in (4, 6) for net in ipaddress.collapse_addresses(addresses[version])]


def probe_text(document: dict[str, Any], listeners: int) -> str:
    """The text `netaudit probe --format json` prints for ``document``."""
    try:
        from netaudit import jsonout
    except ImportError:  # before jsonout: always indented
        return json.dumps(document, indent=2, sort_keys=True) + "\n"
    return jsonout.dumps(document, listeners)


def generate(out: Path, nodes: int) -> dict[str, Any]:
    """Write gpuNNNN.json (as `probe --format json` prints) and bundle.json (compact, as a
    fan-out's central run sends its peers)."""
    from netaudit import inventory_json, signatures

    sigs = {sig.id: sig for sig in signatures.load()}
    directory = out / "inventories"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    counters: Counter[str] = Counter()
    collected_at = datetime.now(UTC).replace(microsecond=0)  # the JSON keeps milliseconds
    started = time.perf_counter()
    inventories = [node_inventory(i, nodes, sigs, counters, collected_at) for i in range(nodes)]
    built_s = time.perf_counter() - started
    paths = []
    sizes = []
    documents = []
    for inventory in inventories:
        document = inventory_json.to_json(inventory)
        documents.append(document)
        path = directory / f"{inventory.host}.json"
        text = probe_text(document, len(inventory.listeners))
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
        sizes.append(len(text.encode()))
    for inventory, document in list(zip(inventories, documents, strict=True))[:16]:
        if inventory_json.from_json(json.loads(json.dumps(document)), inventory.host) != inventory:
            raise BenchError(f"{inventory.host}: the inventory does not read back equal")
    bundle = out / "bundle.json"
    bundle.write_text(json.dumps(documents), encoding="utf-8")
    listener_counts = [len(inv.listeners) for inv in inventories]
    classified = [sum(1 for item in inv.listeners if item.classification) for inv in inventories]
    interfaces = [
        len({item.name for ns in inv.namespaces for item in ns.interfaces if item.name != "lo"})
        for inv in inventories
    ]
    services = Counter(
        item.classification.service for inv in inventories for item in inv.listeners if item.classification
    )
    return {
        "nodes": nodes,
        "paths": paths,
        "bundle": str(bundle),
        "bundle_bytes": bundle.stat().st_size,
        "files_bytes": sum(sizes),
        "file_bytes_median": median(sizes),
        "build_s": round(built_s, 3),
        "listeners_total": sum(listener_counts),
        "listeners_per_node": [min(listener_counts), median(listener_counts), max(listener_counts)],
        "pytorch_per_node": [min(classified), median(classified), max(classified)],
        "interfaces_per_node": [min(interfaces), max(interfaces)],
        "services": dict(sorted(services.items())),
        "scope": tight_scope(inventories),
    }


def stages_child(argv: list[str]) -> int:
    """In-process timings of the scan's pieces, in the order `netaudit scan` runs them
    (netaudit.audit.run); prints JSON. Runs in its own process so its peak RSS is its own."""
    from netaudit import cmd_scan, docparse, exposure, inventory_json, signatures
    from netaudit.audit import intake, plan, policy, scope, targets
    from netaudit.audit import run as audit_run
    from netaudit.audit.settings import ScanSettings
    from netaudit.models import Attempt, Gap, GapKind, Method, PortState, Report, Severity, VantageSource
    from netaudit.report import report_json, report_table

    parser = argparse.ArgumentParser()
    parser.add_argument("--files", required=True)  # a JSON list of paths
    parser.add_argument("--scope", nargs="+", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--open-share", type=float, default=0.02)
    parser.add_argument("--closed-share", type=float, default=0.08)
    parser.add_argument("--profile", default="")
    args = parser.parse_args(argv)
    paths = json.loads(Path(args.files).read_text())
    timings: dict[str, list[float]] = defaultdict(list)
    facts: dict[str, Any] = {}

    def timed(name: str, func: Any, gc_off: bool = False) -> Any:
        """``gc_off``: the CLI runs this piece with the cyclic GC off (long_lived_objects);
        with it on, the collector walks everything the bench holds, again and again."""
        result = None
        for _ in range(args.repeat):
            result = None
            gc.collect()
            start = time.perf_counter()
            if gc_off:
                with audit_run.long_lived_objects():
                    result = func()
            else:
                result = func()
            timings[name].append(time.perf_counter() - start)
        return result

    def read_all() -> list[Any]:
        return docparse.load_inventory_documents(paths, sys.stdin, cmd_scan.INVENTORY_LIMIT_BYTES)

    documents = timed("load: read + docparse.parse_json (every file)", read_all, gc_off=True)
    timed(
        "validate: inventory_json.from_json (every document): the reader",
        lambda: len([inventory_json.from_json(doc, label) for label, doc in documents]),
        gc_off=True,
    )
    documents = []
    # What the rest runs on, as in the CLI: one document at a time, equal parts shared.
    inventories = timed("read + validate + share: cmd_scan.load_inventories (the CLI)",
                        lambda: cmd_scan.load_inventories(paths, _StdinEnv()))  # fmt: skip
    sigs = signatures.load()
    intended = exposure.parse_subnets(list(INTENDED))
    sources = (
        VantageSource(VANTAGE_V4, "eth0", "203.0.113.0/24", False),
        VantageSource(VANTAGE_V6, "eth0", "2001:db8:203::/64", False),
    )
    settings = ScanSettings()
    rules = plan.Rules(intended=intended, default_ports=settings.ports, max_inventory_age_s=86400,
                       is_raw=True, allow_connect=False, max_endpoints=settings.max_endpoints)  # fmt: skip
    now = datetime.now(UTC)
    admitted = timed("intake.admit", lambda: intake.admit(inventories, sigs))
    hosts = {inventory.host for inventory in admitted.inventories}
    named = timed("targets.parse", lambda: targets.parse(args.scope, settings.max_targets, hosts))
    the_scope = timed(
        "scope.derive",
        lambda: scope.derive(admitted.inventories, named, settings.max_targets, expand_networks=False),
    )
    local = frozenset(s.address for s in sources)
    the_plan = timed(
        "plan.build",
        lambda: plan.build(admitted.inventories, the_scope, sources, sigs, rules, now, local),
        gc_off=True,
    )
    dry = timed(
        "dry-run endpoints (audit.run._dry_run)",
        lambda: audit_run._dry_run(the_plan, "bench-vantage"),
        gc_off=True,
    )
    facts.update(endpoints=len(the_plan.endpoints), probes=len(the_plan.probes),
                 handshakes=len(the_plan.handshakes), canary_paths=len(the_plan.canary_ports),
                 notes=len(the_plan.notes), notes_chars=sum(len(n) for n in the_plan.notes))  # fmt: skip

    def synthetic() -> tuple[Any, ...]:
        rng = random.Random(1)
        attempts: dict[int, list[Attempt]] = defaultdict(list)
        for probe in the_plan.probes:
            roll = rng.random()
            if roll < args.open_share:
                handshake = the_plan.handshakes.get(probe.endpoint)
                attempt = Attempt(probe.spec.source, PortState.OPEN, Method.SYN, "syn-ack", 0.21, False,
                                  True, True if handshake else None,
                                  "nonce echoed" if handshake else None, "bench-vantage")  # fmt: skip
            elif roll < args.open_share + args.closed_share:
                attempt = Attempt(probe.spec.source, PortState.CLOSED, Method.SYN, "rst", 0.19, False,
                                  True, vantage="bench-vantage")  # fmt: skip
            else:
                attempt = Attempt(probe.spec.source, PortState.FILTERED, Method.SYN, "no answer", None,
                                  False, True, vantage="bench-vantage")  # fmt: skip
            attempts[probe.endpoint].append(attempt)
        return tuple(
            replace(endpoint, attempts=tuple(attempts.get(index, ())))
            for index, endpoint in enumerate(the_plan.endpoints)
        )

    scanned = timed("(bench) synthetic attempts", synthetic)
    by_address = {s.address: s for s in sources}
    rules_policy = policy.Policy("subnet", (), now.date(), "bench-vantage")
    jobs = timed("policy.job_nodes", lambda: policy.job_nodes(admitted.inventories))
    findings = timed(
        "policy.evaluate", lambda: policy.evaluate(scanned, by_address, sigs, rules_policy, jobs)
    )
    facts["findings"] = len(findings)
    facts["findings_by_rule"] = dict(sorted(Counter(f.rule_id for f in findings).items()))
    plan_gaps = tuple(
        Gap(index_host, GapKind.NOT_TESTED, reason)
        for index_host, reason in sorted(
            {(the_plan.endpoints[i].host, r) for i, r in the_plan.untestable.items()}
        )
    )

    def report(endpoints: tuple[Any, ...], found: tuple[Any, ...], mode: str) -> Report:
        return Report(generated_at=now, netaudit_version="bench", vantage_host="bench-vantage", mode=mode,
                      sources=sources, intended_subnets=INTENDED, trust_scope="subnet",
                      fail_on=Severity.HIGH, findings=found, endpoints=endpoints,
                      gaps=plan_gaps, notes=(*admitted.notes, *the_plan.notes), duration_s=0.0,
                      probes_sent=len(the_plan.probes) if mode == "syn" else 0,
                      scope=the_scope.summary)  # fmt: skip

    dry_report = report(dry, (), "dry-run")
    full_report = report(scanned, findings, "syn")

    def as_json(value: Report) -> int:
        sink = _CountingSink()
        _render_json(cmd_scan, value, sink)
        return sink.size

    size = timed("report JSON, dry-run: as the CLI writes it", lambda: as_json(dry_report))
    facts["dry_run_json_mb"] = round(size / 1e6, 1)
    timed("  (dry-run: report_json.to_json alone)", lambda: report_json.to_json(dry_report))
    size = timed("report JSON, scanned: as the CLI writes it", lambda: as_json(full_report))
    facts["scanned_json_mb"] = round(size / 1e6, 1)
    timed("  (scanned: report_json.to_json alone)", lambda: report_json.to_json(full_report))
    table = timed("report table, scanned: report_table.render", lambda: report_table.render(full_report))
    facts["table_kb"] = round(len(table) / 1e3, 1)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        plan_again = plan.build(admitted.inventories, the_scope, sources, sigs, rules, now, local)
        found_again = policy.evaluate(scanned, by_address, sigs, rules_policy, jobs)
        as_json(report(scanned, found_again, "syn"))
        profiler.disable()
        profiler.dump_stats(args.profile)
        del plan_again
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"timings": timings, "facts": facts, "maxrss_mb": usage.ru_maxrss / 1024}))
    return 0


class _StdinEnv:
    """The one field of netaudit.environment.Environment that load_inventories reads."""

    stdin = sys.stdin


class _CountingSink(io.TextIOBase):
    """A text stream that only counts what is written: the renderer's cost without the disk."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, text: str) -> int:  # type: ignore[override]
        self.size += len(text)
        return len(text)


def _render_json(cmd_scan: Any, report: Any, stream: Any) -> None:
    """The JSON report as the CLI writes it: streamed where this netaudit streams it."""
    writer = getattr(cmd_scan, "write_report", None)
    if writer is not None:
        writer(report, "json", stream)
    else:
        stream.write(cmd_scan.render(report, "json"))


def cluster_part(args: argparse.Namespace, out: Path, env: dict[str, str], record: dict[str, Any]) -> None:
    from tests.lab.netlab import Lab

    print(f"cluster: generating {args.nodes} inventories ...", file=sys.stderr)
    generated = generate(out, args.nodes)
    paths = generated.pop("paths")
    files_list = out / "paths.json"
    files_list.write_text(json.dumps(paths))
    record["cluster"] = result = {"generated": generated, "runs": [], "stages": None}
    scope = list(args.scope) if args.scope else generated["scope"]
    result["scope"] = scope
    print(f"cluster: scope {' '.join(scope)}; {generated['listeners_total']} listeners", file=sys.stderr)

    base = [args.python, "-m", "netaudit", "scan", "--intended-subnet", INTENDED[0], "--intended-subnet",
            INTENDED[1], "--max-inventory-age", "86400", "--dry-run", "--format", "json"]  # fmt: skip
    files_argv = [*base, *(x for path in paths for x in ("--inventory", path)), *scope]
    stdin_argv = [*base, "--inventory", "-", *scope]
    variants: list[tuple[str, list[str], str | None]] = []
    if "files" in args.scan_variants:
        variants.append(("files", files_argv, None))
    if "stdin" in args.scan_variants:
        variants.append(("stdin bundle", stdin_argv, generated["bundle"]))
    if "nogc" in args.scan_variants:  # what-if: the same run with the cyclic GC disabled
        code = ("import gc, runpy, sys; gc.disable(); sys.argv = ['netaudit', *sys.argv[1:]]; "
                "runpy.run_module('netaudit', run_name='__main__')")  # fmt: skip
        variants.append(("files, gc.disable() (what-if)", [args.python, "-c", code, *files_argv[3:]], None))
    if "wide" in args.scan_variants:
        config = out / "wide.toml"
        config.write_text("[scan]\nmax_targets = 200000\n")
        wide = ["198.18.0.0/16", "198.19.0.0/16", "2001:db8:18::1:0/112"]
        variants.append((f"files, wide scope {' '.join(wide)}",
                         [*files_argv[: -len(scope)], "--config", str(config), *wide], None))  # fmt: skip
    with Lab() as lab:
        # The scanning host: one veth to an empty namespace (no dummy driver everywhere), with
        # outside addresses. --dry-run sends nothing; the addresses only make the sources.
        vantage = lab.namespace("vantage")
        lab.link(vantage, lab.namespace("peer"), [f"{VANTAGE_V4}/24", f"{VANTAGE_V6}/64"], name_a="eth0")
        for label, argv, stdin in variants:
            runs = 1 if "wide" in label or "what-if" in label else args.runs
            for index in range(runs + 1):  # the first is a warm-up (page cache), checked
                busy = wait_quiet(args.quiet_threshold, args.quiet_timeout)
                stdout = out / "scan.json"
                stderr = out / "scan.err"
                run = spawn(argv, env, stdin, str(stdout), str(stderr), vantage.name)
                run.update(variant=label, warmup=index == 0, busy_before=round(busy, 3),
                           loadavg=loadavg())  # fmt: skip
                if run["exit"] != 0:  # recorded, and the next variant runs
                    run["error"] = _tail(stderr, 300)
                    result["runs"].append(run)
                    print(f"cluster: {label}: exit {run['exit']}: {run['error']}", file=sys.stderr)
                    break
                if index == 0:
                    report = json.loads(stdout.read_text())
                    summary = report["summary"]
                    run["endpoints"] = summary["endpoints"]
                    run["hosts"] = summary["hosts"]
                    run["probes"] = sum(summary["attempts"].values())
                    run["report_mb"] = round(stdout.stat().st_size / 1e6, 1)
                    run["notes"] = len(report["notes"])
                    del report
                result["runs"].append(run)
                print(f"cluster: {label}{' (warm-up)' if index == 0 else ''}: "
                      f"{run['wall_s']:.2f} s, {run['maxrss_mb']:.0f} MB", file=sys.stderr)  # fmt: skip
        if args.profile and "files" in args.scan_variants:
            prof = out / "scan.prof"
            argv = [args.python, "-m", "cProfile", "-o", str(prof), *files_argv[1:]]
            spawn(argv, env, None, str(out / "scan-prof.json"), str(out / "scan-prof.err"), vantage.name)
            result["profile_tottime"] = profile_top(str(prof), args.profile_lines)
            result["profile_cumulative"] = profile_top(str(prof), args.profile_lines, "cumulative")
    if not args.stages:
        return
    busy = wait_quiet(args.quiet_threshold, args.quiet_timeout)
    print("cluster: in-process stages ...", file=sys.stderr)
    argv = [args.python, str(Path(__file__).resolve()), "--child", "stages", "--files", str(files_list),
            "--repeat", str(args.repeat), "--open-share", str(args.open_share), "--closed-share",
            str(args.closed_share), "--scope", *scope]  # fmt: skip
    if args.profile:
        argv += ["--profile", str(out / "stages.prof")]
    stdout, stderr = out / "stages.json", out / "stages.err"
    run = spawn(argv, env, None, str(stdout), str(stderr))
    if run["exit"] != 0:
        raise BenchError(f"stages child exited {run['exit']}: {_tail(stderr)}")
    result["stages"] = {**json.loads(stdout.read_text()), "wall_s": run["wall_s"],
                        "maxrss_mb": run["maxrss_mb"], "busy_before": round(busy, 3),
                        "shares": f"{args.open_share:.0%} open, {args.closed_share:.0%} closed, "
                                  "the rest filtered, all from outside"}  # fmt: skip
    if args.profile:
        result["stages_profile_tottime"] = profile_top(str(out / "stages.prof"), args.profile_lines)


# Part 2: fan-out over namespaces ---------------------------------------------------------------


def fanout_part(args: argparse.Namespace, out: Path, env: dict[str, str], record: dict[str, Any]) -> None:
    from netaudit.config import FanoutSettings
    from netaudit.fanout import gather, subprocesses
    from tests.lab.netlab import Lab

    record["fanout"] = result = {"rounds": [], "cli": []}
    os.environ["PYTHONPATH"] = str(REPO)  # what the probes that gather starts inherit
    durations: dict[str, float] = {}
    original = subprocesses._run

    def timed_run(node: str, argv: list[str], timeout_s: float, stdin: bytes | None) -> Any:
        start = time.perf_counter()
        try:
            return original(node, argv, timeout_s, stdin)
        finally:
            durations[node] = time.perf_counter() - start

    subprocesses._run = timed_run  # type: ignore[assignment]
    try:
        with Lab() as lab:
            started = time.perf_counter()
            digits = max(2, len(str(args.fanout_nodes - 1)))
            namespaces = [lab.namespace(f"f{index:0{digits}d}") for index in range(args.fanout_nodes)]
            for ns in namespaces:
                ns.tcp_listener("0.0.0.0", FANOUT_PORT)
            result["setup_s"] = round(time.perf_counter() - started, 2)
            cli_ns = lab.namespace("cli")  # lo only: the scan that follows the fan-out sends nothing
            nodes = f"{lab.prefix}-f[{0:0{digits}d}-{args.fanout_nodes - 1:0{digits}d}]"
            command = f"ip netns exec %h {args.python} -m netaudit probe --format json --namespaces own"
            print(f"fanout: {args.fanout_nodes} namespaces ready in {result['setup_s']} s", file=sys.stderr)
            plan_rounds = [(1, 0)] + [(w, r) for r in range(args.fanout_rounds) for w in args.widths]
            for width_now, round_index in plan_rounds:
                settings = FanoutSettings(method="command", nodes=nodes, width=width_now, timeout_s=120.0,
                                          command=command)  # fmt: skip
                busy = wait_quiet(args.quiet_threshold, args.quiet_timeout)
                durations.clear()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                found, failures = gather.inventories(settings, os.environ)
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                if failures or len(found) != args.fanout_nodes:
                    raise BenchError(f"fan-out: {len(found)} inventories, failures {failures[:3]}")
                missing = [inv.host for inv in found if not any(x.port == FANOUT_PORT for x in inv.listeners)]
                if missing:
                    raise BenchError(f"fan-out: no listener on {FANOUT_PORT} in {missing[:3]}")
                per_node = list(durations.values())
                result["rounds"].append({
                    "width": width_now, "round": round_index, "wall_s": wall, "cpu_s": cpu,
                    "per_node_median_s": median(per_node), "per_node_p90_s": quantile(per_node, 0.9),
                    "per_node_max_s": max(per_node), "busy_before": round(busy, 3), "loadavg": loadavg(),
                    "listeners": sum(len(inv.listeners) for inv in found),
                })  # fmt: skip
                print(f"fanout: width {width_now}: {wall:.2f} s, per node {median(per_node):.3f} s",
                      file=sys.stderr)  # fmt: skip
            config = out / "fanout.toml"
            for width_now in args.widths:
                config.write_text(
                    'intended_subnets = ["198.18.0.0/16"]\n[scan]\ntargets = ["198.51.100.250/32"]\n'
                    f'[fanout]\nmethod = "command"\nnodes = "{nodes}"\nwidth = {width_now}\ntimeout_s = 120\n'
                    f'command = "{command}"\n'
                )
                argv = [args.python, "-m", "netaudit", "scan", "--config", str(config), "--format", "json"]
                busy = wait_quiet(args.quiet_threshold, args.quiet_timeout)
                stdout, stderr = out / "fanout-scan.json", out / "fanout-scan.err"
                run = spawn(argv, env, None, str(stdout), str(stderr), cli_ns.name)
                if run["exit"] not in (0, 3):  # 3: no source address in that namespace (intended)
                    raise BenchError(f"fan-out scan exited {run['exit']}: {_tail(stderr)}")
                report = json.loads(stdout.read_text())
                failed = report["failed_hosts"]
                if failed:
                    raise BenchError(f"fan-out scan: failed hosts {failed[:3]}")
                run.update(
                    width=width_now, busy_before=round(busy, 3), probes_sent=report["summary"]["probes_sent"]
                )
                result["cli"].append(run)
                print(f"fanout: CLI scan width {width_now}: {run['wall_s']:.2f} s", file=sys.stderr)
            if args.profile:
                prof = out / "probe.prof"
                argv = [args.python, "-m", "cProfile", "-o", str(prof), "-m", "netaudit", "probe"]
                argv += ["--format", "json", "--namespaces", "own"]
                spawn(argv, env, None, None, str(out / "probe-prof.err"), namespaces[0].name)
                result["probe_profile_tottime"] = profile_top(str(prof), args.profile_lines)
                result["probe_profile_cumulative"] = profile_top(str(prof), args.profile_lines, "cumulative")
    finally:
        subprocesses._run = original  # type: ignore[assignment]


# Part 3: the gate -----------------------------------------------------------------------------


def _importtime(python: str, argv: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """-X importtime, median per module over ``runs``: total, and the top by cumulative."""
    per_module: dict[str, list[tuple[int, int]]] = defaultdict(list)
    totals = []
    for _ in range(runs):
        proc = subprocess.run([python, "-X", "importtime", *argv], env=env, capture_output=True,
                              text=True, check=False)  # fmt: skip
        total = 0
        for line in proc.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumulative_us, raw = line[len("import time:") :].split("|")
            name = raw[1:].rstrip()  # one space, then two per nesting level
            per_module[name].append((int(self_us), int(cumulative_us)))
            if not name.startswith(" "):  # top level: the cumulative figures add up
                total += int(cumulative_us)
        totals.append(total)
    rows = [
        (name.strip(), len(name) - len(name.lstrip()), median([c for _s, c in v]), median([s for s, _c in v]))
        for name, v in per_module.items()
    ]
    return {
        "total_ms": median(totals) / 1000,
        "modules": len(per_module),
        "top_cumulative": [
            {"module": name, "depth": depth // 2, "cumulative_ms": cum / 1000, "self_ms": own / 1000}
            for name, depth, cum, own in sorted(rows, key=lambda row: -row[2])[:20]
        ],
        "top_self": [
            {"module": name, "self_ms": own / 1000}
            for name, _depth, _cum, own in sorted(rows, key=lambda row: -row[3])[:10]
        ],
    }


def gate_part(args: argparse.Namespace, out: Path, env: dict[str, str], record: dict[str, Any]) -> None:
    record["gate"] = result = {}
    gate_env = dict(env)
    no_path = {"PYTHONPATH": str(REPO)}  # what `env -i PYTHONPATH=... python -m netaudit gate` leaves
    gate = [args.python, "-m", "netaudit", "gate"]
    cases: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [args.python, "-c", "pass"], gate_env),
        ("python -S -c pass (no site)", [args.python, "-S", "-c", "pass"], gate_env),
        (
            "python -c 'import netaudit.cli, netaudit.cmd_gate, netaudit.gate' (imports only)",
            [args.python, "-c", "import netaudit.cli, netaudit.cmd_gate, netaudit.gate"],
            gate_env,
        ),
        ("python -m netaudit gate", gate, gate_env),
        ("env -i: python -m netaudit gate", gate, no_path),
        ("python -m netaudit gate --format json", [*gate, "--format", "json"], gate_env),
    ]
    shim = shutil.which("python3", path=env.get("PATH"))
    if shim and os.path.realpath(shim) != os.path.realpath(args.python):
        cases.append(("python3 (PATH: " + shim + ") -m netaudit gate", [shim, *gate[1:]], gate_env))
    check = subprocess.run([*gate, "--format", "json"], env=gate_env, capture_output=True, text=True,
                           check=False)  # fmt: skip
    result["check"] = {"exit": check.returncode, "stdout": check.stdout.strip()[:600],
                       "stderr": check.stderr.strip()[-300:]}  # fmt: skip
    probe = subprocess.run([*gate[:3], "probe", "--format", "json"], env=gate_env, capture_output=True,
                           text=True, check=False)  # fmt: skip
    with contextlib.suppress(ValueError, KeyError):
        node = json.loads(probe.stdout)
        result["node"] = {"namespaces": len(node["namespaces"]), "listeners": len(node["listeners"]),
                          "classified": sum(1 for x in node["listeners"] if x["service"])}  # fmt: skip
    result["context_before"] = context_snapshot("gate before")
    times: dict[str, list[dict[str, Any]]] = {label: [] for label, _argv, _env in cases}
    for index in range(args.gate_runs + 1):  # rotate the order; the first round is a warm-up
        order = cases[index % len(cases) :] + cases[: index % len(cases)]
        busy = cpu_busy(0.3)
        if busy > args.quiet_threshold:
            busy = wait_quiet(args.quiet_threshold, args.quiet_timeout, 0.3)
        for label, argv, case_env in order:
            run = spawn(argv, case_env)
            run["busy_before"] = round(busy, 3)
            if index:
                times[label].append(run)
    result["context_after"] = context_snapshot("gate after")
    result["cases"] = {
        label: {
            "runs": len(runs),
            "median_ms": median([r["wall_s"] for r in runs]) * 1000,
            "min_ms": min(r["wall_s"] for r in runs) * 1000,
            "max_ms": max(r["wall_s"] for r in runs) * 1000,
            "cpu_ms": median([r["user_s"] + r["sys_s"] for r in runs]) * 1000,
            "maxrss_mb": median([r["maxrss_mb"] for r in runs]),
            "exits": sorted({r["exit"] for r in runs}),
        }
        for label, runs in times.items()
    }
    result["importtime_gate"] = _importtime(args.python, ["-m", "netaudit", "gate"], gate_env, 7)
    result["importtime_bare"] = _importtime(args.python, ["-c", "pass"], gate_env, 7)
    if args.profile:
        prof = out / "gate.prof"
        code = (
            "import cProfile, sys; sys.path.insert(0, sys.argv[1]); "
            "from netaudit import cmd_probe, gate, signatures; from netaudit.config import GateSettings; "
            "cProfile.run('gate.evaluate(signatures.load(), GateSettings(), {}, None)', sys.argv[2])"
        )
        subprocess.run([args.python, "-c", code, str(REPO), str(prof)], env=gate_env, check=False,
                       capture_output=True)  # fmt: skip
        result["evaluate_profile_cumulative"] = profile_top(str(prof), args.profile_lines, "cumulative")


# Output ---------------------------------------------------------------------------------------


def _tail(path: Path, limit: int = 600) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").strip()[-limit:].replace("\n", " | ")
    return ""


def markdown(record: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = record["meta"]
    lines += [f"# cluster_bench ({meta['git']}, netaudit tree {meta['tree_sha256'][:12]}, "
              f"{meta['cpus']} CPUs, Python {meta['python_version']})", ""]  # fmt: skip
    if "cluster" in record:
        c = record["cluster"]
        g = c["generated"]
        lines += [
            f"## Simulated cluster: {g['nodes']} nodes", "",
            f"* listeners {g['listeners_total']} (per node min/median/max "
            f"{'/'.join(str(round(x)) for x in g['listeners_per_node'])}, PyTorch "
            f"{'/'.join(str(round(x)) for x in g['pytorch_per_node'])}); interfaces per node "
            f"{g['interfaces_per_node'][0]}-{g['interfaces_per_node'][1]}; services {g['services']}",
            f"* files {g['files_bytes'] / 1e6:.0f} MB (median {g['file_bytes_median'] / 1e3:.0f} kB a node), "
            f"bundle {g['bundle_bytes'] / 1e6:.0f} MB; scope {' '.join(c['scope'])}", "",
            "| whole process (`scan --dry-run --format json`) | runs | wall median | min-max | CPU "
            "| peak RSS | endpoints | probes | report |",
            "|---|---|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        checked: dict[str, dict[str, Any]] = {}
        for run in c["runs"]:
            if run["warmup"]:
                checked[run["variant"]] = run
            else:
                by_variant[run["variant"]].append(run)
        for variant, first in checked.items():
            if "error" in first:
                lines.append(f"| {variant} | failed: exit {first['exit']} after {first['wall_s']:.2f} s, "
                             f"{first['maxrss_mb']:.0f} MB: {first['error'][-160:]} |||||||")  # fmt: skip
                continue
            runs = by_variant.get(variant) or [first]
            walls = [r["wall_s"] for r in runs]
            lines.append(
                f"| {variant} | {len(by_variant.get(variant, []))} | {median(walls):.2f} s "
                f"| {min(walls):.2f}-{max(walls):.2f} s "
                f"| {median([r['user_s'] + r['sys_s'] for r in runs]):.2f} s "
                f"| {max(r['maxrss_mb'] for r in runs):.0f} MB | {first['endpoints']} | {first['probes']} "
                f"| {first['report_mb']} MB |"
            )
        files = by_variant.get("files")
        if files and g["nodes"] >= 4096:
            wall = median([r["wall_s"] for r in files])
            peak = max(r["maxrss_mb"] for r in files)
            verdict = "met" if wall <= CLUSTER_TARGET_S and peak <= CLUSTER_TARGET_MB else "MISSED"
            target = f"<= {CLUSTER_TARGET_S:.0f} s median and <= {CLUSTER_TARGET_MB} MB peak RSS"
            got = f"{verdict} ({wall:.2f} s, {peak:.0f} MB)"
            lines += ["", f"Target (issue 8, `files`, {g['nodes']} nodes): {target}: {got}"]
        stages = c.get("stages")
        if stages:
            facts = stages["facts"]
            repeats = len(next(iter(stages["timings"].values())))
            lines += [
                "", f"In-process pieces (median of {repeats}; child peak RSS "
                f"{stages['maxrss_mb']:.0f} MB): {facts['endpoints']} endpoints, {facts['probes']} probes, "
                f"{facts['findings']} findings {facts['findings_by_rule']}, dry-run JSON "
                f"{facts['dry_run_json_mb']} MB, scanned JSON {facts['scanned_json_mb']} MB, table "
                f"{facts['table_kb'] / 1e3:.1f} MB; synthetic attempts: {stages.get('shares')}", "",
                "| piece | median | per node |", "|---|---|---|",
            ]  # fmt: skip
            nodes = g["nodes"]
            for name, values in stages["timings"].items():
                value = median(values)
                lines.append(f"| {name} | {value:.3f} s | {value / nodes * 1e3:.2f} ms |")
    if "fanout" in record:
        f = record["fanout"]
        count = record["args"]["fanout_nodes"]
        lines += ["", f"## Fan-out: {count} namespaces (set-up {f['setup_s']} s)", "",
                  "| width | rounds | wall median | per-node median | per-node p90 | CPU (all probes) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        by_width: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for run in f["rounds"]:
            by_width[run["width"]].append(run)
        lines[-2] = lines[-2].replace("CPU (all probes) |", "CPU (all probes) | CPU per node |")
        lines[-1] += "---|"
        for width, runs in sorted(by_width.items()):
            cpu = median([r["cpu_s"] for r in runs])
            lines.append(
                f"| {width} | {len(runs)} | {median([r['wall_s'] for r in runs]):.2f} s "
                f"| {median([r['per_node_median_s'] for r in runs]) * 1e3:.0f} ms "
                f"| {median([r['per_node_p90_s'] for r in runs]) * 1e3:.0f} ms "
                f"| {cpu:.1f} s | {cpu / count * 1e3:.0f} ms |"
            )
        for run in f["cli"]:
            lines.append(f"| CLI `scan --config` width {run['width']} | 1 | {run['wall_s']:.2f} s | | "
                         f"| {run['user_s'] + run['sys_s']:.1f} s (scan and its probes; scan peak "
                         f"{run['maxrss_mb']:.0f} MB) | |")  # fmt: skip
    if "gate" in record:
        gt = record["gate"]
        lines += ["", "## Gate", "",
                  f"Load before/after: {gt['context_before']['loadavg']} / {gt['context_after']['loadavg']}; "
                  f"{gt['context_before']['processes']} processes, {gt['context_before']['fds']} fds, "
                  f"namespaces {gt['context_before']['netns'] or 'none'} besides the root; what the gate "
                  f"inspects: {gt.get('node')}; gate exit {gt['check']['exit']}", "",
                  "| command | runs | median | min-max | CPU | peak RSS | vs target 150 ms |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, case in gt["cases"].items():
            verdict = ""
            if "netaudit gate" in label:
                verdict = "met" if case["median_ms"] < GATE_TARGET_S * 1000 else "MISSED"
            lines.append(
                f"| `{label}` | {case['runs']} | {case['median_ms']:.1f} ms "
                f"| {case['min_ms']:.1f}-{case['max_ms']:.1f} ms | {case['cpu_ms']:.1f} ms "
                f"| {case['maxrss_mb']:.1f} MB | {verdict} |"
            )
        imp = gt["importtime_gate"]
        lines += ["", f"-X importtime: gate {imp['total_ms']:.1f} ms in {imp['modules']} modules, bare "
                  f"{gt['importtime_bare']['total_ms']:.1f} ms in {gt['importtime_bare']['modules']}; "
                  "top 15 by cumulative time (under -X importtime, which inflates them):", ""]  # fmt: skip
        lines += ["| module | nesting depth | cumulative | self |", "|---|---|---|---|"]
        lines += [f"| {row['module']} | {row['depth']} | {row['cumulative_ms']:.1f} ms "
                  f"| {row['self_ms']:.1f} ms |" for row in imp["top_cumulative"][:15]]  # fmt: skip
    lines += [
        "",
        "## Context (loadavg 1/5/15 min, CPU busy over 1 s, other namespaces, busiest processes)",
        "",
    ]
    for snap in record.get("context", []):
        others = "; ".join(snap["busy_processes"][:3]) or "-"
        lines.append(
            f"* {snap['label']} {snap['at']}: load {snap['loadavg']}, busy {snap['cpu_busy_1s']:.0%}, "
            f"{snap['processes']} processes / {snap['fds']} fds, {len(snap['netns'])} namespaces; {others}"
        )
    for key, title in (
        (("cluster", "profile_tottime"), "cProfile: whole `scan --dry-run` (files), by tottime"),
        (("cluster", "stages_profile_tottime"), "cProfile: plan.build + policy.evaluate + JSON report"),
        (("fanout", "probe_profile_tottime"), "cProfile: one `probe --namespaces own`, by tottime"),
        (("gate", "evaluate_profile_cumulative"), "cProfile: gate.evaluate in-process, by cumulative"),
    ):
        rows = record.get(key[0], {}).get(key[1])
        if rows:
            lines += ["", f"### {title}", "", *(f"    {row}" for row in rows)]
    return "\n".join(lines) + "\n"


def tree_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "netaudit").rglob("*.py")) + sorted((REPO / "probes").glob("*.toml")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _git() -> str:
    proc = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    return proc.stdout.strip() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default="gate,fanout,cluster", help="any of gate,fanout,cluster")
    parser.add_argument("--nodes", type=int, default=4096, help="simulated nodes (default 4096, max 16384)")
    parser.add_argument("--scope", nargs="*", help="scan scope (default: the CIDRs covering the nodes)")
    parser.add_argument(
        "--scan-variants",
        type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
        default=["files", "stdin"],
        help="whole-process scans: files (one --inventory each), stdin (a bundle), wide (/16 scopes, "
        "max_targets raised), nogc (files with gc.disable(), a what-if); default files,stdin",
    )
    parser.add_argument("--no-stages", dest="stages", action="store_false", help="skip the in-process pieces")
    parser.add_argument("--open-share", type=float, default=0.02, help="synthetic attempts: open share")
    parser.add_argument("--closed-share", type=float, default=0.08, help="synthetic attempts: closed share")
    parser.add_argument("--runs", type=int, default=3, help="timed whole-process scans per variant")
    parser.add_argument("--repeat", type=int, default=3, help="repeats of each in-process piece")
    parser.add_argument("--fanout-nodes", type=int, default=64)
    parser.add_argument("--widths", type=lambda t: [int(x) for x in t.split(",")], default=[16, 32, 64])
    parser.add_argument("--fanout-rounds", type=int, default=3)
    parser.add_argument("--gate-runs", type=int, default=21)
    parser.add_argument("--python", default=sys.executable, help="interpreter for netaudit (not a shim)")
    parser.add_argument("--out", help="work directory (default: a temporary one, deleted)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--quiet-threshold", type=float, default=0.25, help="busy CPU share to wait below")
    parser.add_argument("--quiet-timeout", type=float, default=60.0, help="max wait for quiet, s")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not set(args.parts) <= {"gate", "fanout", "cluster"}:
        parser.error("--parts: gate, fanout, cluster")
    if not 1 <= args.nodes <= 16384:
        parser.error("--nodes: 1..16384 (the address blocks of the simulation)")
    if not set(args.scan_variants) <= {"files", "stdin", "wide", "nogc"}:
        parser.error("--scan-variants: files, stdin, wide, nogc")
    if args.gate_runs < 21:
        parser.error("--gate-runs: at least 21")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the labs' close()


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:2] == ["--child", "stages"]:
        return stages_child(raw[2:])
    args = parse_args(raw)
    if os.geteuid() != 0:
        print("cluster_bench: run as root (network namespaces)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cluster_bench."))
    out.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
           "LANG": "C.UTF-8"}  # fmt: skip
    record: dict[str, Any] = {
        "meta": {
            "git": _git(), "tree_sha256": tree_digest(), "cpus": os.cpu_count(),
            "python": args.python, "python_version": sys.version.split()[0],
            "kernel": os.uname().release, "started": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "args": {k: v for k, v in vars(args).items()},
        "context": [context_snapshot("start")],
    }  # fmt: skip
    status = 0
    start_runner(args.python)
    try:
        for part in args.parts:
            busy = wait_quiet(args.quiet_threshold, args.quiet_timeout)
            record["context"].append({**context_snapshot(f"before {part}"), "waited_busy": round(busy, 3)})
            {"gate": gate_part, "fanout": fanout_part, "cluster": cluster_part}[part](args, out, env, record)
    except BenchError as error:
        print(f"cluster_bench: {error}", file=sys.stderr)
        status = 2
    finally:
        stop_runner()
        record["context"].append(context_snapshot("end"))
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)
    print(markdown(record))
    return status


if __name__ == "__main__":
    sys.exit(main())
