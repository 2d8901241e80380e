"""The few packet shapes the half-open scanner needs, with struct and nothing else.

We build one thing, a TCP SYN (the kernel adds the IP header: our raw sockets are layer 3
without IP_HDRINCL), and parse three: TCP segments that answer it, ICMP destination
unreachable quoting it, and ICMPv6 destination unreachable quoting it. scapy could do all of
this, but its import alone costs 0.23 s (research/perf-baselines.md §C); the unit tests use it
as the independent oracle for these bytes instead.

Addresses travel as packed bytes (4 or 16), the form the headers carry and the cheapest
dictionary key. Helpers convert to and from text at the edges.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import NamedTuple

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_ICMPV6 = 58

# RFC 9293 §3.1: control bits in the low byte of header word 7.
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

# RFC 9293 §3.2: option kind 2, length 4, the MSS. 1460 is what a 1500-byte Ethernet MTU leaves
# for IPv4 (1500 - 20 - 20); a SYN that carries no MSS option stands out in IDS logs, so we
# send one like every real stack does.
TCP_OPTION_MSS = 2
DEFAULT_MSS = 1460
# nmap's raw SYN scan advertises 1024 (nmap scan_engine_raw.cc, "win 1024"); any non-zero
# value is a valid SYN. The window does not matter: we never carry data.
DEFAULT_WINDOW = 1024

# Our SYN: 20-byte header plus the 4-byte MSS option, so data offset 6 words (RFC 9293 §3.1).
_SYN = struct.Struct("!HHIIBBHHHBBH")
SYN_LENGTH = _SYN.size  # 24
_SYN_DATA_OFFSET = (SYN_LENGTH // 4) << 4
# sport, dport, seq, ack, data offset, flags (RFC 9293 §3.1); enough to match an answer.
_TCP_HEAD = struct.Struct("!HHIIBB")
_TCP_MIN = 20

# RFC 791 §3.1: version/IHL, TOS, total length, id, flags/fragment offset, TTL, protocol,
# checksum, source, destination.
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV4_MIN = _IPV4.size  # 20
# An IPv4 header without options (version 4, IHL 5: first byte 0x45) and the TCP header
# after it, read in one unpack: what every answer to our SYNs looks like in practice.
_IPV4_PLAIN = 0x45
_IPV4_TCP = struct.Struct("!BBHHHBBH4s4sHHIIBB")
_IPV4_MORE_FRAGMENTS = 0x2000
_IPV4_OFFSET_MASK = 0x1FFF
# RFC 8200 §3: version/class/flow, payload length, next header, hop limit, source, destination.
_IPV6 = struct.Struct("!IHBB16s16s")
_IPV6_LENGTH = _IPV6.size  # 40

# RFC 792: type 3 "destination unreachable"; its body is 4 unused bytes, then the original IP
# header and at least the first 64 bits of the original datagram (our sport, dport, seq).
ICMP_DEST_UNREACH = 3
# RFC 4443 §3.1: type 1 "destination unreachable"; 4 unused bytes, then "as much of invoking
# packet as possible".
ICMPV6_DEST_UNREACH = 1
_ICMP_HEADER = 8
_QUOTED_TCP = struct.Struct("!HHI")  # the 8 bytes every ICMP error guarantees to quote


def pack_address(address: str) -> bytes:
    """The 4 or 16 bytes of an IP literal (a ``%scope`` suffix is dropped)."""
    if ":" in address:
        return socket.inet_pton(socket.AF_INET6, address.split("%", 1)[0])
    return socket.inet_pton(socket.AF_INET, address)


def unpack_address(packed: bytes) -> str:
    """The canonical text of 4 or 16 address bytes."""
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed)


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum: the 16-bit one's complement of the one's complement sum.

    The one's complement sum of 16-bit words equals the big-endian integer of the bytes
    modulo 0xFFFF, because 2**16 = 1 (mod 0xFFFF) (RFC 1071 §2 "deferred carries" taken to
    the limit); one integer conversion is much faster in Python than a loop over words.
    """
    if len(data) % 2:
        data += b"\0"
    folded = int.from_bytes(data, "big") % 0xFFFF
    if folded == 0:
        # Non-zero words that sum to a multiple of 0xFFFF make "negative zero", 0xFFFF, whose
        # complement is 0 (what Linux's csum_fold gives); only all-zero input sums to +0.
        return 0 if any(data) else 0xFFFF
    return 0xFFFF - folded


def pseudo_header(src: bytes, dst: bytes, length: int, protocol: int = IPPROTO_TCP) -> bytes:
    """The header the TCP checksum covers besides the segment.

    IPv4: RFC 9293 §3.1 (source, destination, zero, protocol, 16-bit TCP length).
    IPv6: RFC 8200 §8.1 (source, destination, 32-bit length, 3 zero bytes, next header).
    """
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, protocol, length)
    return src + dst + struct.pack("!I3xB", length, protocol)


def tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """The TCP checksum of ``segment`` (its checksum field zeroed) from src to dst."""
    return internet_checksum(pseudo_header(src, dst, len(segment)) + segment)


class SynTemplate:
    """SYNs from one source address to one target address, built with one struct.pack.

    The checksum is a sum, so its fixed part (pseudo-header and the header fields that never
    change) is summed once; each SYN adds its ports and ISN (the idea of RFC 1624's
    incremental update). ``src`` must be the address the kernel will put in the IP header:
    the send socket is bound to it, so this is the checksum the target verifies.
    """

    __slots__ = ("_base", "_mss", "_window")

    def __init__(
        self, src: bytes, dst: bytes, *, mss: int = DEFAULT_MSS, window: int = DEFAULT_WINDOW
    ) -> None:
        self._mss = mss
        self._window = window
        fixed = pseudo_header(src, dst, SYN_LENGTH) + self._pack(0, 0, 0, 0)
        self._base = int.from_bytes(fixed, "big") % 0xFFFF

    def _pack(self, sport: int, dport: int, seq: int, checksum: int) -> bytes:
        return _SYN.pack(
            sport, dport, seq, 0, _SYN_DATA_OFFSET, TCP_SYN, self._window, checksum, 0,
            TCP_OPTION_MSS, 4, self._mss,
        )  # fmt: skip

    def build(self, sport: int, dport: int, seq: int) -> bytes:
        """A 24-byte TCP SYN with an MSS option and a correct checksum."""
        # Same folding as internet_checksum; the protocol number makes the sum never +0.
        folded = (self._base + sport + dport + (seq >> 16) + (seq & 0xFFFF)) % 0xFFFF
        return self._pack(sport, dport, seq, 0xFFFF - folded if folded else 0)

    def write(self, buffer: bytearray | memoryview, offset: int, sport: int, dport: int, seq: int) -> None:
        """The SYN that ``build`` returns, written in place at ``buffer[offset:offset + 24]``
        (a send batch's slot): no bytes object per packet."""
        folded = (self._base + sport + dport + (seq >> 16) + (seq & 0xFFFF)) % 0xFFFF
        _SYN.pack_into(
            buffer, offset, sport, dport, seq, 0, _SYN_DATA_OFFSET, TCP_SYN, self._window,
            0xFFFF - folded if folded else 0, 0, TCP_OPTION_MSS, 4, self._mss,
        )  # fmt: skip


def build_syn(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    *,
    mss: int = DEFAULT_MSS,
    window: int = DEFAULT_WINDOW,
) -> bytes:
    """A 24-byte TCP SYN from ``src`` to ``dst`` (see SynTemplate, which the scanner uses)."""
    return SynTemplate(src, dst, mss=mss, window=window).build(sport, dport, seq)


class TcpSegment(NamedTuple):
    """The parts of a received TCP header that match it to a probe. Addresses are packed.

    A NamedTuple, not a frozen dataclass: one is made per received segment, and a frozen
    dataclass's __init__ costs several times a tuple's.
    """

    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int


def parse_tcp(segment: bytes, src: bytes, dst: bytes) -> TcpSegment | None:
    """A TCP header that starts at byte 0 (IPv6 raw sockets deliver no IP header, so the
    addresses come from recvmsg). None when it is too short to be one."""
    if len(segment) < _TCP_MIN:
        return None
    sport, dport, seq, ack, offset, flags = _TCP_HEAD.unpack_from(segment)
    if (offset >> 4) * 4 < _TCP_MIN:
        return None
    return TcpSegment(src, dst, sport, dport, seq, ack, flags)


def _ipv4_payload(datagram: bytes, protocol: int) -> tuple[bytes, bytes, int] | None:
    """(source, destination, payload offset) of an IPv4 datagram carrying ``protocol`` and
    starting at byte 0; None when it is not one, or is a non-first fragment."""
    if len(datagram) < _IPV4_MIN:
        return None
    version_ihl, _tos, _total, _id, fragment, _ttl, proto, _csum, src, dst = _IPV4.unpack_from(datagram)
    header = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or header < _IPV4_MIN or proto != protocol:
        return None
    if fragment & _IPV4_OFFSET_MASK:
        return None  # a later fragment: its bytes are not a header
    return src, dst, header


def parse_ipv4_tcp(datagram: bytes) -> TcpSegment | None:
    """A TCP segment inside an IPv4 datagram, as an AF_INET raw socket delivers it (with the
    IP header, raw(7))."""
    if len(datagram) >= _IPV4_MIN + _TCP_MIN and datagram[0] == _IPV4_PLAIN:
        # The same checks as below, for the usual header of 20 bytes, without a slice.
        fields = _IPV4_TCP.unpack_from(datagram)
        if fields[6] != IPPROTO_TCP or fields[4] & _IPV4_OFFSET_MASK or (fields[14] >> 4) * 4 < _TCP_MIN:
            return None
        return TcpSegment(fields[8], fields[9], fields[10], fields[11], fields[12], fields[13], fields[15])
    found = _ipv4_payload(datagram, IPPROTO_TCP)
    if found is None:
        return None
    src, dst, header = found
    return parse_tcp(datagram[header:], src, dst)


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP or ICMPv6 destination unreachable and the probe it quotes.

    Attributes:
        reporter: who sent the error (the target, or a router or firewall on the way).
        src, dst, sport, dport, seq: the quoted original: our address, the target, our
            port, the target port and our ISN. Addresses are packed.
    """

    is_ipv6: bool
    icmp_type: int
    code: int
    reporter: bytes
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int

    @property
    def reason(self) -> str:
        """``icmp 3/13`` or ``icmp6 1/1``: type and code, as tcpdump and nmap print them."""
        return f"{'icmp6' if self.is_ipv6 else 'icmp'} {self.icmp_type}/{self.code}"


def parse_icmp4_error(datagram: bytes) -> IcmpError | None:
    """A destination unreachable quoting a TCP segment, in an IPv4 datagram as an AF_INET raw
    ICMP socket delivers it (outer IP header included). None for anything else."""
    outer = _ipv4_payload(datagram, IPPROTO_ICMP)
    if outer is None:
        return None
    reporter, _us, offset = outer
    if len(datagram) < offset + _ICMP_HEADER or datagram[offset] != ICMP_DEST_UNREACH:
        return None
    code = datagram[offset + 1]
    quoted = datagram[offset + _ICMP_HEADER :]
    inner = _ipv4_payload(quoted, IPPROTO_TCP)
    if inner is None:
        return None
    src, dst, header = inner
    if len(quoted) < header + _QUOTED_TCP.size:
        return None
    sport, dport, seq = _QUOTED_TCP.unpack_from(quoted, header)
    return IcmpError(False, ICMP_DEST_UNREACH, code, reporter, src, dst, sport, dport, seq)


def parse_icmp6_error(message: bytes, reporter: bytes) -> IcmpError | None:
    """A destination unreachable quoting a TCP segment, as an AF_INET6 raw ICMPv6 socket
    delivers it (no IPv6 header: ``reporter`` comes from recvfrom). Our SYNs carry no
    extension headers, so a quote whose next header is not TCP is not ours."""
    if len(message) < _ICMP_HEADER + _IPV6_LENGTH + _QUOTED_TCP.size:
        return None
    if message[0] != ICMPV6_DEST_UNREACH:
        return None
    code = message[1]
    version_flow, _length, next_header, _hops, src, dst = _IPV6.unpack_from(message, _ICMP_HEADER)
    if version_flow >> 28 != 6 or next_header != IPPROTO_TCP:
        return None
    sport, dport, seq = _QUOTED_TCP.unpack_from(message, _ICMP_HEADER + _IPV6_LENGTH)
    return IcmpError(True, ICMPV6_DEST_UNREACH, code, reporter, src, dst, sport, dport, seq)
