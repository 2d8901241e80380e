"""Netlink, stdlib only: the one framing (socket, nlmsghdr records, NLMSG_ERROR/NLMSG_DONE,
attributes) and the dumps built on it, listening TCP sockets (NETLINK_SOCK_DIAG) and
interface addresses (NETLINK_ROUTE). The scan's route lookups (netaudit.scan.egress) use the
same framing.

A netlink socket answers for the network namespace it was created in, so callers that want
another namespace create these sockets inside it (netaudit.netns.entered).

Why a hand-written dump: the kernel applies the LISTEN filter itself, so the cost follows the
number of listeners, not the number of established connections (0.2 ms at 100 listeners with
or without 40k established sockets, research/perf-baselines.md §A1), and it is the only source
of the backlog and IPV6_V6ONLY. pyroute2 decodes 50x slower and costs 0.18 s to import.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from netaudit.models import Family, InterfaceAddress

# <linux/netlink.h>
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_TYPE_MASK = 0x3FFF  # drops NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLMSGERR_CODE = struct.Struct("=i")  # struct nlmsgerr starts with the negated errno
# struct nlattr and struct rtattr (<linux/rtnetlink.h>) share this header
_NLATTR = struct.Struct("=HH")  # len, type

# <linux/sock_diag.h>, <linux/inet_diag.h>
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_SKV6ONLY = 11
INET_DIAG_CGROUP_ID = 21
TCP_LISTEN = 10  # <net/tcp_states.h>
# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes)
_DIAG_REQ = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retrans (4 bytes); sockid: sport, dport (big-endian),
# src, dst (16 bytes each), ifindex, cookie (48 bytes); expires, rqueue, wqueue, uid, inode.
_DIAG_MSG_SIZE = 72
_DIAG_MSG_QUEUE_AT = 60  # wqueue (the backlog of a listener), uid, inode
_DIAG_MSG_QUEUE = struct.Struct("=III")
_U64 = struct.Struct("=Q")
# A dump answers in skbs of at most 32 KiB (netlink_dump), so a larger buffer only costs.
_DIAG_RECV_BYTES = 1 << 16
_DIAG_SEQ = 1

# <linux/rtnetlink.h>, <linux/if_addr.h>, <linux/if_link.h>
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFLA_IFNAME = 3
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTGENMSG = struct.Struct("=B3x")

_RECV_BYTES = 1 << 20


class NetlinkError(OSError):
    """The kernel refused or broke a dump."""


@dataclass(frozen=True, slots=True)
class DiagListener:
    """One LISTEN socket as sock_diag reports it.

    Attributes:
        backlog: the listen() backlog after the kernel's somaxconn cap (idiag_wqueue).
        v6only: IPV6_V6ONLY for AF_INET6 sockets; None for AF_INET.
        cgroup_id: the cgroup v2 id (directory inode) of the process that created the socket,
            sent unasked since Linux 5.7 (INET_DIAG_CGROUP_ID); None on older kernels.
    """

    family: Family
    address: str
    port: int
    backlog: int
    uid: int
    inode: int
    v6only: bool | None
    cgroup_id: int | None


# One record as the receive loop yields it: (type, seq, buffer, payload offset, message end).
Record = tuple[int, int, bytes, int, int]


def _align(length: int) -> int:
    """NLMSG_ALIGN and NLA_ALIGN: records and attributes start on 4-byte boundaries."""
    return (length + 3) & ~3


def open_socket(protocol: int) -> socket.socket:
    """A netlink socket of ``protocol`` in the current network namespace, bound to a
    kernel-chosen port id."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


def pack_message(msg_type: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One request: the nlmsghdr, then ``payload`` (already padded by its builder)."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, flags, seq, 0) + payload


def pack_attribute(kind: int, value: bytes) -> bytes:
    """One attribute (rtattr/nlattr) with its padding."""
    return _NLATTR.pack(_NLATTR.size + len(value), kind) + value + b"\0" * (-len(value) % 4)


def attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type without its flag bits, value) for each attribute between offset and end."""
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _NLATTR.size : offset + length]
        offset += _align(length)


def error_code(data: bytes, offset: int) -> int:
    """The errno an NLMSG_ERROR payload at ``offset`` carries; 0 is an acknowledgement."""
    code: int = _NLMSGERR_CODE.unpack_from(data, offset)[0]
    return -code


def records(data: bytes) -> Iterator[Record]:
    """Each nlmsghdr record of one received buffer."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            raise NetlinkError(errno.EIO, "malformed netlink message")
        end = offset + length
        yield kind, seq, data, offset + _NLMSGHDR.size, end
        offset = _align(end)


def receive(sock: socket.socket, recv_bytes: int = _RECV_BYTES) -> Iterator[Record]:
    """Every record the socket receives, for as long as the caller iterates. A socket
    timeout ends it with TimeoutError; a closed socket or a malformed record with
    NetlinkError."""
    while True:
        data = sock.recv(recv_bytes)
        if not data:
            raise NetlinkError(errno.EIO, "netlink socket closed during a dump")
        yield from records(data)


def _dump(protocol: int, msg_type: int, payload: bytes) -> Iterator[tuple[int, bytes, int, int]]:
    """Send one dump request, yield (type, buffer, payload offset, message end) per answer."""
    sequence = 1
    with open_socket(protocol) as sock:
        sock.sendall(pack_message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, sequence, payload))
        for kind, seq, data, offset, end in receive(sock):
            if seq != sequence:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = error_code(data, offset)
                if code:
                    raise NetlinkError(code, os.strerror(code))
            else:
                yield kind, data, offset, end


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


# One listener as listening_rows gives it: family, address, port, inode, v6only, backlog, uid,
# cgroup id (the fields of DiagListener, in the order a Listener holds them).
ListenerRow = tuple[Family, str, int, int, bool | None, int, int, int | None]


def listening_tcp() -> list[DiagListener]:
    """Every LISTEN TCP socket of the current network namespace, IPv4 and IPv6."""
    return [
        DiagListener(family, address, port, backlog, uid, inode, v6only, cgroup_id)
        for family, address, port, inode, v6only, backlog, uid, cgroup_id in listening_rows()
    ]


def listening_rows() -> list[ListenerRow]:
    """listening_tcp as plain tuples, for the probe: at 10,000 listeners every step per
    socket costs about 10 ms, and an object per socket is such a step."""
    found: list[ListenerRow] = []
    # Raw address -> text: a node's thousands of listeners share a handful of bind addresses.
    names: dict[bytes, str] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        request = pack_message(
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            _DIAG_SEQ,
            _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN),
        )
        with open_socket(NETLINK_SOCK_DIAG) as sock:
            sock.sendall(request)
            is_done = False
            while not is_done:
                data = sock.recv(_DIAG_RECV_BYTES)
                if not data:
                    raise NetlinkError(errno.EIO, "netlink socket closed during a dump")
                rows, is_done = listen_records(data, family, names)
                found += rows
    return found


def listen_records(
    data: bytes, family: int, names: dict[bytes, str] | None = None
) -> tuple[list[ListenerRow], bool]:
    """The sockets in one received buffer of a LISTEN dump of ``family``, and whether the
    dump's NLMSG_DONE was in it. ``names`` caches address texts across buffers.

    Decoded inline, one pass over each record: an attribute generator and a struct per field
    cost 45 ms at 10,000 listeners."""
    found: list[ListenerRow] = []
    append = found.append
    names = {} if names is None else names
    size, label = (4, Family.IPV4) if family == socket.AF_INET else (16, Family.IPV6)
    header, tail, attribute, u64 = (
        _NLMSGHDR.unpack_from,
        _DIAG_MSG_QUEUE.unpack_from,
        _NLATTR.unpack_from,
        _U64.unpack_from,
    )
    offset, total = 0, len(data)
    while offset + _NLMSGHDR.size <= total:
        length, kind, _flags, seq, _pid = header(data, offset)
        if length < _NLMSGHDR.size:
            raise NetlinkError(errno.EIO, "malformed netlink message")
        body, end = offset + _NLMSGHDR.size, offset + length
        offset = (end + 3) & ~3
        if seq != _DIAG_SEQ:
            continue
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            code = error_code(data, body)
            if code:
                raise NetlinkError(code, os.strerror(code))
            continue
        if end > total or end - body < _DIAG_MSG_SIZE or data[body] != family:
            continue
        raw = data[body + 8 : body + 8 + size]
        address = names.get(raw)
        if address is None:
            address = names[raw] = socket.inet_ntop(family, raw)
        wqueue, uid, inode = tail(data, body + _DIAG_MSG_QUEUE_AT)
        v6only: bool | None = None
        cgroup_id: int | None = None
        at = body + _DIAG_MSG_SIZE
        while at + _NLATTR.size <= end:
            attr_length, attr = attribute(data, at)
            if attr_length < _NLATTR.size:
                break
            attr &= NLA_TYPE_MASK
            if attr == INET_DIAG_CGROUP_ID and attr_length >= _NLATTR.size + 8:
                cgroup_id = u64(data, at + _NLATTR.size)[0]
                if v6only is not None or family == socket.AF_INET:
                    break  # nothing after it is read
            elif attr == INET_DIAG_SKV6ONLY and attr_length > _NLATTR.size and family == socket.AF_INET6:
                v6only = data[at + _NLATTR.size] != 0
            at += (attr_length + 3) & ~3
        # sport is big-endian at offset 4
        port = (data[body + 4] << 8) | data[body + 5]
        append((label, address, port, inode, v6only, wqueue, uid, cgroup_id))
    return found, False


def _link_names() -> dict[int, str]:
    names: dict[int, str] = {}
    request = _RTGENMSG.pack(socket.AF_UNSPEC)
    for kind, data, offset, end in _dump(NETLINK_ROUTE, RTM_GETLINK, request):
        if kind != RTM_NEWLINK:
            continue
        _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(data, offset)
        for attr, value in attributes(data, offset + _IFINFOMSG.size, end):
            if attr == IFLA_IFNAME:
                names[index] = value.rstrip(b"\0").decode("utf-8", "replace")
    return names


def interface_addresses() -> list[InterfaceAddress]:
    """Every IPv4 and IPv6 address of the current network namespace, sorted."""
    names = _link_names()
    found: list[InterfaceAddress] = []
    request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for kind, data, offset, end in _dump(NETLINK_ROUTE, RTM_GETADDR, request):
        if kind != RTM_NEWADDR:
            continue
        family, prefix, _flags, _scope, index = _IFADDRMSG.unpack_from(data, offset)
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        attrs = dict(attributes(data, offset + _IFADDRMSG.size, end))
        # IFA_LOCAL is the local end of a point-to-point link; IFA_ADDRESS is then the peer.
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw is None:
            continue
        text = _address(family, raw)
        parsed = ipaddress.ip_address(text)
        found.append(
            InterfaceAddress(
                name=names.get(index, f"if{index}"),
                family=Family.IPV4 if family == socket.AF_INET else Family.IPV6,
                address=text,
                prefix=prefix,
                is_loopback=parsed.is_loopback,
                is_link_local=parsed.is_link_local,
            )
        )
    found.sort(key=lambda a: (a.name, a.family, a.address))
    return found
