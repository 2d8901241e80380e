"""The scan plan: which endpoints (address x port) to try, from which sources, how, and which
may receive a read-only handshake. Pure: builds data, sends nothing (`--dry-run` prints it).

Endpoints come from inventories (every address of the listener's namespace that may answer:
all of them for a wildcard bind, the bound address for a specific one, which routing may
still deliver through any interface) and, for targets no inventory covers, a default port set.
The rules of DESIGN.md §5 are applied here, in one place:
- inventory addresses outside the target scope, loopback and link-local ones, and addresses
  seen on more than one node (a docker0 bridge) are never targets;
- without raw sockets, connect() only to high-confidence connect-safe listeners of a fresh
  inventory (TensorPipe never, whatever --allow-connect says);
- a handshake only where its signature has one, on a fresh high-confidence classification
  or a candidate on the signature's default port.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from netaudit import bindscope, exposure
from netaudit.models import (
    BindScope,
    Confidence,
    Endpoint,
    Family,
    Inventory,
    Listener,
    Method,
    VantageSource,
)
from netaudit.scan.probe_types import ProbeSpec
from netaudit.signatures import Signature
from netaudit.targets import TargetSet

NO_RAW = (
    "not tested: no raw-socket privilege (CAP_NET_RAW), and connect() is used only on "
    "high-confidence TCPStore/Gloo/NCCL listeners of a fresh inventory (--allow-connect widens it)"
)
NEVER_CONNECT = "not tested: TensorPipe listener, never connected to (only a SYN is safe)"
STALE = "inventory older than --max-inventory-age: ports may have been reused"


@dataclass(frozen=True, slots=True)
class PlannedProbe:
    endpoint: int  # index into Plan.endpoints
    spec: ProbeSpec
    method: Method
    reason: str | None  # why not tested, when method is NONE


@dataclass(frozen=True, slots=True)
class Plan:
    """Attributes:
    canary_ports: per (source, address) path, a port likely to answer (a non-PyTorch
        listener of the inventory, else a closed port), tried only where the path stayed
        silent, so that "filtered" is trusted only on a path known to work.
    handshakes: endpoint index -> handshake name, for endpoints that may be confirmed.
    local_addresses: this host's addresses: probes to them never leave the host.
    """

    endpoints: tuple[Endpoint, ...]
    probes: tuple[PlannedProbe, ...]
    canary_ports: dict[tuple[str, str], int]
    handshakes: dict[int, str]
    local_addresses: frozenset[str]
    notes: tuple[str, ...]
    incomplete: tuple[str, ...]


def _routable(address: str) -> bool:
    parsed = ipaddress.ip_address(address)
    return not (parsed.is_loopback or parsed.is_link_local or parsed.is_unspecified)


def _family(address: str) -> Family:
    return Family.IPV6 if ":" in address else Family.IPV4  # canonical IP text: no parsing


def answering_addresses(listener: Listener, namespace_addresses: Sequence[str]) -> list[str]:
    """Addresses of the listener's namespace that may answer it (never loopback)."""
    scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
    if scope is BindScope.SPECIFIC:
        return [listener.address] if _routable(listener.address) else []
    if not scope.is_wildcard:
        return []
    families = {
        BindScope.DUAL_STACK: {Family.IPV4, Family.IPV6},
        BindScope.WILDCARD_V4: {Family.IPV4},
        BindScope.WILDCARD_V6: {Family.IPV6},
    }[scope]
    return [address for address in namespace_addresses if _family(address) in families]


def _namespace_addresses(inventory: Inventory) -> dict[int, list[str]]:
    return {
        ns.inode: [item.address for item in ns.interfaces if _routable(item.address)]
        for ns in inventory.namespaces
    }


def _ambiguous(inventories: Sequence[Inventory]) -> dict[str, set[str]]:
    owners: dict[str, set[tuple[str, int]]] = {}
    for inventory in inventories:
        for inode, addresses in _namespace_addresses(inventory).items():
            for address in addresses:
                owners.setdefault(address, set()).add((inventory.host, inode))
    return {
        address: {host for host, _inode in places} for address, places in owners.items() if len(places) > 1
    }


def _canary_candidates(inventory: Inventory) -> dict[str, int]:
    """address -> a port of a non-PyTorch listener answering there (sshd, say)."""
    by_ns = _namespace_addresses(inventory)
    found: dict[str, int] = {}
    for listener in sorted(inventory.listeners, key=lambda item: item.port):
        if listener.classification is not None:
            continue
        for address in answering_addresses(listener, by_ns.get(listener.netns, [])):
            found.setdefault(address, listener.port)
    return found


@dataclass(frozen=True, slots=True)
class Rules:
    """The knobs the plan obeys (config and flags resolved)."""

    intended: tuple[exposure.Network, ...]
    default_ports: tuple[int, ...]
    max_inventory_age_s: float
    is_raw: bool
    allow_connect: bool


# Any port answers the canary's purpose if it is closed: the RST proves the path. Port 1
# (tcpmux) is unassigned in practice.
CLOSED_CANARY_PORT = 1


def build(
    inventories: Sequence[Inventory],
    targets: TargetSet,
    sources: Sequence[VantageSource],
    signatures: Sequence[Signature],
    rules: Rules,
    now: datetime,
    local_addresses: frozenset[str],
) -> Plan:
    notes: list[str] = []
    incomplete: list[str] = [target.error for target in targets.unresolved if target.error]
    ambiguous = _ambiguous(inventories)
    for address, hosts in sorted(ambiguous.items()):
        notes.append(
            f"{address} appears on {', '.join(sorted(hosts))} (a bridge such as docker0?): "
            "attributed to none, not scanned"
        )
    endpoints: list[Endpoint] = []
    canaries: dict[str, int] = {}
    inside: dict[str, bool] = {}  # one answer per address: a /22 x 16 ports asks 16,384 times

    def is_outside(address: str) -> bool:
        if address not in inside:
            inside[address] = exposure.is_inside(address, rules.intended)
        return not inside[address]

    covered: set[str] = set()
    out_of_scope: set[str] = set()
    for inventory in inventories:
        age_s = max(0.0, (now - inventory.collected_at).total_seconds())
        if inventory.gaps:
            incomplete.append(
                f"{inventory.host}: its inventory is incomplete ({len(inventory.gaps)} gaps, "
                f"first: {inventory.gaps[0]})"
            )
        by_ns = _namespace_addresses(inventory)
        for addresses in by_ns.values():
            covered.update(addresses)
        for address, port in _canary_candidates(inventory).items():
            canaries.setdefault(address, port)
        for listener in inventory.listeners:
            if listener.classification is None:
                continue
            for address in answering_addresses(listener, by_ns.get(listener.netns, [])):
                if address in ambiguous:
                    continue
                if not targets.contains(address):
                    out_of_scope.add(address)
                    continue
                endpoints.append(
                    Endpoint(
                        host=inventory.host,
                        address=address,
                        family=_family(address),
                        port=listener.port,
                        listener=listener,
                        inventory_age_s=age_s,
                        is_outside_address=is_outside(address),
                    )
                )
    if out_of_scope:
        shown = ", ".join(sorted(out_of_scope)[:6])
        more = f" and {len(out_of_scope) - 6} more" if len(out_of_scope) > 6 else ""
        notes.append(f"inventory addresses outside the target scope were not scanned: {shown}{more}")
    for target in targets.targets:
        for address in target.addresses:
            if address in covered or address in ambiguous:
                continue
            for port in rules.default_ports:
                endpoints.append(
                    Endpoint(
                        host=target.host,
                        address=address,
                        family=_family(address),
                        port=port,
                        listener=None,
                        inventory_age_s=None,
                        is_outside_address=is_outside(address),
                    )
                )
    endpoints = _deduplicated(endpoints)
    probes, canary_ports = _probes(endpoints, sources, rules, canaries)
    handshakes = {
        index: name
        for index, endpoint in enumerate(endpoints)
        if (name := handshake_for(endpoint, signatures, rules.max_inventory_age_s)) is not None
    }
    return Plan(
        endpoints=tuple(endpoints),
        probes=tuple(probes),
        canary_ports=canary_ports,
        handshakes=handshakes,
        local_addresses=local_addresses,
        notes=tuple(notes),
        incomplete=tuple(incomplete),
    )


def _deduplicated(endpoints: list[Endpoint]) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for endpoint in endpoints:
        seen.setdefault((endpoint.address, endpoint.port), endpoint)
    return sorted(seen.values(), key=lambda e: (e.host, e.family, _packed(e.address), e.port))


def _packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def is_fresh(endpoint: Endpoint, max_age_s: float) -> bool:
    return endpoint.inventory_age_s is not None and endpoint.inventory_age_s <= max_age_s


def connect_verdict(endpoint: Endpoint, rules: Rules) -> str | None:
    """None if connect() is allowed on this endpoint, else why not."""
    found = endpoint.classification
    if found is not None and found.is_do_not_touch:
        return NEVER_CONNECT
    if rules.allow_connect:
        return None
    if (
        found is not None
        and found.is_connect_safe
        and found.confidence is Confidence.HIGH
        and is_fresh(endpoint, rules.max_inventory_age_s)
    ):
        return None
    if found is not None and not is_fresh(endpoint, rules.max_inventory_age_s):
        return f"{NO_RAW} ({STALE})"
    return NO_RAW


def _probes(
    endpoints: list[Endpoint],
    sources: Sequence[VantageSource],
    rules: Rules,
    canaries: dict[str, int],
) -> tuple[list[PlannedProbe], dict[tuple[str, str], int]]:
    probes: list[PlannedProbe] = []
    canary_ports: dict[tuple[str, str], int] = {}
    by_family: dict[Family, list[str]] = {Family.IPV4: [], Family.IPV6: []}
    for source in sources:
        by_family[_family(source.address)].append(source.address)
    for index, endpoint in enumerate(endpoints):
        verdict = None if rules.is_raw else connect_verdict(endpoint, rules)
        method = Method.SYN if rules.is_raw else (Method.CONNECT if verdict is None else Method.NONE)
        for address in by_family[endpoint.family]:
            spec = ProbeSpec(address, endpoint.address, endpoint.port)
            probes.append(PlannedProbe(index, spec, method, verdict))
            if rules.is_raw:
                canary_ports.setdefault(
                    (address, endpoint.address), canaries.get(endpoint.address, CLOSED_CANARY_PORT)
                )
    return probes, canary_ports


def handshake_for(endpoint: Endpoint, signatures: Sequence[Signature], max_age_s: float) -> str | None:
    """The read-only handshake this endpoint may receive once it is found open, or None."""
    found = endpoint.classification
    if found is not None:
        if found.handshake is None or found.is_do_not_touch:
            return None
        if not is_fresh(endpoint, max_age_s):
            return None
        if found.confidence is Confidence.HIGH:
            return found.handshake
        signature = next((s for s in signatures if s.id == found.signature), None)
        if signature is not None and endpoint.port in signature.default_ports:
            return found.handshake  # a candidate on the service's default port
        return None
    for signature in signatures:
        if signature.handshake and endpoint.port in signature.default_ports:
            return signature.handshake
    return None
