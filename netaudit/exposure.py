"""Static exposure hints: which node addresses a listener answers on, and which of those lie
outside the intended subnets.

These are hints ("potentially exposed"), never findings: a firewall may drop what the bind
admits, and routing may deliver to a specific bind through another interface (the weak host
model). Only the scanner, from a peer, proves reachability.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from netaudit.models import BindScope, ExposureHint, Family, InterfaceAddress, Listener

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_subnets(texts: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs as given by --intended-subnet or the config; raises ValueError naming the bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 or IPv6 network (CIDR)") from None
    return tuple(networks)


@lru_cache(maxsize=65536)
def _inside(address: str, intended: tuple[Network, ...]) -> bool:
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return any(parsed.version == net.version and parsed in net for net in intended)


def is_inside(address: str, intended: Sequence[Network]) -> bool:
    """Cached per address: a node's listeners share its few addresses."""
    return _inside(address, tuple(intended))


def _routable(interfaces: Sequence[InterfaceAddress], families: set[Family]) -> list[str]:
    return [
        item.address
        for item in interfaces
        if item.family in families and not item.is_loopback and not item.is_link_local
    ]


def hint(
    listener: Listener,
    scope: BindScope,
    interfaces: Sequence[InterfaceAddress] | None,
    intended: Sequence[Network],
) -> ExposureHint:
    notes: list[str] = []
    if scope in (BindScope.LOOPBACK, BindScope.LINK_LOCAL):
        answers: list[str] = []
        notes.append(f"{scope.value} only")
    elif scope is BindScope.SPECIFIC:
        answers = [listener.address]
        notes.append(
            "bound to one address, but routing may deliver to it through any interface "
            "(weak host model): only a scan from a peer proves it"
        )
    elif interfaces is None:
        answers = []
        notes.append("wildcard bind, but this namespace's addresses could not be read")
    else:
        families = {
            BindScope.DUAL_STACK: {Family.IPV4, Family.IPV6},
            BindScope.WILDCARD_V4: {Family.IPV4},
            BindScope.WILDCARD_V6: {Family.IPV6},
        }[scope]
        answers = sorted(set(_routable(interfaces, families)), key=_address_key)
        notes.append("wildcard bind: answers on every address of its network namespace")
    if not intended and answers:
        notes.append("no intended subnet configured: every non-loopback address counts as outside")
    outside = [address for address in answers if not is_inside(address, intended)]
    return ExposureHint(
        scope=scope,
        answers_on=tuple(answers),
        outside_intended=tuple(outside),
        note="; ".join(notes),
    )


def _address_key(address: str) -> tuple[int, int]:
    parsed = ipaddress.ip_address(address)
    return parsed.version, int(parsed)
