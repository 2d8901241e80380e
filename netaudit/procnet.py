"""Fallback listener source: /proc/<pid>/net/tcp and tcp6, which show the namespace of <pid>.

Used where sock_diag cannot be taken inside a namespace (not root: setns needs
CAP_SYS_ADMIN). These files carry neither the backlog nor IPV6_V6ONLY, and they list every
TCP socket, so they cost time in proportion to established connections too.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from netaudit.models import Family, InterfaceAddress

_LISTEN = "0A"  # TCP_LISTEN (10) as the kernel prints it
TcpRow = tuple[Family, str, int, int, int]  # family, address, port, uid, inode


def _decode_address(hex_address: str) -> tuple[Family, str]:
    # The kernel prints each 32-bit word of the address as a host-order integer (%08X):
    # packing those integers in host order gives back the bytes as they sat in memory.
    if len(hex_address) not in (8, 32):
        raise ValueError(hex_address)
    memory = b"".join(
        struct.pack("=I", int(hex_address[i : i + 8], 16)) for i in range(0, len(hex_address), 8)
    )
    if len(memory) == 4:
        return Family.IPV4, socket.inet_ntop(socket.AF_INET, memory)
    return Family.IPV6, socket.inet_ntop(socket.AF_INET6, memory)


def parse(text: str) -> list[TcpRow]:
    """Listening rows of one tcp/tcp6 file: (family, address, port, uid, inode)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address_hex, _, port_hex = fields[1].partition(":")
        try:
            family, address = _decode_address(address_hex)
            rows.append((family, address, int(port_hex, 16), int(fields[7]), int(fields[9])))
        except ValueError:
            continue  # a line we do not understand is skipped, never fatal
    return rows


def listeners_through(pids: Iterable[int], proc: str) -> tuple[int, list[TcpRow]] | None:
    """A namespace's listening rows (``parse``) read through the first of ``pids``, processes
    of that namespace, whose /proc/<pid>/net/tcp{,6} can still be read: (that pid, rows), or
    None when none can (every one left, or none is visible)."""
    for pid in pids:
        try:
            rows = []
            for name in ("tcp", "tcp6"):
                with open(f"{proc}/{pid}/net/{name}", encoding="utf-8") as handle:
                    rows += parse(handle.read())
        except OSError:
            continue  # that process left; try the next one of the namespace
        return pid, rows
    return None


def read_sysctl(path: str) -> int | None:
    """An integer sysctl; None when it cannot be read. /proc/sys/net resolves against the
    network namespace of the reading thread, so read it while inside the namespace."""
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def ipv6_addresses(pid: int, proc: str) -> list[InterfaceAddress]:
    """/proc/<pid>/net/if_inet6: address, ifindex, prefix, scope, flags, name. Raises OSError."""
    found = []
    with open(f"{proc}/{pid}/net/if_inet6", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) != 6:
                continue
            scope = int(fields[3], 16)
            found.append(
                InterfaceAddress(
                    name=fields[5],
                    family=Family.IPV6,
                    address=socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0])),
                    prefix=int(fields[2], 16),
                    is_loopback=scope == 0x10,  # IPV6_ADDR_LOOPBACK
                    is_link_local=scope == 0x20,  # IPV6_ADDR_LINKLOCAL
                )
            )
    return found
