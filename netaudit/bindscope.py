"""Where a listening socket accepts connections, from its bind address and IPV6_V6ONLY."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from netaudit.models import BindScope, Family


@lru_cache(maxsize=4096)
def scope_of(family: Family, address: str, v6only: bool | None, bindv6only_default: bool) -> BindScope:
    """Cached: a node's thousands of listeners share a handful of bind addresses.

    ``v6only`` None (procfs gives none) falls back to net.ipv6.bindv6only, which is what a
        socket gets unless its program sets IPV6_V6ONLY itself."""
    parsed = ipaddress.ip_address(address)
    if parsed.is_unspecified:
        if family is Family.IPV4:
            return BindScope.WILDCARD_V4
        is_v6only = bindv6only_default if v6only is None else v6only
        return BindScope.WILDCARD_V6 if is_v6only else BindScope.DUAL_STACK
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if parsed.is_loopback:
        return BindScope.LOOPBACK
    if parsed.is_link_local:
        return BindScope.LINK_LOCAL
    return BindScope.SPECIFIC


# The names signatures use in `bind = [...]` (netaudit.signatures.BIND_SCOPES).
_PREDICATE_SCOPES: dict[str, frozenset[BindScope]] = {
    "wildcard": frozenset({BindScope.DUAL_STACK, BindScope.WILDCARD_V4, BindScope.WILDCARD_V6}),
    "dual-stack": frozenset({BindScope.DUAL_STACK}),
    "ipv4-wildcard": frozenset({BindScope.WILDCARD_V4}),
    "ipv6-wildcard": frozenset({BindScope.WILDCARD_V6}),
    "loopback": frozenset({BindScope.LOOPBACK}),
    "link-local": frozenset({BindScope.LINK_LOCAL}),
    "specific": frozenset({BindScope.SPECIFIC}),
    "not-wildcard": frozenset({BindScope.LOOPBACK, BindScope.LINK_LOCAL, BindScope.SPECIFIC}),
}


def matches(scope: BindScope, names: tuple[str, ...]) -> bool:
    return any(scope in _PREDICATE_SCOPES[name] for name in names)


def describe(scope: BindScope, address: str, family: Family) -> str:
    shown = f"[{address}]" if family is Family.IPV6 else address
    return {
        BindScope.DUAL_STACK: f"bound to {shown} dual-stack (v6only=0): IPv4 and IPv6",
        BindScope.WILDCARD_V4: f"bound to {shown}: every IPv4 address",
        BindScope.WILDCARD_V6: f"bound to {shown} with v6only=1: every IPv6 address",
        BindScope.LOOPBACK: f"bound to loopback {shown}",
        BindScope.LINK_LOCAL: f"bound to link-local {shown}",
        BindScope.SPECIFIC: f"bound to {shown}",
    }[scope]
