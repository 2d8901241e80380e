"""Many small datagrams through one socket in one system call: sendmmsg(2) through ctypes.

The half-open scanner sends 24-byte SYNs from a raw socket, one ``sendto`` each. Per packet
that is a Python call, an argument tuple parsed into a sockaddr, and a system call; the
kernel's own work for the packet stays whatever we do. A batch holds a fixed array of
``struct mmsghdr`` whose iovecs and names point into two preallocated buffers: a packet is
written in place (``struct.pack_into`` at its slot), its destination copied in as 16 or 28
ready-made sockaddr bytes, and ``flush`` hands the whole batch to the kernel at once.

Errors stay per packet, as with ``sendto``: sendmmsg stops at the first message that fails
and reports how many left before it (the error itself is lost, sendmmsg(2)), so ``flush``
calls it again from that message, which fails alone and names its errno. A transient error
(ENOBUFS, EAGAIN) ends the flush: the rest are marked with it and the caller sends them later.

Where libc has no sendmmsg (or a test passes something that only has ``sendto``),
``SendtoBatch`` offers the same interface one ``sendto`` per packet.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple, Protocol

# Errors after which the rest of a batch is not even tried: the send queue is full.
TRANSIENT_ERRNOS = frozenset({errno.ENOBUFS, errno.EAGAIN})

# struct sockaddr_in (<netinet/in.h>): family in host order, port and address in network
# order, 8 bytes of zero padding; struct sockaddr_in6: family, port, flowinfo, address,
# scope id.
_SOCKADDR_IN = struct.Struct("=H2s4s8x")
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):  # <sys/socket.h> struct msghdr
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):  # struct mmsghdr, sendmmsg(2)
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


class Destination(NamedTuple):
    """Where a packet goes: address and port (for ``sendto``), and the same as a sockaddr."""

    address: str
    port: int
    sockaddr: bytes


def destination(address: str, port: int = 0) -> Destination:
    """The Destination of an IP literal (a ``%scope`` suffix is not accepted). Raw sockets
    ignore the port (raw(7)); a datagram socket needs one."""
    port_bytes = port.to_bytes(2, "big")
    if ":" in address:
        packed = socket.inet_pton(socket.AF_INET6, address)
        return Destination(address, port, _SOCKADDR_IN6.pack(socket.AF_INET6, port_bytes, 0, packed, 0))
    packed = socket.inet_pton(socket.AF_INET, address)
    return Destination(address, port, _SOCKADDR_IN.pack(socket.AF_INET, port_bytes, packed))


class Batch(Protocol):
    """Packets queued in place, sent together by ``flush``.

    ``claim`` reserves the next slot for a packet to ``target`` and returns its byte offset
    in ``buffer``; the caller writes exactly ``packet_size`` bytes there. ``flush`` sends
    what was claimed, in order, and returns one entry per packet: None when it left, else
    the OSError that ``sendto`` would have raised for it. The batch is then empty again.
    """

    @property
    def buffer(self) -> bytearray | memoryview: ...

    @property
    def capacity(self) -> int: ...

    def claim(self, target: Destination) -> int: ...

    def flush(self) -> list[OSError | None]: ...


class Sendto(Protocol):
    """What ``SendtoBatch`` needs: a socket, or a test's recording stand-in."""

    def sendto(self, data: bytes, address: tuple[str, int], /) -> int: ...


class SendtoBatch:
    """The Batch interface over ``sendto``, one call per packet."""

    __slots__ = ("_sender", "_targets", "buffer", "capacity", "packet_size")

    def __init__(self, sender: Sendto, capacity: int, packet_size: int) -> None:
        self._sender = sender
        self.capacity = capacity
        self.packet_size = packet_size
        self.buffer = bytearray(capacity * packet_size)
        self._targets: list[Destination] = []

    def claim(self, target: Destination) -> int:
        index = len(self._targets)
        if index == self.capacity:
            raise OverflowError("batch full: flush it first")
        self._targets.append(target)
        return index * self.packet_size

    def flush(self) -> list[OSError | None]:
        targets, self._targets = self._targets, []
        results: list[OSError | None] = []
        size = self.packet_size
        for index, target in enumerate(targets):
            packet = bytes(self.buffer[index * size : (index + 1) * size])
            try:
                self._sender.sendto(packet, (target.address, target.port))
            except OSError as error:
                results.append(error)
                if error.errno in TRANSIENT_ERRNOS:
                    results += [error] * (len(targets) - len(results))
                    break
            else:
                results.append(None)
        return results


def _libc_sendmmsg() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sendmmsg  # glibc 2.14, musl 1.1.2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    function.restype = ctypes.c_int
    sendmmsg: Callable[[int, int, int, int], int] = function
    return sendmmsg


_SENDMMSG = _libc_sendmmsg()


def has_sendmmsg() -> bool:
    return _SENDMMSG is not None


class MmsgBatch:
    """The Batch interface over sendmmsg(2) on one socket (any datagram or raw socket),
    which must stay open as long as the batch is used: the batch keeps its fd number."""

    __slots__ = (
        "_count", "_fd", "_messages", "_name_size", "_names", "_send", "buffer", "capacity", "packet_size",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, capacity: int, packet_size: int) -> None:
        if _SENDMMSG is None:
            raise OSError(errno.ENOSYS, "libc has no sendmmsg")
        self._send = _SENDMMSG
        self._fd = sock.fileno()
        self.capacity = capacity
        self.packet_size = packet_size
        self._name_size = _SOCKADDR_IN6.size if sock.family == socket.AF_INET6 else _SOCKADDR_IN.size
        packets = (ctypes.c_char * (capacity * packet_size))()
        names = (ctypes.c_char * (capacity * self._name_size))()
        iovecs = (_Iovec * capacity)()
        messages = (_Mmsghdr * capacity)()
        for index in range(capacity):
            iovecs[index].iov_base = ctypes.addressof(packets) + index * packet_size
            iovecs[index].iov_len = packet_size
            header = messages[index].msg_hdr
            header.msg_name = ctypes.addressof(names) + index * self._name_size
            header.msg_namelen = self._name_size
            header.msg_iov = ctypes.addressof(iovecs[index])
            header.msg_iovlen = 1
        # The messages point into these: keep them alive with the batch.
        self._messages = (messages, iovecs, packets)
        self.buffer = memoryview(packets).cast("B")
        self._names = memoryview(names).cast("B")
        self._count = 0

    def claim(self, target: Destination) -> int:
        index = self._count
        if index == self.capacity:
            raise OverflowError("batch full: flush it first")
        size = self._name_size
        if len(target.sockaddr) != size:
            raise ValueError(f"{target.address} is not of this socket's family")
        self._names[index * size : (index + 1) * size] = target.sockaddr
        self._count = index + 1
        return index * self.packet_size

    def flush(self) -> list[OSError | None]:
        count, self._count = self._count, 0
        results: list[OSError | None] = [None] * count
        send = self._send
        base = ctypes.addressof(self._messages[0])
        stride = ctypes.sizeof(_Mmsghdr)
        start = 0
        while start < count:
            sent = send(self._fd, base + start * stride, count - start, 0)
            if sent > 0:
                start += sent
                continue
            # 0 is not an answer sendmmsg gives for a non-empty batch; never spin on it.
            code = ctypes.get_errno() if sent < 0 else errno.EAGAIN
            if code == errno.EINTR:
                continue
            error = OSError(code, os.strerror(code))
            if code in TRANSIENT_ERRNOS:
                results[start:] = [error] * (count - start)
                break
            results[start] = error
            start += 1
        return results


def open_batch(sender: socket.socket | Sendto, capacity: int, packet_size: int) -> Batch:
    """sendmmsg on a real socket where libc has it, else ``sendto`` one packet at a time."""
    if isinstance(sender, socket.socket) and _SENDMMSG is not None:
        return MmsgBatch(sender, capacity, packet_size)
    return SendtoBatch(sender, capacity, packet_size)
