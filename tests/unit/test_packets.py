"""Our packet bytes against scapy as an independent oracle (no sockets)."""

from __future__ import annotations

import random

import pytest

from netaudit.scan import packets
from netaudit.scan.packets import (
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    SynTemplate,
    build_syn,
    internet_checksum,
    pack_address,
    parse_icmp4_error,
    parse_icmp6_error,
    parse_ipv4_tcp,
    parse_tcp,
    tcp_checksum,
    unpack_address,
)

scapy_inet = pytest.importorskip("scapy.layers.inet")
scapy_inet6 = pytest.importorskip("scapy.layers.inet6")
IP, TCP, ICMP, UDP = scapy_inet.IP, scapy_inet.TCP, scapy_inet.ICMP, scapy_inet.UDP
IPv6, ICMPv6DestUnreach = scapy_inet6.IPv6, scapy_inet6.ICMPv6DestUnreach

V4 = ("198.18.0.1", "198.18.0.2")
V6 = ("2001:db8:18::1", "2001:db8:18::2")


def test_internet_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after the carries).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_internet_checksum_edge_cases() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0  # negative zero: complement is 0
    assert internet_checksum(b"\x01") == internet_checksum(b"\x01\x00")  # odd length padded


@pytest.mark.parametrize(("src", "dst"), [V4, V6])
@pytest.mark.parametrize("seq", [0, 1, 0x7FFFFFFF, 0xDEADBEEF, 0xFFFFFFFF])
def test_syn_dissected_by_scapy(src: str, dst: str, seq: int) -> None:
    raw = build_syn(pack_address(src), pack_address(dst), 40001, 29500, seq)
    assert len(raw) == packets.SYN_LENGTH == 24

    segment = TCP(raw)
    assert segment.sport == 40001
    assert segment.dport == 29500
    assert segment.seq == seq
    assert segment.ack == 0
    assert str(segment.flags) == "S"
    assert segment.dataofs == 6
    assert segment.window == packets.DEFAULT_WINDOW
    assert segment.options == [("MSS", packets.DEFAULT_MSS)]
    assert not bytes(segment.payload)

    # scapy recomputes the checksum over its own pseudo-header when the field is deleted.
    layer = IP(src=src, dst=dst) if ":" not in src else IPv6(src=src, dst=dst)
    packet = layer / TCP(raw)
    expected = packet[TCP].chksum
    del packet[TCP].chksum
    recomputed = layer.__class__(bytes(packet))[TCP].chksum
    assert expected == recomputed


@pytest.mark.parametrize(("src", "dst"), [V4, V6])
def test_syn_checksum_verifies_to_zero(src: str, dst: str) -> None:
    s, d = pack_address(src), pack_address(dst)
    raw = build_syn(s, d, 1, 2, 3, mss=1220)
    # A receiver sums pseudo-header and segment, checksum included: the result must be 0.
    assert internet_checksum(packets.pseudo_header(s, d, len(raw)) + raw) == 0
    assert tcp_checksum(s, d, raw[:16] + b"\0\0" + raw[18:]) == int.from_bytes(raw[16:18], "big")
    assert TCP(raw).options == [("MSS", 1220)]


def test_parse_ipv4_tcp_syn_ack() -> None:
    raw = bytes(IP(src=V4[1], dst=V4[0]) / TCP(sport=29500, dport=40001, seq=7, ack=1234, flags="SA"))
    segment = parse_ipv4_tcp(raw)
    assert segment is not None
    assert (unpack_address(segment.src), unpack_address(segment.dst)) == (V4[1], V4[0])
    assert (segment.sport, segment.dport, segment.seq, segment.ack) == (29500, 40001, 7, 1234)
    assert segment.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK


def test_parse_ipv4_tcp_with_ip_options_and_rst() -> None:
    header = IP(src=V4[1], dst=V4[0], options=[scapy_inet.IPOption_Router_Alert()])
    raw = bytes(header / TCP(sport=80, dport=40001, seq=0, ack=99, flags="RA"))
    assert raw[0] & 0x0F > 5  # the options really are there
    segment = parse_ipv4_tcp(raw)
    assert segment is not None
    assert segment.flags & (TCP_RST | TCP_ACK) == TCP_RST | TCP_ACK
    assert (segment.sport, segment.dport, segment.ack) == (80, 40001, 99)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x45" + b"\0" * 10,  # truncated IP header
        bytes(IP(src=V4[1], dst=V4[0]) / UDP(sport=1, dport=2)),  # not TCP
        bytes(IP(src=V4[1], dst=V4[0], frag=3, proto=6) / (b"\0" * 20)),  # later fragment
        bytes(IP(src=V4[1], dst=V4[0], proto=6) / (b"\0" * 10)),  # truncated TCP header
        bytes(IPv6(src=V6[1], dst=V6[0]) / TCP()),  # IPv6 is not IPv4
    ],
)
def test_parse_ipv4_tcp_rejects(raw: bytes) -> None:
    assert parse_ipv4_tcp(raw) is None


def test_parse_tcp_ipv6_style_without_ip_header() -> None:
    raw = bytes(TCP(sport=29500, dport=40001, seq=5, ack=0xFFFFFFFF, flags="SA"))
    s, d = pack_address(V6[1]), pack_address(V6[0])
    segment = parse_tcp(raw, s, d)
    assert segment is not None
    assert (segment.src, segment.dst, segment.ack) == (s, d, 0xFFFFFFFF)
    assert parse_tcp(raw[:19], s, d) is None
    bad_offset = raw[:12] + bytes([0x40]) + raw[13:]  # data offset 4 words < 5
    assert parse_tcp(bad_offset, s, d) is None


def _quoted_syn(src: str, dst: str) -> TCP:
    return TCP(sport=40001, dport=29500, seq=0xCAFEBABE, flags="S")


@pytest.mark.parametrize("code", [0, 1, 3, 10, 13])
def test_parse_icmp4_error_quotes_our_probe(code: int) -> None:
    router = "198.18.0.254"
    quote = IP(src=V4[0], dst=V4[1]) / _quoted_syn(*V4)
    raw = bytes(IP(src=router, dst=V4[0]) / ICMP(type=3, code=code) / quote)
    error = parse_icmp4_error(raw)
    assert error is not None
    assert error.reason == f"icmp 3/{code}"
    assert unpack_address(error.reporter) == router
    assert (unpack_address(error.src), unpack_address(error.dst)) == V4
    assert (error.sport, error.dport, error.seq) == (40001, 29500, 0xCAFEBABE)


def test_parse_icmp4_error_with_minimal_quote() -> None:
    # RFC 792 guarantees only the IP header and 8 bytes of the original: enough for us.
    quote = bytes(IP(src=V4[0], dst=V4[1]) / _quoted_syn(*V4))[: 20 + 8]
    raw = bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=13)) + quote
    error = parse_icmp4_error(raw)
    assert error is not None
    assert error.seq == 0xCAFEBABE


@pytest.mark.parametrize(
    "raw",
    [
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=0) / b"echo reply"),
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=11) / IP(src=V4[0], dst=V4[1]) / TCP()),
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=3) / IP(src=V4[0], dst=V4[1]) / UDP()),
        bytes(IP(src=V4[1], dst=V4[0]) / ICMP(type=3, code=3)) + bytes(IP(src=V4[0], dst=V4[1]) / TCP())[:24],
        bytes(IP(src=V4[1], dst=V4[0]) / TCP()),
    ],
)
def test_parse_icmp4_error_rejects(raw: bytes) -> None:
    assert parse_icmp4_error(raw) is None


@pytest.mark.parametrize("code", [0, 1, 3, 4])
def test_parse_icmp6_error_quotes_our_probe(code: int) -> None:
    quote = IPv6(src=V6[0], dst=V6[1]) / _quoted_syn(*V6)
    raw = bytes(ICMPv6DestUnreach(code=code) / quote)
    error = parse_icmp6_error(raw, pack_address("2001:db8:18::fe"))
    assert error is not None
    assert error.reason == f"icmp6 1/{code}"
    assert unpack_address(error.reporter) == "2001:db8:18::fe"
    assert (unpack_address(error.src), unpack_address(error.dst)) == V6
    assert (error.sport, error.dport, error.seq) == (40001, 29500, 0xCAFEBABE)


def test_parse_icmp6_error_rejects() -> None:
    reporter = pack_address(V6[1])
    other_type = bytes(scapy_inet6.ICMPv6TimeExceeded() / IPv6(src=V6[0], dst=V6[1]) / TCP())
    udp_quote = bytes(ICMPv6DestUnreach() / IPv6(src=V6[0], dst=V6[1]) / UDP())
    ext_header = bytes(
        ICMPv6DestUnreach() / IPv6(src=V6[0], dst=V6[1]) / scapy_inet6.IPv6ExtHdrHopByHop() / TCP()
    )
    truncated = bytes(ICMPv6DestUnreach() / IPv6(src=V6[0], dst=V6[1]) / TCP())[:50]
    for raw in (other_type, udp_quote, ext_header, truncated, b""):
        assert parse_icmp6_error(raw, reporter) is None


def test_address_helpers_round_trip() -> None:
    assert unpack_address(pack_address("2001:DB8::1")) == "2001:db8::1"
    assert pack_address("fe80::1%eth0") == pack_address("fe80::1")
    assert unpack_address(pack_address("198.18.0.1")) == "198.18.0.1"


def test_syn_template_checksum_on_many_random_probes() -> None:
    # The template adds ports and ISN to a precomputed sum; check it against the plain
    # RFC 1071 sum over the whole pseudo-header and segment, for both families.
    rng = random.Random(7)
    for src, dst in (V4, V6, ("0.0.0.1", "255.255.255.255"), ("::", "ffff::ffff")):
        s, d = pack_address(src), pack_address(dst)
        template = SynTemplate(s, d)
        for _ in range(500):
            sport, dport, seq = rng.randrange(65536), rng.randrange(65536), rng.randrange(1 << 32)
            raw = template.build(sport, dport, seq)
            assert internet_checksum(packets.pseudo_header(s, d, len(raw)) + raw) == 0
            assert raw == build_syn(s, d, sport, dport, seq)


def test_syn_template_write_in_place_is_build() -> None:
    # A send batch's slots are written in place; the bytes must be what build() returns,
    # and nothing outside the slot may change.
    rng = random.Random(11)
    for src, dst in (V4, V6):
        template = SynTemplate(pack_address(src), pack_address(dst))
        buffer = bytearray(b"\xaa" * (3 * packets.SYN_LENGTH))
        for _ in range(200):
            sport, dport, seq = rng.randrange(65536), rng.randrange(65536), rng.randrange(1 << 32)
            template.write(memoryview(buffer), packets.SYN_LENGTH, sport, dport, seq)
            assert buffer[packets.SYN_LENGTH : 2 * packets.SYN_LENGTH] == template.build(sport, dport, seq)
            assert buffer[: packets.SYN_LENGTH] == buffer[2 * packets.SYN_LENGTH :] == b"\xaa" * 24


def _parse_ipv4_tcp_general(datagram: bytes) -> packets.TcpSegment | None:
    """What parse_ipv4_tcp returns through its general path (any header length)."""
    found = packets._ipv4_payload(datagram, packets.IPPROTO_TCP)
    if found is None:
        return None
    src, dst, header = found
    return parse_tcp(datagram[header:], src, dst)


def test_parse_ipv4_tcp_fast_path_agrees_with_the_general_one() -> None:
    # Given answers with a plain 20-byte IP header, the one-unpack path must accept and
    # reject exactly what the general path does.
    rng = random.Random(5)
    cases = []
    for _ in range(300):
        tcp = TCP(
            sport=rng.randrange(65536),
            dport=rng.randrange(65536),
            seq=rng.randrange(1 << 32),
            ack=rng.randrange(1 << 32),
            flags=rng.randrange(256),
            dataofs=rng.choice([None, None, 3, 4, 5, 15]),
        )
        layer = IP(src=V4[1], dst=V4[0], frag=rng.choice([0, 0, 0, 1, 100]), flags=rng.choice([0, 1, 2]))
        cases.append(bytes(layer / tcp))
    cases.append(bytes(IP(src=V4[1], dst=V4[0]) / UDP(sport=1, dport=2) / (b"\0" * 24)))  # long, not TCP
    cases.append(bytes(IP(src=V4[1], dst=V4[0], proto=6) / (b"\0" * 20)))  # data offset 0
    assert all(raw[0] == 0x45 for raw in cases)
    accepted = 0
    for raw in cases:
        segment = parse_ipv4_tcp(raw)
        assert segment == _parse_ipv4_tcp_general(raw)
        accepted += segment is not None
    assert 0 < accepted < len(cases)  # both outcomes were exercised
