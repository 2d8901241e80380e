"""The unprivileged fallback scanner: a plain non-blocking connect(), no bytes, closed at once.

THIS COMPLETES TCP HANDSHAKES. The target's application accept()s a connection that then
resets. That is harmless to TCPStore, Gloo and NCCL listeners, and fatal to TensorPipe (RPC)
listeners: one connect+close closes them for good (research/pytorch-ground-truth.md §5). The
caller decides which specs are safe to connect (DESIGN.md §5: high-confidence classification
from a fresh inventory, or ``--allow-connect``); this module trusts the caller and never
checks.

How it works: the same pacing as the half-open scanner (netaudit.scan.pacing: token bucket,
per-host window, one deadline queue with RTT-adaptive timeouts, application-level retries),
one socket per probe in flight watched by one epoll set, and a global cap on sockets in flight
that fits RLIMIT_NOFILE. Each socket is bound to its source address (and its interface with
SO_BINDTODEVICE where permitted), and closed with SO_LINGER 0 so that an established probe
ends with an RST and leaves no TIME_WAIT behind (perf-baselines.md "Pitfalls" 8).

epoll, not asyncio: importing asyncio pulls in ssl, 55 ms of start-up (perf-baselines.md
§C); no thread per probe; and epoll itself rather than the selectors module, whose per-socket
bookkeeping (a key object, lookups on register, unregister and every event) weighed more than
the connect() calls in a profile of 16,384 probes.

Verdicts: connected -> open; ECONNREFUSED -> closed (an RST, or an ICMP port unreachable:
the kernel does not tell them apart); other ICMP errors (EHOSTUNREACH, EACCES for ICMPv6
admin-prohibited, ...) -> filtered; nothing before the timeout -> filtered "timeout".
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from netaudit.models import PortState
from netaudit.scan.egress import Source, canonical, distinct, screen, with_aliases
from netaudit.scan.pacing import Host, Probe, Scheduler
from netaudit.scan.probe_types import ProbeOutcome, ProbeSpec, ScanLimits

# <linux/in.h>: bind() only the address and pick the port at connect(), so probes to
# different targets may share a source port (the 4-tuple stays unique). Since Linux 4.2.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# <linux/tcp.h>: SYN retransmissions before connect() gives up; 1 is the kernel's minimum.
# Retries are the engine's job (the kernel's first retransmission comes after 1 s, RFC 6298
# §2.1 initial RTO), so this only bounds what a timeout above 1 s can add.
TCP_SYNCNT = getattr(socket, "TCP_SYNCNT", 7)
_LINGER_RESET = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}: close = RST
# Descriptors kept free for everything else the process has open or will open meanwhile
# (stdio, the epoll set, netlink, the caller's files).
FD_RESERVE = 64
STOP_POLL_S = 0.05
_SEND_BATCH = 256

_NO_ROUTE_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})


class _ConnectProbe(Probe):
    """Attributes: sock: the socket of the attempt in flight, None between attempts."""

    __slots__ = ("sock",)

    def __init__(self, spec: ProbeSpec, host: Host, index: int) -> None:
        super().__init__(spec, host, index)
        self.sock: socket.socket | None = None


def descriptor_budget(limits: ScanLimits) -> int:
    """Sockets we may hold at once: the configured cap, lowered to the free descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.in_flight_total
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 0
    return max(1, min(limits.in_flight_total, soft - used - FD_RESERVE))


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _verdict(code: int) -> tuple[PortState, str]:
    """The state a finished connect() reports, from its SO_ERROR."""
    if code == 0:
        return PortState.OPEN, "connected"
    if code == errno.ECONNREFUSED:
        return PortState.CLOSED, "refused"
    if code in (errno.ECONNRESET, errno.EPIPE):
        # A reset after the SYN-ACK: the handshake completed and the server closed at once
        # (an accept-and-close service). A RST to the SYN itself reads ECONNREFUSED above.
        return PortState.OPEN, "connected, then reset"
    if code == errno.ETIMEDOUT:
        return PortState.FILTERED, "timeout"
    return PortState.FILTERED, f"unreachable ({_errno_name(code)})"


def _close(sock: socket.socket, *, has_failed: bool = False) -> None:
    """Close with an RST rather than a FIN (no TIME_WAIT). ``has_failed``: its connect()
    ended in an error, so there is no connection to reset and the option is skipped."""
    if not has_failed:
        with contextlib.suppress(OSError):  # already reset by the peer: nothing to linger over
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _Watch:
    """The sockets whose connect() is in flight, in one epoll set, found again by fd."""

    __slots__ = ("_epoll", "_probes")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._probes: dict[int, _ConnectProbe] = {}

    def add(self, sock: socket.socket, probe: _ConnectProbe) -> None:
        fd = sock.fileno()
        self._epoll.register(fd, select.EPOLLOUT)  # writable: the connect() has finished
        self._probes[fd] = probe

    def remove(self, sock: socket.socket) -> None:
        # Before close(): the fd number is reused at once, and an event for a closed fd
        # must never reach the probe that gets its number next.
        fd = sock.fileno()
        self._epoll.unregister(fd)
        del self._probes[fd]

    def wait(self, timeout_s: float) -> list[_ConnectProbe]:
        """Probes whose connect() has finished, waiting up to ``timeout_s`` for one."""
        if not self._probes:
            # Nothing in flight (every probe between attempts): just wait for the next deadline.
            time.sleep(timeout_s)
            return []
        # maxevents covers every socket: one left out could be called a timeout meanwhile.
        events = self._epoll.poll(timeout_s, len(self._probes))
        probes = self._probes
        return [probes[fd] for fd, _mask in events if fd in probes]

    def close(self) -> None:
        self._epoll.close()


class _ConnectEngine:
    def __init__(
        self,
        limits: ScanLimits,
        sources: dict[str, Source],
        watch: _Watch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.sources = sources
        self.watch = watch
        self.clock = clock
        self.scheduler: Scheduler[_ConnectProbe] = Scheduler(
            limits, clock(), in_flight_total=descriptor_budget(limits)
        )
        self.probes: list[_ConnectProbe] = []
        self._can_bind_device = True
        self._spelled: dict[str, str] = {}  # a target has one spec per port: canonicalise it once

    def add(self, spec: ProbeSpec) -> None:
        target = self._spelled.get(spec.address)
        if target is None:
            target = self._spelled[spec.address] = canonical(spec.address)
        host = self.scheduler.host(target)
        probe = _ConnectProbe(spec, host, len(self.probes))
        self.probes.append(probe)
        self.scheduler.add(probe)

    def release(self, probe: _ConnectProbe, *, has_failed: bool = False) -> None:
        if probe.sock is not None:
            self.watch.remove(probe.sock)
            _close(probe.sock, has_failed=has_failed)
            probe.sock = None

    def _finish(
        self,
        probe: _ConnectProbe,
        state: PortState,
        reason: str,
        rtt_s: float | None = None,
        *,
        has_failed: bool = False,
    ) -> ProbeOutcome:
        self.release(probe, has_failed=has_failed)
        self.scheduler.finish(probe, rtt_s)
        return ProbeOutcome(probe.spec, state, reason, rtt_s, probe.syns_sent)

    def _socket_for(self, spec: ProbeSpec) -> socket.socket:
        family = socket.AF_INET6 if ":" in spec.address else socket.AF_INET
        flags = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        sock = socket.socket(family, socket.SOCK_STREAM | flags)
        try:
            interface = self.sources[spec.source].interface
            if interface is not None and self._can_bind_device:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
                except PermissionError:
                    self._can_bind_device = False  # before Linux 5.7 it needs CAP_NET_RAW
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
            sock.bind((spec.source, 0))
        except OSError:
            sock.close()
            raise
        return sock

    def _start(self, probe: _ConnectProbe, now: float) -> ProbeOutcome | None:
        """Begin one attempt; an outcome when it ends (or fails) at once."""
        spec = probe.spec
        attempt = len(probe.sent_at)
        try:
            sock = self._socket_for(spec)
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.scheduler.unsent(probe)
                return None
            reason = f"cannot bind {spec.source} ({error.strerror})"
            return self._finish(probe, PortState.NOT_TESTED, reason)
        code = sock.connect_ex((spec.address, spec.port))
        if code in (errno.EINPROGRESS, 0):
            probe.sock = sock
            self.watch.add(sock, probe)
            self.scheduler.sent(probe, now)
            return None
        sock.close()
        if code in _NO_ROUTE_ERRNOS or (code == errno.EHOSTUNREACH and attempt == 0):
            return self._finish(probe, PortState.NOT_TESTED, f"no route from {spec.source}")
        if code == errno.EADDRNOTAVAIL:
            reason = f"no free source port on {spec.source}"
            return self._finish(probe, PortState.NOT_TESTED, reason)
        if code in (errno.EAGAIN, errno.ENOBUFS):
            self.scheduler.unsent(probe)
            return None
        self.scheduler.sent(probe, now)  # it left and was answered within connect() itself
        state, reason = _verdict(code)
        return self._finish(probe, state, reason, 0.0)

    def send_batch(self, now: float) -> list[ProbeOutcome]:
        outcomes: list[ProbeOutcome] = []
        for _ in range(_SEND_BATCH):
            probe = self.scheduler.next_to_send(now)
            if probe is None:
                break
            outcome = self._start(probe, now)
            if outcome is not None:
                outcomes.append(outcome)
            elif probe.sock is None and not probe.is_done:
                break  # unsent (descriptors or buffers short): wait for answers first
        return outcomes

    def complete(self, probe: _ConnectProbe, now: float) -> ProbeOutcome | None:
        """A socket became writable: its connect() has finished one way or the other."""
        if probe.sock is None or probe.is_done:
            return None
        code = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        state, reason = _verdict(code)
        rtt_s = now - probe.sent_at[-1] if code != errno.ETIMEDOUT else None
        # A connect() that failed left the socket closed (tcp_done): nothing to reset.
        return self._finish(probe, state, reason, rtt_s, has_failed=code != 0)

    def expire(self, now: float) -> list[ProbeOutcome]:
        outcomes: list[ProbeOutcome] = []
        for probe in self.scheduler.pop_expired(now):
            self.release(probe)  # a SYN_SENT socket closes silently; a late SYN-ACK gets RST
            if self.scheduler.attempts_left(probe):
                self.scheduler.retry(probe)
            else:
                outcomes.append(self._finish(probe, PortState.FILTERED, "timeout"))
        return outcomes

    def interrupt(self) -> list[ProbeOutcome]:
        return [
            self._finish(probe, PortState.NOT_TESTED, "interrupted")
            for probe in self.probes
            if not probe.is_done
        ]


def connect_scan(
    specs: Iterable[ProbeSpec],
    limits: ScanLimits | None = None,
    stop_event: threading.Event | None = None,
) -> Iterator[ProbeOutcome]:
    """Connect scan; outcomes stream as they complete, one per distinct spec: a repeated
    spec is probed and reported once, one spelled differently once under each spelling.

    Completes TCP handshakes: pass only specs that are safe to connect to (never TensorPipe).
    ``syns_sent`` counts connect() calls; the kernel may add one SYN retransmission of its
    own per call when the timeout exceeds its 1 s initial RTO.
    """
    limits = limits or ScanLimits()
    unique, aliases = distinct(specs)
    yield from with_aliases(_connect_scan(unique, limits, stop_event), aliases)


def _connect_scan(
    specs: list[ProbeSpec], limits: ScanLimits, stop_event: threading.Event | None
) -> Iterator[ProbeOutcome]:
    rejected, routable, sources = screen(specs)
    yield from rejected
    if not routable:
        return
    watch = _Watch()
    engine = _ConnectEngine(limits, sources, watch)
    for spec in routable:
        engine.add(spec)
    try:
        yield from _run(engine, stop_event)
    finally:
        for probe in engine.probes:
            engine.release(probe)
        watch.close()


def _run(engine: _ConnectEngine, stop_event: threading.Event | None) -> Iterator[ProbeOutcome]:
    scheduler = engine.scheduler
    wait_s = 0.0
    while scheduler.unfinished:
        if stop_event is not None and stop_event.is_set():
            yield from engine.interrupt()
            return
        outcomes: list[ProbeOutcome] = []
        finished = engine.watch.wait(wait_s)
        now = engine.clock()
        # Answers first: a socket whose connect() has finished is never called a timeout.
        for probe in finished:
            outcome = engine.complete(probe, now)
            if outcome is not None:
                outcomes.append(outcome)
        outcomes += engine.expire(now)
        outcomes += engine.send_batch(now)
        yield from outcomes
        wait_s = scheduler.wait_s(engine.clock())
        if stop_event is not None:
            wait_s = min(wait_s, STOP_POLL_S)
