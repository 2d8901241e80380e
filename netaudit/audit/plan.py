"""The scan plan: which endpoints (address x port) to try, from which sources, how, and which
may receive a read-only handshake. Pure: builds data, sends nothing (`--dry-run` prints it).

Endpoints come from the admitted inventories (every node address in scope of the listener's
namespace that may answer: all of them for a wildcard bind, the bound address for a specific
one, which routing may still deliver through any interface) and, for addresses no inventory
covers, the default ports (netaudit.audit.scope decides which). The rules of DESIGN.md §5:
- without raw sockets, connect() only to high-confidence connect-safe listeners of a fresh
  inventory (a do-not-touch one never, whatever --allow-connect says);
- a handshake only where its signature has one, on a fresh high-confidence classification
  or a candidate on the signature's default port;
- an endpoint no source of its family can try is planned as not tested, with the reason;
- two listeners claiming one address and port: the stricter handling wins, and a note says so.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from netaudit import bindscope
from netaudit.audit import policy
from netaudit.audit.intake import is_fresh
from netaudit.audit.scope import Scope, node_addresses
from netaudit.audit.targets import TargetError
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

NO_RAW = (
    "not tested: no raw-socket privilege (CAP_NET_RAW), and connect() is used only on "
    "high-confidence TCPStore/Gloo/NCCL listeners of a fresh inventory (--allow-connect widens it)"
)
NEVER_CONNECT = "not tested: do-not-touch listener (TensorPipe), never connected to (only a SYN is safe)"
STALE = "inventory older than --max-inventory-age, or dated in the future: ports may have been reused"


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
    untestable: endpoint index -> why no source of this host can try it at all.
    local_addresses: this host's addresses: probes to them never leave the host.
    """

    endpoints: tuple[Endpoint, ...]
    probes: tuple[PlannedProbe, ...]
    canary_ports: dict[tuple[str, str], int]
    handshakes: dict[int, str]
    untestable: dict[int, str]
    local_addresses: frozenset[str]
    notes: tuple[str, ...]


def _family(address: str) -> Family:
    return Family.IPV6 if ":" in address else Family.IPV4  # canonical IP text: no parsing


_FAMILIES = {
    BindScope.DUAL_STACK: (Family.IPV4, Family.IPV6),
    BindScope.WILDCARD_V4: (Family.IPV4,),
    BindScope.WILDCARD_V6: (Family.IPV6,),
}


def answering_addresses(listener: Listener, namespace_addresses: Sequence[str]) -> list[str]:
    """Addresses of the listener's namespace that may answer it (never loopback)."""
    scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
    if scope is BindScope.SPECIFIC:
        return [listener.address] if listener.address in namespace_addresses else []
    families = _FAMILIES.get(scope)
    if families is None:
        return []
    return [address for address in namespace_addresses if _family(address) in families]


def _canary_candidates(inventory: Inventory, by_ns: dict[int, list[str]]) -> dict[str, int]:
    """address -> a port of a non-PyTorch listener answering there (sshd, say)."""
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

    intended: tuple[policy.Network, ...]
    default_ports: tuple[int, ...]
    max_inventory_age_s: float
    is_raw: bool
    allow_connect: bool
    max_endpoints: int
    trust_scope: str = "subnet"


# Any port answers the canary's purpose if it is closed: the RST proves the path. Port 1
# (tcpmux) is unassigned in practice.
CLOSED_CANARY_PORT = 1


def build(
    inventories: Sequence[Inventory],
    scope: Scope,
    sources: Sequence[VantageSource],
    signatures: Sequence[Signature],
    rules: Rules,
    now: datetime,
    local_addresses: frozenset[str],
) -> Plan:
    notes: list[str] = list(scope.notes)
    endpoints: list[Endpoint] = []
    canaries: dict[str, int] = {}
    outside: dict[str, bool] = {}  # one answer per address: a /22 x 16 ports asks 16,384 times

    def is_outside(address: str) -> bool:
        if address not in outside:
            outside[address] = not policy.is_inside(address, rules.intended)
        return outside[address]

    for inventory in inventories:
        age_s = (now - inventory.collected_at).total_seconds()
        by_ns = node_addresses(inventory)
        for address, port in _canary_candidates(inventory, by_ns).items():
            canaries.setdefault(address, port)
        host = inventory.host
        # Every listener of a namespace answers on the same few addresses: which of them
        # are this node's and in scope is asked once per address, not once per listener.
        kept: dict[tuple[int, str], bool] = {}
        for listener in inventory.listeners:
            if listener.classification is None:
                continue
            netns = listener.netns
            for address in answering_addresses(listener, by_ns.get(netns, [])):
                is_kept = kept.get((netns, address))
                if is_kept is None:
                    is_kept = kept[(netns, address)] = scope.owners.get(address) == (
                        host, netns) and scope.includes(host, address)  # fmt: skip
                if is_kept:
                    endpoints.append(
                        Endpoint(host, address, _family(address), listener.port, listener, age_s,
                                 is_outside(address))
                    )  # fmt: skip
    planned = len(endpoints) + len(scope.sweep) * len(rules.default_ports)
    if planned > rules.max_endpoints:
        raise TargetError(
            f"this run would plan {planned:,} endpoints ({len(endpoints):,} from inventories, "
            f"{len(scope.sweep):,} swept addresses x {len(rules.default_ports)} ports), more than "
            f"scan.max_endpoints = {rules.max_endpoints:,}: narrow the targets or the ports"
        )
    for sweep_host, address in scope.sweep:
        family, is_out = _family(address), is_outside(address)
        endpoints.extend(
            Endpoint(sweep_host, address, family, port, None, None, is_out) for port in rules.default_ports
        )
    endpoints, conflicts = _deduplicated(endpoints)
    notes += conflicts
    probes, canary_ports, untestable = _probes(endpoints, sources, rules, canaries)
    plain: dict[int, str | None] = {}  # a swept address's port -> its handshake: one answer per port
    handshakes: dict[int, str] = {}
    for index, endpoint in enumerate(endpoints):
        if endpoint.listener is None:
            if endpoint.port not in plain:
                plain[endpoint.port] = handshake_for(endpoint, signatures, rules.max_inventory_age_s)
            name = plain[endpoint.port]
        else:
            name = handshake_for(endpoint, signatures, rules.max_inventory_age_s)
        if name is not None:
            handshakes[index] = name
    return Plan(
        endpoints=tuple(endpoints),
        probes=tuple(probes),
        canary_ports=canary_ports,
        handshakes=handshakes,
        untestable=untestable,
        local_addresses=local_addresses,
        notes=tuple(notes),
    )


def strictness(endpoint: Endpoint) -> int:
    """How carefully an endpoint must be handled: higher is stricter."""
    found = endpoint.classification
    if found is None:
        return 1  # a default port of a swept address: a SYN, a handshake only if confirmed
    if found.is_do_not_touch:
        return 3
    if not found.is_connect_safe or found.handshake is None:
        return 2
    return 0


def _deduplicated(endpoints: list[Endpoint]) -> tuple[list[Endpoint], list[str]]:
    seen: dict[tuple[str, int], Endpoint] = {}
    conflicts: list[str] = []
    for endpoint in endpoints:
        key = (endpoint.address, endpoint.port)
        kept = seen.get(key)
        if kept is None:
            seen[key] = endpoint
            continue
        if kept.classification == endpoint.classification:
            continue
        stricter = endpoint if strictness(endpoint) > strictness(kept) else kept
        seen[key] = stricter
        found = stricter.classification
        conflicts.append(
            f"{endpoint.text} is claimed by two listeners ({_claim(kept)}; {_claim(endpoint)}): "
            f"handled as {found.service if found else 'an unknown service'}, the stricter"
        )
    packed: dict[str, bytes] = {}  # one inet_pton per address, not per port

    def order(endpoint: Endpoint) -> tuple[str, Family, bytes, int]:
        address = endpoint.address
        key = packed.get(address)
        if key is None:
            key = packed[address] = _packed(address)
        return (endpoint.host, endpoint.family, key, endpoint.port)

    ordered = sorted(seen.values(), key=order)
    return ordered, conflicts


def _claim(endpoint: Endpoint) -> str:
    found = endpoint.classification
    return f"{endpoint.host}: {found.service}/{found.variant}" if found else f"{endpoint.host}: default port"


def _packed(address: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def is_fresh_endpoint(endpoint: Endpoint, max_age_s: float) -> bool:
    return is_fresh(endpoint.inventory_age_s, max_age_s)


def connect_verdict(endpoint: Endpoint, rules: Rules) -> str | None:
    """None if connect() is allowed on this endpoint, else why not."""
    found = endpoint.classification
    if found is not None and found.is_do_not_touch:
        return NEVER_CONNECT
    if rules.allow_connect:
        return None
    fresh = is_fresh_endpoint(endpoint, rules.max_inventory_age_s)
    if found is not None and found.is_connect_safe and found.confidence is Confidence.HIGH and fresh:
        return None
    if found is not None and not fresh:
        return f"{NO_RAW} ({STALE})"
    return NO_RAW


def _probes(
    endpoints: list[Endpoint],
    sources: Sequence[VantageSource],
    rules: Rules,
    canaries: dict[str, int],
) -> tuple[list[PlannedProbe], dict[tuple[str, str], int], dict[int, str]]:
    probes: list[PlannedProbe] = []
    canary_ports: dict[tuple[str, str], int] = {}
    untestable: dict[int, str] = {}
    by_family: dict[Family, list[str]] = {Family.IPV4: [], Family.IPV6: []}
    for source in sources:
        by_family[_family(source.address)].append(source.address)
    for index, endpoint in enumerate(endpoints):
        family_sources = by_family[endpoint.family]
        if not family_sources:
            untestable[index] = f"no {_FAMILY_NAMES[endpoint.family]} source address on this host"
            continue
        verdict = None if rules.is_raw else connect_verdict(endpoint, rules)
        method = Method.SYN if rules.is_raw else (Method.CONNECT if verdict is None else Method.NONE)
        for address in family_sources:
            spec = ProbeSpec(address, endpoint.address, endpoint.port)
            probes.append(PlannedProbe(index, spec, method, verdict))
            if rules.is_raw:
                canary_ports.setdefault(
                    (address, endpoint.address), canaries.get(endpoint.address, CLOSED_CANARY_PORT)
                )
    return probes, canary_ports, untestable


_FAMILY_NAMES = {Family.IPV4: "IPv4", Family.IPV6: "IPv6"}


def handshake_for(endpoint: Endpoint, signatures: Sequence[Signature], max_age_s: float) -> str | None:
    """The read-only handshake this endpoint may receive once it is found open, or None.
    The classification's handling was derived from our signatures (netaudit.audit.intake)."""
    found = endpoint.classification
    if found is not None:
        if found.handshake is None or found.is_do_not_touch:
            return None
        if not is_fresh_endpoint(endpoint, max_age_s):
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
