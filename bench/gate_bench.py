#!/usr/bin/env python3
"""Whole-process benchmark of `netaudit gate` against a bare interpreter of the same venv.

The Slurm prolog runs the gate before every job, so its figure is a whole process, exec to
exit, next to what the interpreter alone costs (`python -c pass`): issue 8 asks for at most
100 ms and 4x the interpreter on an idle node, and at most 0.25 s on a node with 10,000
listeners. Configurations (`--config`, repeatable):

* `idle`: the machine as it is, nothing added.
* `N,P,loopback`: N listeners spread round-robin over P forked processes on 127.0.0.1 and
  ::1 (one in four), as bench/probe_bench.py builds them. Nothing here is exposed, so the
  gate's answer needs no process facts at all.
* `N,P,services`: the same N listeners on the wildcard addresses (0.0.0.0, and [::] one in
  four) of a network namespace the bench creates (one, shared by the P processes, with
  only its loopback, which stays down: nothing can reach it). Every listener is exposed and
  owned by no Slurm job, so the gate reads every owner and classifies it: `8,4,services` is
  an idle compute node as the gate sees it (sshd, slurmd, exporters), and passes.
* `N,P,exposed`: the same, and one more process there looks like a leftover TCPStore (a
  file named libtorch_cpu.so mapped, a thread named pt_tcpstore, a dual-stack listener):
  the gate must fail the node for it, naming it.

Targets: `idle` and `services` with at most 100 listeners are idle nodes (<= 100 ms, <= 4x
the interpreter); 10,000 listeners or more, <= 0.25 s.

Per configuration, after the CPU is quiet: warm-up rounds, the last one's gate answer checked
against the reference (the probe's inventory judged by gate.stale_listeners, computed in a
separate process), then PAIRS timed rounds of `python -c pass` then `python -m netaudit gate`,
and with --compare-cwd the gate of another checkout too (`git archive HEAD netaudit probes |
tar -x -C DIR`): on a busy machine only a comparison inside each round means much. Each run
is one process, posix_spawn to wait4 (its own rusage), started by a small `python -S` helper
so that its peak RSS is its own. Bytecode is cached in a scratch
PYTHONPYCACHEPREFIX for both commands (an installed netaudit has its .pyc files; a checkout
run with PYTHONDONTWRITEBYTECODE=1 would recompile every changed module on each run).

Run by hand as root (the gate must see every process's fds and enter the namespace):

    python3 bench/gate_bench.py                               # the four default configurations
    python3 bench/gate_bench.py --config idle --pairs 21 --quiet-threshold 0.5
    python3 bench/gate_bench.py --importtime 7                # plus `-X importtime` of the gate
    python3 bench/gate_bench.py --compare-cwd /tmp/before     # and another checkout's gate, in every round

Loopback and the bench's own namespace only: nothing binds outside them, nothing is sent.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The fixture's and the noise helpers the probe's bench already has (run from bench/, as both are)
from probe_bench import _close_fds_except, _cpu_times, _raise_nofile, _tail, loadavg, wait_quiet

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("idle", "8,4,services", "10000,200,loopback", "10000,200,exposed")
LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT
CLONE_NEWNET = 0x40000000  # <linux/sched.h>
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1  # <linux/prctl.h>
FD_SLACK = 64
GATE_OK = (0, 1)  # 1 is a failing node: an answer, not an error

TARGET_IDLE_S = 0.100  # issue 8: <= 100 ms on an idle node ...
TARGET_IDLE_RATIO = 4.0  # ... and <= 4x a bare interpreter of the same venv
TARGET_10K_S = 0.250  # <= 0.25 s on a node with 10,000 listeners


class BenchError(Exception):
    """The fixture or a measured command failed: one line, exit 2."""


# Fixture ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    n: int
    p: int
    scope: str  # "idle" | "loopback" | "services" | "exposed"

    @property
    def label(self) -> str:
        return "idle" if self.scope == "idle" else f"{self.n},{self.p},{self.scope}"


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - loaded once, before the first fork
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _enter(netns_fd: int | None) -> None:
    if netns_fd is not None and libc().setns(netns_fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _listen(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in address:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address == "::" else 1)
    sock.bind((address, port))
    sock.listen(16)
    return sock


def _hold_namespace(_netns_fd: int | None, stop_r: int, ready_w: int) -> None:
    if libc().unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    os.write(ready_w, b"R")
    os.read(stop_r, 1)


def _hold_listeners(items: list[tuple[str, int]], netns_fd: int | None, stop_r: int, ready_w: int) -> None:
    _enter(netns_fd)
    _raise_nofile(len(items) + FD_SLACK)
    held = [_listen(address, port) for address, port in items]
    os.write(ready_w, b"R")
    os.read(stop_r, 1)
    for sock in held:
        sock.close()


def _leftover_store(library: str, port: int, netns_fd: int | None, stop_r: int, ready_w: int) -> None:
    """What the gate exists to catch: a TCPStore look-alike nobody's job owns."""
    _enter(netns_fd)
    with open(library, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
    named = threading.Event()

    def store_thread() -> None:
        libc().prctl(PR_SET_NAME, b"pt_tcpstore", 0, 0, 0)
        named.set()
        os.read(stop_r, 1)

    threading.Thread(target=store_thread, daemon=True).start()
    named.wait(10)
    sock = _listen("::", port)
    os.write(ready_w, b"R")
    os.read(stop_r, 1)
    sock.close()
    mapped.close()


class Fixture:
    """The forked processes of one configuration. ``close()`` ends only the pids it forked."""

    def __init__(self, config: Config, base_port: int, scratch: str) -> None:
        self.config, self.base_port, self.scratch = config, base_port, scratch
        self.children: list[tuple[int, int]] = []  # (pid, stop pipe's write end)
        self.store_pid: int | None = None
        self.store_port = base_port + config.n

    def _fork(self, body: object, *args: object, netns_fd: int | None = None) -> int:
        parent = os.getpid()
        stop_r, stop_w = os.pipe()
        ready_r, ready_w = os.pipe()
        keep = {stop_r, ready_w} | ({netns_fd} if netns_fd is not None else set())
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:
                    os._exit(1)
                _close_fds_except(keep)
                body(*args, netns_fd, stop_r, ready_w)  # type: ignore[operator]
                code = 0
            except BaseException as error:
                with contextlib.suppress(OSError):
                    os.write(ready_w, b"E" + repr(error).encode()[:300])
            finally:
                os._exit(code)
        os.close(stop_r)
        os.close(ready_w)
        self.children.append((pid, stop_w))
        readable, _, _ = select.select([ready_r], [], [], 120)
        token = os.read(ready_r, 512) if readable else b""
        os.close(ready_r)
        if token != b"R":
            raise BenchError(
                f"fixture child {pid} failed: {token[1:].decode(errors='replace') or 'no answer'}"
            )
        return pid

    def start(self) -> None:
        config = self.config
        if config.scope == "idle":
            return
        netns_fd = None
        wildcard = config.scope in ("exposed", "services")
        if wildcard:
            holder = self._fork(_hold_namespace)
            netns_fd = os.open(f"/proc/{holder}/ns/net", os.O_RDONLY)
        try:
            assigned: list[list[tuple[str, int]]] = [[] for _ in range(config.p)]
            for i in range(config.n):
                v6 = i % 4 == 3
                address = ("::" if v6 else "0.0.0.0") if wildcard else ("::1" if v6 else "127.0.0.1")
                assigned[i % config.p].append((address, self.base_port + i))
            for items in assigned:
                self._fork(_hold_listeners, items, netns_fd=netns_fd)
            if config.scope == "exposed":
                library = f"{self.scratch}/libtorch_cpu.so"
                Path(library).write_bytes(b"\0" * mmap.PAGESIZE)
                self.store_pid = self._fork(_leftover_store, library, self.store_port, netns_fd=netns_fd)
        finally:
            if netns_fd is not None:
                os.close(netns_fd)

    def close(self, timeout: float = 15.0) -> list[int]:
        for _pid, stop_w in self.children:
            with contextlib.suppress(OSError):
                os.close(stop_w)
        waiting = {pid for pid, _stop in self.children}
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for pid in list(waiting):
                try:
                    done, _status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    waiting.discard(pid)
            if waiting:
                time.sleep(0.01)
        for pid in waiting:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children = []
        return sorted(waiting)


def busy_ports(ports: range) -> list[int]:
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name, encoding="ascii") as handle:
            next(handle)
            found |= {int(line.split()[1].rsplit(":", 1)[1], 16) for line in handle}
    return sorted(found & set(ports))


# Machine noise ------------------------------------------------------------------------------


def context() -> dict[str, int]:
    """What every gate walks: processes, other network namespaces, listeners of this one."""
    pids = [name for name in os.listdir("/proc") if name.isdigit()]
    namespaces = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            namespaces.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    listening = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name, encoding="ascii") as handle:
            listening += sum(1 for line in handle if line.split()[3:4] == ["0A"])
    return {"processes": len(pids), "netns": len(namespaces), "root_ns_listeners": listening}


# Timed runs ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    status: int


_SPAWNER = r"""
import json, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
reset = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
for line in sys.stdin.buffer:
    argv, out, err, env, cwd = json.loads(line)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        (os.POSIX_SPAWN_OPEN, 2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
    ]
    os.chdir(cwd)
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsigdef=reset)
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    reply = [wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]
    try:
        sys.stdout.buffer.write(json.dumps(reply).encode() + b"\n")
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        os._exit(0)
"""


class Spawner:
    """Times one process at a time, exec to exit, with that process's own rusage (wait4)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-c", _SPAWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def run(self, argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> Run:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([argv, out, err, env, cwd]).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise BenchError("the spawner helper exited")
        return Run(*json.loads(line))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The reference: the probe's inventory judged by the same rule, in its own process ----------

_REFERENCE = r"""
import json, sys
from netaudit import gate, inventory, signatures, slurmjobs
found = inventory.collect(signatures.load())
print(json.dumps(gate.stale_listeners(found, slurmjobs.active_jobs(), "/proc")))
"""


def reference(python: str, env: dict[str, str], cwd: str) -> list[str]:
    done = subprocess.run(
        [python, "-c", _REFERENCE], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"reference evaluation failed: {done.stderr[-600:]}")
    reasons: list[str] = json.loads(done.stdout)
    return reasons


# One configuration --------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    config: str
    n: int
    scope: str
    context: dict[str, int]
    loadavg_before: str
    quiet_busy: float
    quiet_ok: bool
    answer: str = ""
    details: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)
    store_named: bool | None = None
    gate: list[Run] = field(default_factory=list)
    bare: list[Run] = field(default_factory=list)
    compared: list[Run] = field(default_factory=list)  # --compare-cwd's gate, same rounds
    pair_foreign: list[float] = field(default_factory=list)
    discarded: list[tuple[list[Run], float]] = field(default_factory=list)
    teardown_killed: list[int] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [g.wall_s / b.wall_s for g, b in zip(self.gate, self.bare, strict=True)]

    def median(self, runs: list[Run], name: str) -> float:
        return float(statistics.median(getattr(run, name) for run in runs))

    @property
    def is_idle_node(self) -> bool:
        return self.scope == "idle" or (self.scope == "services" and self.n <= 100)

    @property
    def speedups(self) -> list[float]:
        """--compare-cwd's gate over this one, per round."""
        return [c.wall_s / g.wall_s for c, g in zip(self.compared, self.gate, strict=True)]

    @property
    def is_answer_exact(self) -> bool:
        return self.details == self.reference

    def targets(self) -> list[tuple[str, float, str, bool]]:
        gate_s = self.median(self.gate, "wall_s")
        found = []
        if self.is_idle_node:
            ratio = statistics.median(self.ratios)
            found.append(
                (
                    "gate on an idle node",
                    gate_s * 1000,
                    f"<= {TARGET_IDLE_S * 1000:.0f} ms",
                    gate_s <= TARGET_IDLE_S,
                )
            )
            found.append(
                ("gate / bare interpreter", ratio, f"<= {TARGET_IDLE_RATIO:.1f}x", ratio <= TARGET_IDLE_RATIO)
            )
        elif self.n >= 10000:
            found.append(
                (
                    "gate at 10,000 listeners",
                    gate_s * 1000,
                    f"<= {TARGET_10K_S * 1000:.0f} ms",
                    gate_s <= TARGET_10K_S,
                )
            )
        return found


def foreign_share(before: tuple[int, int], after: tuple[int, int], runs: list[Run]) -> float:
    """Share of all CPUs that other processes used while ``runs`` ran."""
    tick = os.sysconf("SC_CLK_TCK")
    busy = ((after[1] - before[1]) - (after[0] - before[0])) / tick
    own = sum(run.user_s + run.sys_s for run in runs)
    span = sum(run.wall_s for run in runs) * (os.cpu_count() or 1)
    return max(0.0, busy - own) / span


def run_config(config: Config, args: argparse.Namespace, spawner: Spawner, scratch: str) -> Result:
    fixture = Fixture(config, args.base_port, scratch)
    if config.scope == "loopback":
        taken = busy_ports(range(args.base_port, args.base_port + config.n))
        if taken:
            raise BenchError(f"fixture ports in use: {taken[:10]}...: choose another --base-port")
    out, err = f"{scratch}/gate.json", f"{scratch}/gate.err"
    bare_argv = [args.python, "-c", "pass"]
    gate_argv = [args.python, "-m", "netaudit", "gate", "--format", "json"]
    try:
        fixture.start()
        before = loadavg()
        busy, quiet = (0.0, True)
        if not args.no_quiet:
            busy, _waited, quiet = wait_quiet(args.quiet_threshold, 1.0, args.quiet_timeout)
        result = Result(config.label, config.n, config.scope, context(), before, round(busy, 3), quiet)
        for _ in range(args.warmup):  # also fills the bytecode cache and the signature cache
            spawner.run(bare_argv, args.env, args.cwd, os.devnull, err)
            if args.compare_cwd:
                spawner.run(gate_argv, args.env, args.compare_cwd, os.devnull, err)
            warm = spawner.run(gate_argv, args.env, args.cwd, out, err)
        if warm.status not in GATE_OK:
            raise BenchError(f"the gate exited {warm.status}: {_tail(err, 600)}")
        answer = json.loads(Path(out).read_text(encoding="utf-8"))
        result.answer, result.details = answer["status"], answer["details"]
        result.reference = reference(args.python, args.env, args.cwd)
        if fixture.store_pid is not None:
            wanted = f"stale exposed tcpstore [::]:{fixture.store_port} (pid {fixture.store_pid} "
            result.store_named = any(line.startswith(wanted) for line in result.details)

        while len(result.gate) < args.pairs:
            if not args.no_quiet:
                wait_quiet(args.quiet_threshold, 0.3, args.pair_quiet_timeout)
            cpu_before = _cpu_times()
            bare = spawner.run(bare_argv, args.env, args.cwd, os.devnull, err)
            gate = spawner.run(gate_argv, args.env, args.cwd, os.devnull, err)
            runs = [bare, gate]
            if args.compare_cwd:
                runs.append(spawner.run(gate_argv, args.env, args.compare_cwd, os.devnull, err))
            foreign = foreign_share(cpu_before, _cpu_times(), runs)
            if any(run.status not in GATE_OK for run in runs[1:]):
                raise BenchError(f"a gate exited {[run.status for run in runs[1:]]}: {_tail(err, 600)}")
            if foreign > args.noise_threshold and len(result.discarded) < args.max_redo:
                result.discarded.append((runs, round(foreign, 3)))
                continue
            result.bare.append(bare)
            result.gate.append(gate)
            result.compared.extend(runs[2:])
            result.pair_foreign.append(round(foreign, 3))
    finally:
        killed = fixture.close()
    result.teardown_killed = killed
    return result


# -X importtime ------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def importtime(args: argparse.Namespace, runs: int) -> dict[str, object]:
    """Median self and cumulative import time per module of `netaudit gate` (its forked worker
    included: it inherits stderr), and the total against `-c pass`."""
    per_module: dict[str, list[tuple[int, int]]] = {}
    totals: dict[str, list[int]] = {"gate": [], "bare": []}
    for _ in range(runs):
        for label, argv in (("bare", ["-c", "pass"]), ("gate", ["-m", "netaudit", "gate"])):
            done = subprocess.run(
                [args.python, "-X", "importtime", *argv],
                env=args.env,
                cwd=args.cwd,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            total = 0
            for line in done.stderr.splitlines():
                match = _IMPORT_LINE.match(line)
                if not match:
                    continue
                total += int(match[1])
                if label == "gate":
                    per_module.setdefault(match[4], []).append((int(match[1]), int(match[2])))
            totals[label].append(total)
    rows = sorted(
        (
            (
                name,
                statistics.median(s for s, _c in values) / 1000,
                statistics.median(c for _s, c in values) / 1000,
            )
            for name, values in per_module.items()
        ),
        key=lambda row: -row[2],
    )
    return {
        "runs": runs,
        "gate_total_ms": statistics.median(totals["gate"]) / 1000,
        "bare_total_ms": statistics.median(totals["bare"]) / 1000,
        "modules": len(per_module),
        "netaudit_modules": sorted(name for name in per_module if name.startswith("netaudit")),
        "top": rows[:30],
    }


# Report -------------------------------------------------------------------------------------


def markdown(results: list[Result], meta: dict[str, object]) -> str:
    lines = [
        f"## netaudit gate vs `python -c pass` ({meta['host']}, {meta['cpus']} CPUs, kernel "
        f"{meta['kernel']}, Python {meta['python']}, netaudit {meta['netaudit_rev']})",
        "",
        f"Whole process, posix_spawn to wait4, stdout to /dev/null. Medians of {meta['pairs']} "
        "alternating pairs after warm-up; ratio = median of the per-pair ratios (min–max).",
        "",
        "| configuration | processes / netns / root-ns listeners | gate s | bare s | ratio | gate user/sys s "
        "| gate peak RSS MB | answer (= reference) | load before | targets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratios = r.ratios
        targets = "; ".join(f"{name}: {'met' if met else '**MISSED**'}" for name, _v, _l, met in r.targets())
        exact = "yes" if r.is_answer_exact else "**no**"
        store = "" if r.store_named is None else (", store named" if r.store_named else ", **store missed**")
        ctx = r.context
        lines.append(
            f"| {r.config} | {ctx['processes']} / {ctx['netns']} / {ctx['root_ns_listeners']} | "
            f"{r.median(r.gate, 'wall_s'):.3f} | {r.median(r.bare, 'wall_s'):.3f} | "
            f"**{statistics.median(ratios):.2f}×** ({min(ratios):.2f}–{max(ratios):.2f}) | "
            f"{r.median(r.gate, 'user_s'):.3f} / {r.median(r.gate, 'sys_s'):.3f} | "
            f"{r.median(r.gate, 'maxrss_kib') * 1024 / 1e6:.1f} | {r.answer} ({exact}{store}) | "
            f"{r.loadavg_before} | {targets or '—'} |"
        )
    notes = []
    for r in results:
        if r.discarded:
            notes.append(f"{r.config}: {len(r.discarded)} pairs discarded and redone (other load)")
        noisy = sum(1 for share in r.pair_foreign if share > float(str(meta["noise_threshold"])))
        if noisy:
            notes.append(f"{r.config}: {noisy} kept pairs ran with other load above the noise threshold")
        if not r.quiet_ok:
            notes.append(f"{r.config}: CPU never got quiet ({r.quiet_busy:.0%} busy); numbers noisy")
        if not r.is_answer_exact:
            notes.append(
                f"{r.config}: gate {r.details[:3]} vs reference {r.reference[:3]} (the machine "
                "may have changed between the two reads)"
            )
        if r.compared:
            speedups = r.speedups
            notes.append(
                f"{r.config}: --compare-cwd's gate {r.median(r.compared, 'wall_s'):.3f} s in the same "
                f"rounds: **{statistics.median(speedups):.2f}×** this one's time "
                f"({min(speedups):.2f}–{max(speedups):.2f})"
            )
        if r.teardown_killed:
            notes.append(f"{r.config}: teardown killed {len(r.teardown_killed)} children")
    if notes:
        lines += ["", "Notes:", *[f"- {note}" for note in notes]]
    imports = meta.get("importtime")
    if isinstance(imports, dict):
        lines += [
            "",
            f"`-X importtime` (median of {imports['runs']}): gate {imports['gate_total_ms']:.1f} ms in "
            f"{imports['modules']} modules, `-c pass` {imports['bare_total_ms']:.1f} ms.",
            "",
            "| module | self ms | cumulative ms |",
            "|---|---|---|",
            *[f"| {name} | {own:.2f} | {total:.2f} |" for name, own, total in imports["top"]],
        ]
    return "\n".join(lines) + "\n"


def _config(text: str) -> Config:
    if text == "idle":
        return Config(0, 0, "idle")
    parts = text.split(",")
    if len(parts) != 3 or parts[2] not in ("loopback", "services", "exposed"):
        raise argparse.ArgumentTypeError("expected idle or N,P,loopback|services|exposed")
    n, p = int(parts[0]), int(parts[1])
    if n < 1 or p < 1 or p > n:
        raise argparse.ArgumentTypeError("need 1 <= P <= N")
    return Config(n, p, parts[2])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        type=_config,
        action="append",
        metavar="idle|N,P,SCOPE",
        help="idle, or N listeners over P processes, SCOPE loopback, services or exposed "
        "(repeatable; default: idle 8,4,services 10000,200,loopback 10000,200,exposed)",
    )
    parser.add_argument("--pairs", type=int, default=21, help="timed pairs (default 21)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed pairs, the last one checked (default 2)"
    )
    parser.add_argument(
        "--base-port", type=int, default=20000, help="fixture ports BASE..BASE+N (default 20000)"
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for both commands (default: this one; give the real path, not a pyenv shim)",
    )
    parser.add_argument(
        "--cwd", default=str(REPO), help="where `python -m netaudit` runs (default: this checkout)"
    )
    parser.add_argument(
        "--compare-cwd",
        metavar="DIR",
        help="also time the gate of the netaudit in DIR in every round (a before/after pair)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="CPU busy fraction (all CPUs) below which the machine is quiet (default 0.15)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=120.0,
        help="longest wait for quiet before a configuration (s, default 120)",
    )
    parser.add_argument(
        "--pair-quiet-timeout",
        type=float,
        default=10.0,
        help="longest wait for quiet before each pair (s, default 10)",
    )
    parser.add_argument(
        "--noise-threshold",
        type=float,
        default=0.15,
        help="redo a pair when other processes used more than this share of all CPUs (default 0.15)",
    )
    parser.add_argument("--max-redo", type=int, default=20, help="most pairs redone per configuration")
    parser.add_argument("--no-quiet", action="store_true", help="do not wait for a quiet CPU")
    parser.add_argument(
        "--importtime",
        type=int,
        default=0,
        metavar="RUNS",
        help="also run `-X importtime` of the gate RUNS times (default 0: skip)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every run here")
    args = parser.parse_args(argv)
    args.config = args.config or [_config(text) for text in DEFAULT_CONFIGS]
    if args.pairs < 1 or args.warmup < 1:
        parser.error("--pairs and --warmup must be at least 1")
    return args


def _revision(cwd: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", cwd, "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.python = shutil.which(args.python) or args.python
    args.cwd = os.path.abspath(args.cwd)
    args.compare_cwd = os.path.abspath(args.compare_cwd) if args.compare_cwd else None

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    if os.geteuid() != 0:
        print("warning: not root: the gate sees only your processes; `exposed` needs root", file=sys.stderr)
    spawner = None
    try:
        with tempfile.TemporaryDirectory(prefix="gate_bench.") as scratch:
            env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = f"{scratch}/pycache"
            args.env = env
            spawner = Spawner()
            meta: dict[str, object] = {
                "host": platform.node(),
                "cpus": os.cpu_count(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "netaudit_rev": _revision(args.cwd),
                "cwd": args.cwd,
                "interpreter": args.python,
                "pairs": args.pairs,
                "compare_cwd": args.compare_cwd,
                "quiet_threshold": args.quiet_threshold,
                "noise_threshold": args.noise_threshold,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            results = []
            for config in args.config:
                print(f"{config.label} (load {loadavg()})", file=sys.stderr)
                results.append(run_config(config, args, spawner, scratch))
            if args.importtime:
                meta["importtime"] = importtime(args, args.importtime)
        print(markdown(results, meta))
        if args.json:
            raw = {"meta": meta, "results": [{**asdict(r), "ratios": r.ratios} for r in results]}
            Path(args.json).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    except BenchError as error:
        print(f"gate_bench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gate_bench: interrupted; fixture torn down", file=sys.stderr)
        return 130
    finally:
        if spawner is not None:
            spawner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
