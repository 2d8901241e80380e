"""The scan's settings: one home for their defaults and bounds.

The config file (``[scan]``) and the flags (``--rate`` ...) are read against the same table,
so a value the config refuses is refused on the command line too (``--timeout nan`` or
``inf`` would make a filtered port never expire). Flags override the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from netaudit.models import Severity
from netaudit.typedread import InputError, Table

TRUST_SCOPES = frozenset({"subnet", "job"})
# The default ports tried on an address that no inventory covers: TCPStore (MASTER_PORT and
# the c10d rendezvous, torch/distributed/run.py and c10d_rendezvous_backend.py), the c10d debug
# frontend (torch/distributed/debug), NCCL's RAS client (nccl src/ras/ras_internal.h) and the
# TCPStore at the master port of Kubernetes PyTorchJobs (training operator and Volcano: 23456;
# Kubeflow Trainer uses 29500). Every port multiplies the swept addresses: services that are
# not PyTorch's own (Ray 6379/10001/8265, Jupyter 8888 ...) are confirmed only with --port.
DEFAULT_PORTS = (29500, 29400, 25999, 28028, 23456)


@dataclass(frozen=True, slots=True)
class Bound:
    """A numeric setting: its flag, its inclusive range, and whether it is an integer."""

    flag: str
    low: float
    high: float
    is_integer: bool


# DESIGN.md §5 "Bounded, with defaults safe on a production cluster".
BOUNDS: dict[str, Bound] = {
    "rate_per_s": Bound("--rate", 1, 10_000_000, False),
    "in_flight_per_host": Bound("--in-flight", 1, 65536, True),
    "timeout_s": Bound("--timeout", 0.001, 600, False),
    "retries": Bound("--retries", 0, 10, True),
    "max_inventory_age_s": Bound("--max-inventory-age", 0, 365 * 86400, False),
    "max_targets": Bound("--max-targets", 1, 16_777_216, True),
    "max_endpoints": Bound("--max-endpoints", 1, 16_777_216, True),
}


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Attributes:
    targets: restrict the scope (CIDRs filter the inventories' addresses) and name hosts
        without an inventory to sweep.
    ports: tried on addresses that no inventory covers.
    max_targets: the most addresses swept without an inventory.
    max_endpoints: the most address x port pairs one run may plan.
    """

    targets: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    ports: tuple[int, ...] = DEFAULT_PORTS
    rate_per_s: float = 2000.0
    in_flight_per_host: int = 64
    timeout_s: float = 1.0
    retries: int = 1
    max_inventory_age_s: float = 60.0
    allow_connect: bool = False
    fail_on: Severity = Severity.HIGH
    trust_scope: str = "subnet"
    max_targets: int = 65536
    max_endpoints: int = 1_048_576


DEFAULTS = ScanSettings()


def parse_ports(texts: tuple[str, ...] | list[str], where: str) -> tuple[int, ...]:
    """``PORT`` or ``LOW-HIGH`` items, in order, without repeats."""
    ports: list[int] = []
    for text in texts:
        low, sep, high = str(text).partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise InputError(f"{where}: {text!r}: expected PORT or LOW-HIGH") from None
        if not 1 <= first <= last <= 65535:
            raise InputError(f"{where}: {text!r}: expected ports in 1..65535")
        ports.extend(range(first, last + 1))
    return tuple(dict.fromkeys(ports))


def check(name: str, value: float, where: str) -> None:
    """Refuse a value outside the setting's bounds (NaN and infinity included)."""
    bound = BOUNDS[name]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or not bound.low <= value <= bound.high:
        kind = "an integer" if bound.is_integer else "a number"
        raise InputError(f"{where}: expected {kind} in {bound.low:g}..{bound.high:g}, got {value!r}")
    if bound.is_integer and value != int(value):
        raise InputError(f"{where}: expected an integer, got {value!r}")


def from_table(table: Table | None) -> ScanSettings:
    """The ``[scan]`` table of a config file."""
    if table is None:
        return DEFAULTS
    values: dict[str, Any] = {}
    for name, bound in BOUNDS.items():
        raw = table.get(name, int) if bound.is_integer else table.get(name, float)
        if raw is not None:
            try:
                check(name, raw, table.path(name))
            except InputError as error:
                raise table.error_type(f"{table.source}: {error}") from None
            values[name] = raw
    targets = table.strings("targets", allow_empty=True)
    sources = table.strings("sources", allow_empty=True)
    ports = table.ints("ports", 1, 65535)
    ranges = table.strings("port_ranges", allow_empty=True) or ()
    try:
        extra = parse_ports(ranges, table.path("port_ranges"))
    except InputError as error:
        raise table.error_type(f"{table.source}: {error}") from None
    if ports is not None or extra:
        values["ports"] = tuple(dict.fromkeys((ports if ports is not None else DEFAULTS.ports) + extra))
    if targets is not None:
        values["targets"] = targets
    if sources is not None:
        values["sources"] = sources
    allow_connect = table.get("allow_connect", bool)
    if allow_connect is not None:
        values["allow_connect"] = allow_connect
    fail_on = table.choice("fail_on", tuple(s.value for s in Severity))
    if fail_on is not None:
        values["fail_on"] = Severity(fail_on)
    trust_scope = table.choice("trust_scope", TRUST_SCOPES)
    if trust_scope is not None:
        values["trust_scope"] = trust_scope
    table.finish()
    return replace(DEFAULTS, **values)


def with_flags(base: ScanSettings, flags: dict[str, Any]) -> ScanSettings:
    """``base`` with every flag that was given (not None) applied, checked like the config.

    ``flags`` uses the field names: ``rate_per_s``, ``ports`` (texts), ``targets`` ...
    """
    values: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        if name in BOUNDS:
            check(name, value, BOUNDS[name].flag)
            values[name] = int(value) if BOUNDS[name].is_integer else float(value)
        elif name == "ports":
            values["ports"] = tuple(dict.fromkeys(base.ports + parse_ports(value, "--port")))
        elif name == "fail_on":
            values["fail_on"] = Severity(value)
        elif name in ("targets", "sources"):
            values[name] = tuple(value)
        elif name == "allow_connect":
            values[name] = bool(value) or base.allow_connect
        elif name == "trust_scope":
            values[name] = value
        else:
            raise KeyError(name)
    return replace(base, **values)


def field_names() -> tuple[str, ...]:
    return tuple(item.name for item in fields(ScanSettings))
