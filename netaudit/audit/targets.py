"""Scan targets as the admin names them: addresses, CIDRs, host names and hostlists.

Parsing only says what each target is; ``netaudit.audit.scope`` decides what it means (a
filter of the inventories' addresses, or hosts to sweep). A name that does not resolve is
that host's gap, not a usage error; a malformed target, or one that can never be evidence
(loopback, link-local, multicast: a host probing itself proves nothing), is.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from netaudit import hostlist, hostnames
from netaudit.typedread import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_RESOLVE_WORKERS = 16


class TargetError(InputError):
    """A target that is malformed or too large: one line, exit 2, nothing probed."""


class TargetKind(StrEnum):
    NETWORK = "network"  # a CIDR of more than one address
    ADDRESS = "address"  # one IP address
    NAME = "name"  # a host name (resolved unless an inventory carries it)


@dataclass(frozen=True, slots=True)
class Target:
    """One named host, address or network.

    Attributes:
        host: the name, the address, or the CIDR as canonical text.
        addresses: the address, or what a name resolved to; empty for a network (never
            expanded here) and for a name an inventory carries.
        network: the CIDR for a network target, else None.
        is_inventory_host: a name that an inventory of this run carries: its node's
            addresses are in scope, and it is not resolved.
        error: why a name has no address (does not resolve), else None.
    """

    host: str
    kind: TargetKind
    addresses: tuple[str, ...] = ()
    network: Network | None = None
    is_inventory_host: bool = False
    error: str | None = None


def is_evidence_address(address: Address) -> bool:
    """An address whose reachability from here means something about outsiders."""
    return not (
        address.is_loopback or address.is_link_local or address.is_multicast or address.is_unspecified
    )


def _refuse_address(text: str, address: Address) -> None:
    if not is_evidence_address(address):
        kind = (
            "loopback" if address.is_loopback else "link-local" if address.is_link_local
            else "multicast" if address.is_multicast else "unspecified"
        )  # fmt: skip
        raise TargetError(
            f"{text}: a {kind} address is not a scan target: reaching it proves nothing about "
            "outsiders (run `netaudit scan` with no target to audit this host over loopback)"
        )


def _resolve(name: str) -> Target:
    try:
        answers = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        return Target(name, TargetKind.NAME, error=f"does not resolve ({error})")
    parsed = {ipaddress.ip_address(str(answer[4][0]).split("%")[0]) for answer in answers}
    usable = sorted((a for a in parsed if is_evidence_address(a)), key=lambda a: (a.version, int(a)))
    if not usable:
        return Target(name, TargetKind.NAME, error="resolves to loopback or link-local addresses only")
    return Target(name, TargetKind.NAME, tuple(str(a) for a in usable))


def parse(texts: Sequence[str], max_names: int, inventory_hosts: Collection[str] = ()) -> tuple[Target, ...]:
    """What each text names, in order; names resolved (in parallel) unless an inventory
    carries them. Raises TargetError for a malformed target."""
    result: list[Target | None] = []
    to_resolve: list[tuple[int, str]] = []
    for raw in texts:
        text = raw.strip()
        if not text:
            raise TargetError("an empty target")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            network = None
        if network is not None:
            _refuse_address(text, network.network_address)
            if network.num_addresses == 1:
                address = str(network.network_address)
                result.append(Target(address, TargetKind.ADDRESS, (address,)))
            else:
                result.append(Target(str(network), TargetKind.NETWORK, network=network))
            continue
        if "%" in text:
            raise TargetError(f"{text!r}: a scoped (link-local) address is not a scan target")
        names = hostlist.expand(text, max_names) if "[" in text else [text]
        if len(names) > max_names:
            raise TargetError(f"{text}: more than {max_names} names (scan.max_targets)")
        for name in names:
            if not hostnames.is_valid_host(name):
                raise TargetError(f"{name!r} is not a host name, address, CIDR or hostlist")
            if name in inventory_hosts:
                result.append(Target(name, TargetKind.NAME, is_inventory_host=True))
            else:
                to_resolve.append((len(result), name))
                result.append(None)
    if to_resolve:
        if len(to_resolve) > max_names:
            raise TargetError(f"{len(to_resolve)} names to resolve, more than scan.max_targets = {max_names}")
        with ThreadPoolExecutor(max_workers=min(_RESOLVE_WORKERS, len(to_resolve))) as pool:
            resolved = list(pool.map(_resolve, [name for _index, name in to_resolve]))
        for (index, _name), target in zip(to_resolve, resolved, strict=True):
            result[index] = target
    return tuple(target for target in result if target is not None)
