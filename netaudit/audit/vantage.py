"""The vantage: which of this host's addresses a scan sends from, and whether each one is
inside the intended subnets. The source actually used decides inside or outside."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from netaudit import netlink
from netaudit.audit import policy
from netaudit.models import InterfaceAddress, VantageSource
from netaudit.typedread import InputError


class SourceError(InputError):
    """--source names an interface or address this host does not have."""


def _usable(item: InterfaceAddress) -> bool:
    return not item.is_loopback and not item.is_link_local


def _source(item: InterfaceAddress, intended: Sequence[policy.Network]) -> VantageSource:
    network = ipaddress.ip_interface(f"{item.address}/{item.prefix}").network
    return VantageSource(
        address=item.address,
        interface=item.name,
        network=str(network),
        is_inside=policy.is_inside(item.address, intended),
    )


def resolve(
    specs: Sequence[str],
    intended: Sequence[policy.Network],
    interfaces: Sequence[InterfaceAddress] | None = None,
) -> tuple[VantageSource, ...]:
    """Sources from ``--source ADDR|IFACE`` values; by default every address of this host
    that is neither loopback nor link-local."""
    available = list(interfaces) if interfaces is not None else netlink.interface_addresses()
    chosen: dict[str, VantageSource] = {}
    if not specs:
        for item in available:
            if _usable(item):
                chosen.setdefault(item.address, _source(item, intended))
        return tuple(chosen.values())
    for spec in specs:
        try:
            wanted = str(ipaddress.ip_address(spec))
        except ValueError:
            wanted = None
        if wanted is not None:
            match = [item for item in available if item.address == wanted]
            if not match:
                raise SourceError(f"--source {spec}: not an address of this host")
            chosen.setdefault(wanted, _source(match[0], intended))
            continue
        on_interface = [item for item in available if item.name == spec and _usable(item)]
        if not on_interface:
            known = sorted({item.name for item in available})
            raise SourceError(
                f"--source {spec}: no such interface with a usable address "
                f"(this host has: {', '.join(known)})"
            )
        for item in on_interface:
            chosen.setdefault(item.address, _source(item, intended))
    return tuple(chosen.values())
