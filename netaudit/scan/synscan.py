"""The half-open (SYN) scanner: a SYN, and our kernel's RST ends it (DESIGN.md §5).

The target's application never accept()s anything, which is the only probe proven harmless
for TensorPipe listeners (research/pytorch-ground-truth.md §5, §9). Needs CAP_NET_RAW.

How it works:
- Layer-3 raw sockets only: the kernel routes and writes the IP header; we write the TCP
  header (netaudit.scan.packets). One send socket per source address, bound to the address
  and, with SO_BINDTODEVICE, to its interface, so each source leaves through its own
  interface; a route check first (netaudit.scan.egress) turns "this source has no route of its
  own to that target" into NOT_TESTED instead of a misleading timeout.
- A reserved source port per source address: an ordinary TCP socket bound to (source, port)
  and never listening. The kernel then hands that port to no connection and answers every
  SYN-ACK to it with RST.
- Sends are batched: each round's SYNs are written in place into a send batch per source
  (netaudit.scan.sendbatch) and leave in one sendmmsg(2) call, each with its own errno.
- The ISN of every attempt is a keyed hash (BLAKE2b, random per-scan key) of source,
  target, ports and attempt number. An answer must acknowledge exactly ISN+1 (SYN-ACK, RST)
  or quote the ISN (ICMP), so a forged or stray packet matches nothing, and we know which
  attempt was answered: the RTT is exact even after a retransmission (no Karn ambiguity).
- One receive socket per family for TCP and one for ICMP/ICMPv6, all probes fired through a
  token bucket and one deadline queue (netaudit.scan.pacing): a filtered port costs one
  timeout in total, which the target's measured RTT shortens once it has answered anything.
- Each probe leaves the table when it gets its outcome, so duplicate or late answers find
  nothing and produce nothing.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

from netaudit.models import PortState
from netaudit.scan.egress import Source, canonical, distinct, reserve_port, screen, with_aliases
from netaudit.scan.pacing import Host, Probe, Scheduler
from netaudit.scan.packets import (
    ICMP_DEST_UNREACH,
    ICMPV6_DEST_UNREACH,
    IPPROTO_ICMPV6,
    SYN_LENGTH,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    IcmpError,
    SynTemplate,
    TcpSegment,
    pack_address,
    parse_icmp4_error,
    parse_icmp6_error,
    parse_ipv4_tcp,
    parse_tcp,
)
from netaudit.scan.privilege import raw_available
from netaudit.scan.probe_types import ProbeOutcome, ProbeSpec, ScanLimits
from netaudit.scan.sendbatch import Batch, Destination, Sendto, destination, open_batch

# <asm-generic/socket.h>; Python's socket module lacks some of them.
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
# <linux/icmp.h>: SOL_RAW level, ICMP_FILTER = 1, a u32 whose set bits BLOCK those types.
SOL_RAW = getattr(socket, "SOL_RAW", 255)
ICMP_FILTER = 1
# <linux/icmpv6.h>: ICMPV6_FILTER = 1 at level IPPROTO_ICMPV6, 256 bits, set bit = block
# (net/ipv6/raw.c icmpv6_filter()).
ICMPV6_FILTER = 1
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IN6_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo, <linux/ipv6.h>

# Classic BPF opcodes, <linux/bpf_common.h> and <linux/filter.h>.
_BPF_LD_H_ABS = 0x28  # A = u16 at [k]
_BPF_LD_H_IND = 0x48  # A = u16 at [X + k]
_BPF_LDX_B_MSH = 0xB1  # X = 4 * ([k] & 0xf): the IPv4 header length
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
_BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter
_BPF_ACCEPT = 0x40000  # bytes of the packet to keep; more than any header we read

# Receive buffers: at 80 kpps (perf-baselines.md §B) answers arrive faster than one loop round
# drains them while the caller consumes outcomes; 4 MiB holds several thousand.
RCVBUF_BYTES = 4 << 20
# Bytes we read per packet: headers only (raw sockets truncate the rest away).
_READ_TCP4 = 60 + 20  # IPv4 header with options (RFC 791: IHL <= 15) + TCP header
_READ_TCP6 = 20
_READ_ICMP4 = 60 + 8 + 60 + 8  # outer IP, ICMP header, quoted IP, quoted 8 bytes (RFC 792)
_READ_ICMP6 = 8 + 40 + 8  # ICMPv6 header, quoted IPv6 header, quoted 8 bytes (RFC 4443)
# Packets read from one socket per loop round; a socket with more left is read again before
# any deadline is checked.
_DRAIN_BATCH = 2048
# Probes sent per loop round before answers are read again: small, because an answer that
# waits for our loop inflates the RTT that the adaptive timeout is made of (64 sends took
# about 1 ms one sendto at a time, research/perf-baselines.md §B: 12 us per raw send on a
# veth; about 0.2 ms as one sendmmsg). Also the size of each source's send batch.
_SEND_BATCH = 64
# How often the loop looks at stop_event while it would otherwise sleep.
STOP_POLL_S = 0.05
_COOKIE_KEY_BYTES = 16  # BLAKE2b keys go up to 64 bytes; 128 bits is plenty against forgery
_SPORT = struct.Struct("!H")
_DPORT_ATTEMPT = struct.Struct("!HB")

_NO_ROUTE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)
_TRANSIENT_ERRNOS = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EINTR})


@dataclass(eq=False, slots=True)
class _Origin:
    """Everything about one source address that a probe needs to send.

    ``batch`` is made from ``sender``: sendmmsg when it is a socket and libc has it, else
    one ``sendto`` per packet (what a test's recording sender gets).
    """

    sender: Sendto
    source: bytes
    port: int
    batch: Batch = field(init=False)

    def __post_init__(self) -> None:
        self.batch = open_batch(self.sender, _SEND_BATCH, SYN_LENGTH)


class _Path:
    """One source to one target: what every probe between them shares, made once.

    Attributes:
        keyed: the cookie's hash state with this pair's part of every ISN already absorbed.
    """

    __slots__ = ("destination", "host", "keyed", "origin", "target", "template")

    def __init__(self, origin: _Origin, target: str, host: Host, cookie: Cookie) -> None:
        self.origin = origin
        self.host = host
        self.target = pack_address(target)
        self.template = SynTemplate(origin.source, self.target)
        self.destination: Destination = destination(target)
        self.keyed = cookie.keyed(origin.source, self.target, origin.port)


class _SynProbe(Probe):
    """Attributes:
    path: where it is sent from and to.
    isns: the ISN of each attempt (isns[n] was sent at sent_at[n]).
    key: (our address, target, target port, our port): how an answer finds its probe.
    """

    __slots__ = ("isns", "key", "path")

    def __init__(
        self, spec: ProbeSpec, host: Host, index: int, path: _Path, key: tuple[bytes, bytes, int, int]
    ) -> None:
        super().__init__(spec, host, index)
        self.path = path
        self.key = key
        self.isns: list[int] = []


class Cookie:
    """ISNs that only this scan could have chosen (keyed BLAKE2b, RFC 7693)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(_COOKIE_KEY_BYTES)

    def keyed(self, src: bytes, dst: bytes, sport: int) -> hashlib.blake2b:
        """The hash state after the part of the message that one source and target share:
        ``isn_from`` finishes a copy of it (one block of key, one of message, as before)."""
        return hashlib.blake2b(src + dst + _SPORT.pack(sport), digest_size=4, key=self._key)

    def isn(self, src: bytes, dst: bytes, sport: int, dport: int, attempt: int) -> int:
        return isn_from(self.keyed(src, dst, sport), dport, attempt)


def isn_from(keyed: hashlib.blake2b, dport: int, attempt: int) -> int:
    """The ISN of ``attempt`` to ``dport``: BLAKE2b(key, src | dst | sport | dport | attempt)."""
    state = keyed.copy()
    state.update(_DPORT_ATTEMPT.pack(dport, attempt & 0xFF))
    return int.from_bytes(state.digest(), "big")


def _send_error_reason(source: str, error: OSError) -> str:
    if error.errno in _NO_ROUTE_ERRNOS:
        return f"no route from {source}"
    if error.errno in (errno.EPERM, errno.EACCES):
        return f"send from {source} refused by this host ({error.strerror})"
    return f"send from {source} failed ({error.strerror})"


class SynEngine:
    """The matching and pacing logic of one scan, with the socket I/O injected.

    The engine owns no socket: each probe's origin carries its sender, received packets come
    in through ``on_tcp``/``on_icmp``, and time through ``clock``, so tests drive the state
    machine with a recording sender and a fake clock. ``_run`` adds the real sockets.
    """

    def __init__(
        self,
        limits: ScanLimits,
        cookie: Cookie | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.cookie = cookie or Cookie()
        self.clock = clock
        self.scheduler: Scheduler[_SynProbe] = Scheduler(limits, clock())
        self.table: dict[tuple[bytes, bytes, int, int], _SynProbe] = {}
        self.probes: list[_SynProbe] = []
        self._paths: dict[tuple[bytes, str], _Path] = {}

    def add(self, spec: ProbeSpec, origin: _Origin, target: str) -> None:
        """Queue one probe; ``target`` is the canonical text of spec.address."""
        path = self._paths.get((origin.source, target))
        if path is None:
            path = _Path(origin, target, self.scheduler.host(target), self.cookie)
            self._paths[origin.source, target] = path
        key = (origin.source, path.target, spec.port, origin.port)
        if key in self.table:
            return  # the same probe twice: syn_scan reports it under every spelling
        probe = _SynProbe(spec, path.host, len(self.probes), path, key)
        self.table[key] = probe
        self.probes.append(probe)
        self.scheduler.add(probe)

    # -- outcomes -------------------------------------------------------------------------
    def _finish(
        self,
        probe: _SynProbe,
        state: PortState,
        reason: str,
        rtt_s: float | None = None,
        *,
        is_rtt_sample: bool = True,
    ) -> ProbeOutcome:
        self.table.pop(probe.key, None)
        self.scheduler.finish(probe, rtt_s, is_rtt_sample=is_rtt_sample)
        return ProbeOutcome(probe.spec, state, reason, rtt_s, probe.syns_sent)

    def _attempt_answered(self, probe: _SynProbe, isn: int) -> int | None:
        try:
            return probe.isns.index(isn)
        except ValueError:
            return None

    def on_tcp(self, segment: TcpSegment, now: float) -> ProbeOutcome | None:
        """Match a received TCP segment: SYN-ACK -> open, RST+ACK -> closed, else nothing."""
        flags = segment.flags
        if flags & TCP_RST:
            if not flags & TCP_ACK:
                return None  # RFC 9293 §3.10.7.3: the answer to a SYN acknowledges it
            state, reason = PortState.CLOSED, "rst"
        elif flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK:
            state, reason = PortState.OPEN, "syn-ack"
        else:
            return None  # our own SYN seen on loopback, or unrelated traffic
        probe = self.table.get((segment.dst, segment.src, segment.sport, segment.dport))
        if probe is None:
            return None
        attempt = self._attempt_answered(probe, (segment.ack - 1) & 0xFFFFFFFF)
        if attempt is None:
            return None  # does not acknowledge any ISN we sent: forged or stale
        return self._finish(probe, state, reason, now - probe.sent_at[attempt])

    def on_icmp(self, error: IcmpError, now: float) -> ProbeOutcome | None:
        """Match a destination unreachable quoting one of our SYNs: filtered."""
        probe = self.table.get((error.src, error.dst, error.dport, error.sport))
        if probe is None:
            return None
        attempt = self._attempt_answered(probe, error.seq)
        if attempt is None:
            return None
        # Only the target's own answer says how far away it is: a firewall in front of it
        # answers sooner, and its RTT would cut the target's timeout short.
        return self._finish(
            probe,
            PortState.FILTERED,
            error.reason,
            now - probe.sent_at[attempt],
            is_rtt_sample=error.reporter == error.dst,
        )

    def expire(self, now: float) -> list[ProbeOutcome]:
        """Resend or give up on every attempt whose timeout has passed."""
        outcomes: list[ProbeOutcome] = []
        for probe in self.scheduler.pop_expired(now):
            if self.scheduler.attempts_left(probe):
                self.scheduler.retry(probe)
            else:
                outcomes.append(self._finish(probe, PortState.FILTERED, "timeout"))
        return outcomes

    def send_batch(self, now: float, limit: int = _SEND_BATCH) -> list[ProbeOutcome]:
        """Send what the token bucket and the windows allow, up to ``limit`` (at most one
        batch); outcomes of sends that failed."""
        scheduler = self.scheduler
        probes = scheduler.next_batch(now, min(limit, _SEND_BATCH))
        if not probes:
            return []
        queued: dict[_Origin, list[tuple[_SynProbe, int]]] = {}
        for probe in probes:
            path = probe.path
            origin = path.origin
            port = probe.spec.port
            isn = isn_from(path.keyed, port, len(probe.sent_at))
            batch = origin.batch
            path.template.write(batch.buffer, batch.claim(path.destination), origin.port, port, isn)
            waiting = queued.get(origin)
            if waiting is None:
                waiting = queued[origin] = []
            waiting.append((probe, isn))
        outcomes: list[ProbeOutcome] = []
        unsent: list[_SynProbe] = []
        for origin, waiting in queued.items():
            for (probe, isn), error in zip(waiting, origin.batch.flush(), strict=True):
                if error is None:
                    probe.isns.append(isn)
                    scheduler.sent(probe, now)
                elif error.errno in _TRANSIENT_ERRNOS:
                    unsent.append(probe)  # the send queue is full: first in line next round
                elif not probe.sent_at:
                    reason = _send_error_reason(probe.spec.source, error)
                    outcomes.append(self._finish(probe, PortState.NOT_TESTED, reason))
                else:
                    # A retry that could not leave: the first attempt may still be answered.
                    probe.isns.append(isn)
                    scheduler.sent(probe, now, has_left=False)
        for probe in reversed(unsent):  # unsent() puts each first: keep their order
            scheduler.unsent(probe)
        return outcomes

    def interrupt(self) -> list[ProbeOutcome]:
        """NOT_TESTED "interrupted" for every probe without an outcome, in input order."""
        return [
            self._finish(probe, PortState.NOT_TESTED, "interrupted")
            for probe in self.probes
            if not probe.is_done
        ]

    @property
    def is_finished(self) -> bool:
        return self.scheduler.unfinished == 0

    def wait_s(self, now: float) -> float:
        return self.scheduler.wait_s(now)


# -- sockets -------------------------------------------------------------------------------
def _attach_bpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """SO_ATTACH_FILTER with a classic BPF program: the kernel drops what it rejects before
    it is queued, so a busy host's unrelated TCP traffic never reaches Python."""
    code = b"".join(_BPF_INSN.pack(*insn) for insn in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(program), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def dport_filter(ports: Iterable[int], *, has_ip_header: bool) -> list[tuple[int, int, int, int]]:
    """A BPF program that keeps TCP segments whose destination port is one of ``ports``.

    AF_INET raw sockets filter from the IP header on (net/ipv4/raw.c raw_rcv pushes it back);
    AF_INET6 raw sockets from the transport header.
    """
    wanted = sorted(set(ports))
    program: list[tuple[int, int, int, int]] = []
    if has_ip_header:
        program.append((_BPF_LDX_B_MSH, 0, 0, 0))
        program.append((_BPF_LD_H_IND, 0, 0, 2))
    else:
        program.append((_BPF_LD_H_ABS, 0, 0, 2))
    for index, port in enumerate(wanted):
        program.append((_BPF_JEQ_K, len(wanted) - index, 0, port))
    program.append((_BPF_RET_K, 0, 0, 0))
    program.append((_BPF_RET_K, 0, 0, _BPF_ACCEPT))
    return program


DROP_ALL = [(_BPF_RET_K, 0, 0, 0)]


def _raw_socket(family: int, protocol: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, protocol)
    return sock


def _large_rcvbuf(sock: socket.socket) -> None:
    try:  # beyond net.core.rmem_max needs CAP_NET_ADMIN
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)


def _open_sender(source: Source, stack: ExitStack) -> socket.socket:
    family = socket.AF_INET6 if ":" in source.address else socket.AF_INET
    sock = stack.enter_context(_raw_socket(family, socket.IPPROTO_TCP))
    # A raw TCP socket gets a copy of every incoming TCP segment that matches its binding;
    # this one only sends, so it keeps none of them.
    _attach_bpf(sock, DROP_ALL)
    sock.bind((source.address, 0))
    if source.interface is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, source.interface.encode())
    return sock


class _Receiver:
    """One receive socket and how to turn its packets into outcomes."""

    __slots__ = ("_read", "kind", "sock")

    def __init__(self, kind: str, sock: socket.socket) -> None:
        self.kind = kind
        self.sock = sock
        readers: dict[str, Callable[[SynEngine], ProbeOutcome | None]] = {
            "tcp4": self._read_tcp4,
            "tcp6": self._read_tcp6,
            "icmp4": self._read_icmp4,
            "icmp6": self._read_icmp6,
        }
        self._read = readers[kind]

    def drain(self, engine: SynEngine, outcomes: list[ProbeOutcome]) -> bool:
        """Read and match what is queued, up to a batch; True when the socket is empty."""
        read = self._read
        for _ in range(_DRAIN_BATCH):
            try:
                outcome = read(engine)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return True  # e.g. ENOBUFS reported on a raw socket: nothing to read now
            if outcome is not None:
                outcomes.append(outcome)
        return False

    def _read_tcp4(self, engine: SynEngine) -> ProbeOutcome | None:
        segment = parse_ipv4_tcp(self.sock.recv(_READ_TCP4))
        return None if segment is None else engine.on_tcp(segment, engine.clock())

    def _read_tcp6(self, engine: SynEngine) -> ProbeOutcome | None:
        data, ancillary, _flags, address = self.sock.recvmsg(_READ_TCP6, _PKTINFO_SPACE)
        local = b""
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                local = _IN6_PKTINFO.unpack_from(value)[0]
        segment = parse_tcp(data, pack_address(address[0]), local)
        return None if segment is None else engine.on_tcp(segment, engine.clock())

    def _read_icmp4(self, engine: SynEngine) -> ProbeOutcome | None:
        error = parse_icmp4_error(self.sock.recv(_READ_ICMP4))
        return None if error is None else engine.on_icmp(error, engine.clock())

    def _read_icmp6(self, engine: SynEngine) -> ProbeOutcome | None:
        data, address = self.sock.recvfrom(_READ_ICMP6)
        error = parse_icmp6_error(data, pack_address(address[0]))
        return None if error is None else engine.on_icmp(error, engine.clock())


_PKTINFO_SPACE = socket.CMSG_SPACE(_IN6_PKTINFO.size)


def _open_receivers(families: set[int], ports: dict[int, set[int]], stack: ExitStack) -> list[_Receiver]:
    receivers: list[_Receiver] = []
    if socket.AF_INET in families:
        tcp = stack.enter_context(_raw_socket(socket.AF_INET, socket.IPPROTO_TCP))
        _attach_bpf(tcp, dport_filter(ports[socket.AF_INET], has_ip_header=True))
        icmp = stack.enter_context(_raw_socket(socket.AF_INET, socket.IPPROTO_ICMP))
        icmp.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", 0xFFFFFFFF & ~(1 << ICMP_DEST_UNREACH)))
        receivers += [_Receiver("tcp4", tcp), _Receiver("icmp4", icmp)]
    if socket.AF_INET6 in families:
        tcp6 = stack.enter_context(_raw_socket(socket.AF_INET6, socket.IPPROTO_TCP))
        _attach_bpf(tcp6, dport_filter(ports[socket.AF_INET6], has_ip_header=False))
        tcp6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        icmp6 = stack.enter_context(_raw_socket(socket.AF_INET6, IPPROTO_ICMPV6))
        blocked = [0xFFFFFFFF] * 8
        blocked[0] &= ~(1 << ICMPV6_DEST_UNREACH)
        icmp6.setsockopt(IPPROTO_ICMPV6, ICMPV6_FILTER, struct.pack("=8I", *blocked))
        receivers += [_Receiver("tcp6", tcp6), _Receiver("icmp6", icmp6)]
    for receiver in receivers:
        _large_rcvbuf(receiver.sock)
    return receivers


# -- planning ------------------------------------------------------------------------------
def _open_origins(
    specs: list[ProbeSpec], sources: dict[str, Source], stack: ExitStack
) -> tuple[dict[str, _Origin], list[ProbeOutcome]]:
    """A reserved port and a bound send socket per source; sources that fail become outcomes."""
    origins: dict[str, _Origin] = {}
    failed: dict[str, str] = {}
    for address in sorted({spec.source for spec in specs}):
        source = sources[address]
        try:
            reservation = stack.enter_context(reserve_port(address))
            port = reservation.getsockname()[1]
            sender = _open_sender(source, stack)
        except PermissionError:
            raise  # no CAP_NET_RAW: the caller chooses the fallback, this is not per-probe
        except OSError as error:
            failed[address] = f"cannot send from {address} ({error.strerror})"
            continue
        origins[address] = _Origin(sender, pack_address(address), port)
    outcomes = [
        ProbeOutcome(spec, PortState.NOT_TESTED, failed[spec.source], None, 0)
        for spec in specs
        if spec.source in failed
    ]
    return origins, outcomes


def _run(
    engine: SynEngine, receivers: list[_Receiver], stop_event: threading.Event | None
) -> Iterator[ProbeOutcome]:
    with selectors.DefaultSelector() as selector:
        for receiver in receivers:
            selector.register(receiver.sock, selectors.EVENT_READ, receiver)
        wait_s = 0.0
        while not engine.is_finished:
            if stop_event is not None and stop_event.is_set():
                break
            outcomes: list[ProbeOutcome] = []
            is_drained = True
            for key, _events in selector.select(wait_s):
                ready: _Receiver = key.data
                is_drained = ready.drain(engine, outcomes) and is_drained
            if is_drained:
                # Answers first: one already queued in a socket is never called a timeout,
                # and sending waits until the backlog is read, so that the RTT we measure
                # (send to match) stays close to the network's.
                now = engine.clock()
                outcomes += engine.expire(now)
                outcomes += engine.send_batch(now)
            yield from outcomes
            wait_s = engine.wait_s(engine.clock()) if is_drained else 0.0
            if stop_event is not None:
                wait_s = min(wait_s, STOP_POLL_S)
        if not engine.is_finished:
            # Stopped: what already arrived still counts, nothing more is sent.
            late: list[ProbeOutcome] = []
            for receiver in receivers:
                receiver.drain(engine, late)
            yield from late
            yield from engine.interrupt()


def syn_scan(
    specs: Iterable[ProbeSpec],
    limits: ScanLimits | None = None,
    stop_event: threading.Event | None = None,
) -> Iterator[ProbeOutcome]:
    """Half-open scan; outcomes stream as they complete, one per distinct spec: a repeated
    spec is probed and reported once, one spelled differently once under each spelling.

    Raises PermissionError (on the first ``next``) without CAP_NET_RAW: check
    ``raw_available()`` and fall back to netaudit.scan.connectscan for safe targets only.
    Setting ``stop_event`` stops sending at once; probes without an outcome then come out as
    NOT_TESTED "interrupted".
    """
    limits = limits or ScanLimits()
    unique, aliases = distinct(specs)
    yield from with_aliases(_syn_scan(unique, limits, stop_event), aliases)


def _syn_scan(
    specs: list[ProbeSpec], limits: ScanLimits, stop_event: threading.Event | None
) -> Iterator[ProbeOutcome]:
    if not raw_available():
        # Before any outcome: the caller switches engines for the whole scan, not per probe.
        raise PermissionError(errno.EPERM, "raw sockets need CAP_NET_RAW")
    rejected, routable, sources = screen(specs)
    yield from rejected
    if not routable:
        return
    with ExitStack() as stack:
        origins, failed = _open_origins(routable, sources, stack)
        yield from failed
        ports: dict[int, set[int]] = {socket.AF_INET: set(), socket.AF_INET6: set()}
        for address, opened in origins.items():
            ports[socket.AF_INET6 if ":" in address else socket.AF_INET].add(opened.port)
        families = {family for family, found in ports.items() if found}
        receivers = _open_receivers(families, ports, stack)
        engine = SynEngine(limits)
        spelled: dict[str, str] = {}  # a target has one spec per port: canonicalise it once
        for spec in routable:
            origin = origins.get(spec.source)
            if origin is not None:
                target = spelled.get(spec.address)
                if target is None:
                    target = spelled[spec.address] = canonical(spec.address)
                engine.add(spec, origin, target)
        yield from _run(engine, receivers, stop_event)
