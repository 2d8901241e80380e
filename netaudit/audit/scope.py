"""What a scan looks at: scope and targets are two things (DESIGN.md §5).

- With inventories, the scope is their own node addresses: every unicast address, IPv4 and
  IPv6, that is neither loopback nor link-local, of each namespace that holds a listener,
  attributed to exactly one node. An address on several nodes (a docker0 bridge) is
  attributed to none.
- Targets restrict that scope. A CIDR is then a filter and is never expanded; a host name
  that an inventory carries brings in all of that node's addresses, both families.
- Addresses that no inventory covers (named addresses and hosts, or the CIDRs of a run with
  no inventory at all) are swept with the default ports, and ``max_targets`` bounds that
  sweep alone, its error naming the real total.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from netaudit.audit.targets import Target, TargetError, TargetKind, is_evidence_address
from netaudit.models import Family, Inventory, ScopeSummary


@dataclass(frozen=True, slots=True)
class Scope:
    """Attributes:
    owners: node address -> (host, netns inode) of the one node it belongs to.
    ambiguous: address -> the hosts that all claim it.
    sweep: (host label, address) pairs without an inventory, tried on the default ports.
    unresolved: named targets that did not resolve.
    """

    owners: dict[str, tuple[str, int]]
    ambiguous: dict[str, tuple[str, ...]]
    sweep: tuple[tuple[str, str], ...]
    unresolved: tuple[Target, ...]
    summary: ScopeSummary
    notes: tuple[str, ...]
    filters: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None
    named_hosts: frozenset[str]

    def includes(self, host: str, address: str) -> bool:
        """Whether a node address passes the targets' filter (always, without targets)."""
        if self.filters is None:
            return True
        if host in self.named_hosts:
            return True
        parsed = ipaddress.ip_address(address)
        return any(parsed.version == net.version and parsed in net for net in self.filters)


def node_addresses(inventory: Inventory) -> dict[int, list[str]]:
    """netns inode -> its addresses that may be evidence (unicast, not loopback/link-local)."""
    result: dict[int, list[str]] = {}
    for namespace in inventory.namespaces:
        kept = []
        for item in namespace.interfaces:
            if item.is_loopback or item.is_link_local:
                continue
            if is_evidence_address(ipaddress.ip_address(item.address)):
                kept.append(item.address)
        result[namespace.inode] = kept
    return result


def _family(address: str) -> Family:
    return Family.IPV6 if ":" in address else Family.IPV4


def derive(
    inventories: Sequence[Inventory],
    targets: Sequence[Target],
    max_targets: int,
    expand_networks: bool,
) -> Scope:
    """The scope of a run. ``expand_networks``: CIDR targets are swept (a run with no
    inventory and no fan-out); otherwise they only filter."""
    places: dict[str, set[tuple[str, int]]] = {}
    listening: set[tuple[str, int]] = set()
    for inventory in inventories:
        listening.update((inventory.host, listener.netns) for listener in inventory.listeners)
        for inode, addresses in node_addresses(inventory).items():
            for address in addresses:
                places.setdefault(address, set()).add((inventory.host, inode))
    owners = {address: next(iter(where)) for address, where in places.items() if len(where) == 1}
    ambiguous = {
        address: tuple(sorted({host for host, _inode in where}))
        for address, where in places.items()
        if len(where) > 1
    }
    notes = [
        f"{address} appears on {', '.join(hosts)} (a bridge such as docker0?): "
        "attributed to none, not scanned"
        for address, hosts in sorted(ambiguous.items())
    ]
    filters: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    named: set[str] = set()
    sweep: list[tuple[str, str]] = []
    to_expand: list[Target] = []
    for target in targets:
        if target.is_inventory_host:
            named.add(target.host)
        elif target.kind is TargetKind.NETWORK and target.network is not None:
            filters.append(target.network)
            if expand_networks:
                to_expand.append(target)
        else:
            for address in target.addresses:
                filters.append(ipaddress.ip_network(address))
                if address not in places:
                    sweep.append((target.host, address))
    total = len(sweep) + sum(t.network.num_addresses for t in to_expand if t.network is not None)
    if total > max_targets:
        shown = ", ".join(t.host for t in to_expand[:3]) or f"{len(sweep)} named addresses"
        raise TargetError(
            f"the targets hold {total:,} addresses to sweep ({shown}), more than scan.max_targets = "
            f"{max_targets:,}: give inventories (their CIDRs then only filter), or narrow the targets"
        )
    for target in to_expand:
        assert target.network is not None  # noqa: S101 - set for every NETWORK target
        # Every address, network and broadcast included, as nmap sweeps a CIDR. Each is its
        # own host label: a CIDR is not a host name, and labels name files and baseline keys.
        sweep.extend((str(address), str(address)) for address in target.network if str(address) not in places)
    sweep = list(dict.fromkeys(sweep))
    scope_filters = tuple(filters) if (filters or named) else None
    named_hosts = frozenset(named)
    in_scope: set[str] = set()
    nodes: set[str] = set()
    filtered_out: list[str] = []
    for address, (host, inode) in owners.items():
        if (host, inode) not in listening:
            continue
        if scope_filters is None or host in named_hosts or _in(address, scope_filters):
            in_scope.add(address)
            nodes.add(host)
        else:
            filtered_out.append(address)
    if filtered_out:
        shown = ", ".join(sorted(filtered_out)[:6])
        more = f" and {len(filtered_out) - 6} more" if len(filtered_out) > 6 else ""
        notes.append(f"inventory addresses outside the targets were not scanned: {shown}{more}")
    derived = (
        "inventories+targets" if inventories and targets else "inventories" if inventories else "targets"
    )
    if targets and inventories and any(t.kind is TargetKind.NETWORK for t in targets) and not expand_networks:
        notes.append(
            "CIDR targets filter the inventories' addresses and are not swept: hosts without an "
            "inventory are swept only when named"
        )
    summary = ScopeSummary(
        derived_from=derived,
        nodes=len(nodes),
        addresses_ipv4=sum(1 for a in in_scope if _family(a) is Family.IPV4),
        addresses_ipv6=sum(1 for a in in_scope if _family(a) is Family.IPV6),
        filters=tuple(t.host for t in targets if not t.error),
        swept_addresses=len(sweep),
    )
    return Scope(
        owners=owners,
        ambiguous=ambiguous,
        sweep=tuple(sweep),
        unresolved=tuple(t for t in targets if t.error),
        summary=summary,
        notes=tuple(notes),
        filters=scope_filters,
        named_hosts=named_hosts,
    )


def _in(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    parsed = ipaddress.ip_address(address)
    return any(parsed.version == net.version and parsed in net for net in networks)
