"""Scan targets as the admin names them: addresses, CIDRs, host names and hostlists.

The targets are also the scope: an inventory is untrusted input (it comes from the node it
describes), so its addresses are scanned only where they fall inside what the config or the
command line named (DESIGN.md §5). A name that does not resolve is that host's "incomplete",
not a usage error; a malformed target or a network larger than the limits is.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from netaudit import hostlist
from netaudit.typedread import InputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_RESOLVE_WORKERS = 16


class TargetError(InputError):
    """A target that is malformed or too large: one line, exit 2, nothing probed."""


@dataclass(frozen=True, slots=True)
class Target:
    """One named host or address. ``error`` says why it has no address (does not resolve)."""

    host: str
    addresses: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TargetSet:
    """Attributes:
    targets: every host or address named, in the order given.
    networks: the scope; inventory addresses outside it are never probed.
    """

    targets: tuple[Target, ...]
    networks: tuple[Network, ...]

    def contains(self, address: str) -> bool:
        parsed = ipaddress.ip_address(address)
        return any(parsed.version == net.version and parsed in net for net in self.networks)

    @property
    def unresolved(self) -> tuple[Target, ...]:
        return tuple(target for target in self.targets if target.error)


def _resolve(name: str) -> Target:
    try:
        answers = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        return Target(name, (), f"{name}: does not resolve ({error})")
    addresses = sorted(
        {str(ipaddress.ip_address(str(answer[4][0]).split("%")[0])) for answer in answers},
        key=lambda a: (ipaddress.ip_address(a).version, int(ipaddress.ip_address(a))),
    )
    return Target(name, tuple(addresses))


def _network_hosts(network: Network) -> list[str]:
    # Every address, network and broadcast included, as nmap scans a CIDR: a listener can
    # sit on any address of a /32-per-host fabric, and the verdicts must match.
    return [str(address) for address in network]


def parse(texts: Sequence[str], max_targets: int) -> TargetSet:
    """Expand and resolve ``texts``. Raises TargetError for a malformed or oversized one."""
    fixed: list[tuple[int, Target]] = []
    names: list[tuple[int, str]] = []
    networks: list[Network] = []
    total = 0
    for index, raw in enumerate(texts):
        text = raw.strip()
        if not text:
            raise TargetError("an empty target")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            network = None
        if network is not None:
            total += network.num_addresses
            if total > max_targets:
                raise TargetError(
                    f"{text}: {network.num_addresses} addresses, more than the limit of "
                    f"{max_targets} (scan.max_targets)"
                )
            networks.append(network)
            label = str(network.network_address) if network.num_addresses == 1 else str(network)
            fixed.append((index, Target(label, tuple(_network_hosts(network)))))
            continue
        expanded = hostlist.expand(text, max_targets) if "[" in text else [text]
        for name in expanded:
            if not _HOSTNAME.match(name):
                raise TargetError(f"{name!r} is not a host name, address, CIDR or hostlist")
            names.append((index, name))
        total += len(expanded)
        if total > max_targets:
            raise TargetError(f"{text}: more than the limit of {max_targets} targets (scan.max_targets)")
    resolved: list[tuple[int, Target]] = []
    if names:
        with ThreadPoolExecutor(max_workers=min(_RESOLVE_WORKERS, len(names))) as pool:
            results = list(pool.map(_resolve, [name for _index, name in names]))
        resolved = [(index, target) for (index, _name), target in zip(names, results, strict=True)]
        for _index, target in resolved:
            for address in target.addresses:
                networks.append(ipaddress.ip_network(address))
    ordered = [target for _index, target in sorted(fixed + resolved, key=lambda item: item[0])]
    return TargetSet(tuple(ordered), tuple(networks))
