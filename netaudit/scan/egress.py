"""Where a probe leaves from: the source address's interface, whether the kernel's route to a
target really leaves through it, and a reserved source port. Shared by both scan engines, as
is the planning around it: ``screen`` turns what cannot be sent into NOT_TESTED outcomes, and
``distinct``/``with_aliases`` probe a spec spelled two ways once and report it twice.

Why a route check before sending: each source must leave through its own interface
(DESIGN.md §5), so send sockets are bound to the interface with SO_BINDTODEVICE. For IPv4 the
kernel then never refuses a destination it has no route to through that interface: it
"assumes that the destination is on link" and ARPs for it there (net/ipv4/route.c,
ip_route_output_key_hash_rcu). The probe would time out and read as "filtered" when the truth
is "no route from this source". IPv6 does fail with ENETUNREACH, but we ask the kernel the
same question for both: one RTM_GETROUTE per (source, target), sent in batches, answers
exactly what ``ip route get TARGET from SOURCE`` would print.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from netaudit import netlink
from netaudit.models import PortState
from netaudit.scan.packets import pack_address, unpack_address
from netaudit.scan.probe_types import ProbeOutcome, ProbeSpec, address_family

# <linux/rtnetlink.h>
_RTM_NEWROUTE = 24
_RTM_GETROUTE = 26
_RTA_DST = 1
_RTA_SRC = 2
_RTA_OIF = 4
_RTN_LOCAL = 2
# struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTMSG_TYPE_OFFSET = 7  # rtm_type, after family .. scope
_OIF = struct.Struct("=I")  # RTA_OIF: the output interface index
# Requests in flight on the netlink socket at once: each answer is about 100 bytes, well
# inside the default 208 KiB receive buffer (net.core.rmem_default).
_ROUTE_BATCH = 256
_ROUTE_TIMEOUT_S = 2.0
_ROUTE_RECV_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class Source:
    """A local address to probe from and the interface that carries it.

    Attributes:
        interface: the interface name, None when the address is not on any interface of
            this network namespace.
        ifindex: its index, 0 when unknown.
    """

    address: str
    interface: str | None
    ifindex: int


def local_sources(addresses: Iterable[str]) -> dict[str, Source]:
    """Look up the interface of each source address (same text in, as the key)."""
    by_packed: dict[bytes, str] = {}
    for item in netlink.interface_addresses():
        by_packed.setdefault(pack_address(item.address), item.name)
    found: dict[str, Source] = {}
    for address in addresses:
        name = by_packed.get(pack_address(address))
        index = 0
        if name is not None:
            try:
                index = socket.if_nametoindex(name)
            except OSError:
                name = None  # the interface went away between the dump and now
        found[address] = Source(address, name, index)
    return found


def canonical(address: str) -> str:
    """The canonical text of an IP literal (what inet_ntop prints, as the kernel does)."""
    return unpack_address(pack_address(address))


def distinct(specs: Iterable[ProbeSpec]) -> tuple[list[ProbeSpec], dict[ProbeSpec, list[ProbeSpec]]]:
    """The specs to probe, one per (source, target, port) however the addresses are spelled,
    and for each of them the other spellings that must get the same outcome."""
    first: dict[tuple[str, str, int], ProbeSpec] = {}
    aliases: dict[ProbeSpec, list[ProbeSpec]] = {}
    for spec in specs:
        key = (canonical(spec.source), canonical(spec.address), spec.port)
        kept = first.setdefault(key, spec)
        if kept != spec and spec not in aliases.setdefault(kept, []):
            aliases[kept].append(spec)
    return list(first.values()), {spec: more for spec, more in aliases.items() if more}


def with_aliases(
    outcomes: Iterable[ProbeOutcome], aliases: dict[ProbeSpec, list[ProbeSpec]]
) -> Iterator[ProbeOutcome]:
    """Each outcome, then the same verdict for every other spelling of its spec."""
    for outcome in outcomes:
        yield outcome
        for alias in aliases.get(outcome.spec, ()):
            yield dataclasses.replace(outcome, spec=alias)


def _route_request(seq: int, source: bytes, target: bytes) -> bytes:
    family = socket.AF_INET if len(target) == 4 else socket.AF_INET6
    bits = len(target) * 8
    body = _RTMSG.pack(family, bits, bits, 0, 0, 0, 0, 0, 0)
    body += netlink.pack_attribute(_RTA_DST, target) + netlink.pack_attribute(_RTA_SRC, source)
    return netlink.pack_message(_RTM_GETROUTE, netlink.NLM_F_REQUEST, seq, body)


def _route_answer(data: bytes, offset: int, end: int) -> tuple[int, bool]:
    """(output interface index, is a local route) from an RTM_NEWROUTE message body."""
    route_type = data[offset + _RTMSG_TYPE_OFFSET]
    oif = 0
    for kind, value in netlink.attributes(data, offset + _RTMSG.size, end):
        if kind == _RTA_OIF and len(value) >= _OIF.size:
            (oif,) = _OIF.unpack_from(value)
    return oif, route_type == _RTN_LOCAL


RouteResult = tuple[int, bool] | int  # (oif, is_local), or an errno


def lookup_routes(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], RouteResult]:
    """The kernel's output route for each (source, target): ``(oif, is_local)`` or an errno
    (ENETUNREACH, EINVAL for a source that is not local, ...)."""
    results: dict[tuple[str, str], RouteResult] = {}
    with netlink.open_socket(netlink.NETLINK_ROUTE) as sock:
        # The kernel answers every request at once; a deadline only guards against hanging.
        sock.settimeout(_ROUTE_TIMEOUT_S)
        for start in range(0, len(pairs), _ROUTE_BATCH):
            batch = pairs[start : start + _ROUTE_BATCH]
            requests = [
                _route_request(index + 1, pack_address(src), pack_address(dst))
                for index, (src, dst) in enumerate(batch)
            ]
            sock.sendall(b"".join(requests))
            waiting = len(batch)
            answers = netlink.receive(sock, _ROUTE_RECV_BYTES)
            while waiting:
                try:
                    kind, seq, data, body, end = next(answers)
                except TimeoutError:
                    break  # unanswered pairs stay absent: route_problem reports them
                if not 1 <= seq <= len(batch):
                    continue
                pair = batch[seq - 1]
                if kind == netlink.NLMSG_ERROR:
                    code = netlink.error_code(data, body)
                    if code:  # code 0 would be an ACK, which we did not ask for
                        results.setdefault(pair, code)
                        waiting -= 1
                elif kind == _RTM_NEWROUTE:
                    results.setdefault(pair, _route_answer(data, body, end))
                    waiting -= 1
    return results


def route_problem(source: Source, target: str, route: RouteResult | None) -> str | None:
    """Why ``source`` cannot reach ``target`` through its own interface, or None if it can.

    A local route (the target is an address of this host) is accepted: it goes through
    loopback whatever the binding, and labelling it "local path" is the caller's business.
    """
    if route is None:
        return f"no route from {source.address}: the kernel did not answer the route lookup"
    if isinstance(route, int):
        if route == errno.EINVAL:
            return f"source {source.address} is not an address of this host"
        return f"no route from {source.address} ({os.strerror(route)})"
    oif, is_local = route
    if is_local or oif == source.ifindex:
        return None
    try:
        name = socket.if_indextoname(oif)
    except OSError:
        name = f"if{oif}"
    return f"no route from {source.address}: {target} is routed through {name}, not {source.interface}"


def reserve_port(address: str) -> socket.socket:
    """A TCP socket bound to (address, kernel-chosen port), never listening nor connected.

    While it lives, the kernel will not hand that port to a connect() (bound ports are
    skipped by the ephemeral allocator, net/ipv4/inet_hashtables.c __inet_hash_connect),
    and an incoming SYN-ACK to it finds no socket, so the kernel answers RST: the half-open
    probe never becomes a connection on either side.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind((address, 0))
    except OSError:
        sock.close()
        raise
    return sock


def screen(
    specs: list[ProbeSpec],
) -> tuple[list[ProbeOutcome], list[ProbeSpec], dict[str, Source]]:
    """Split specs into outcomes for those that cannot be sent at all (family mismatch, a
    source that is not local, no route of the source's own), and the rest with their
    sources."""
    outcomes: list[ProbeOutcome] = []
    sendable: list[ProbeSpec] = []
    for spec in specs:
        if address_family(spec.source) != address_family(spec.address):
            mismatch = f"source {spec.source} and target {spec.address} are of different families"
            outcomes.append(ProbeOutcome(spec, PortState.NOT_TESTED, mismatch, None, 0))
        else:
            sendable.append(spec)
    sources = local_sources({spec.source for spec in sendable})
    pairs = sorted({(spec.source, spec.address) for spec in sendable if sources[spec.source].interface})
    routes = lookup_routes(pairs) if pairs else {}
    routable: list[ProbeSpec] = []
    for spec in sendable:
        source = sources[spec.source]
        if source.interface is None:
            reason: str | None = f"source {spec.source} is not an address of this host"
        else:
            pair = (spec.source, spec.address)
            reason = route_problem(source, spec.address, routes.get(pair))
        if reason is None:
            routable.append(spec)
        else:
            outcomes.append(ProbeOutcome(spec, PortState.NOT_TESTED, reason, None, 0))
    return outcomes, routable, sources
