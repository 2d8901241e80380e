"""Inventory fixtures for the CLI tests: two nodes with fabric addresses of both families, a
dual-stack TCPStore, a Gloo listener on the fabric address, and sshd."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from netaudit import inventory_json
from netaudit.models import (
    Classification,
    Confidence,
    Family,
    InterfaceAddress,
    Inventory,
    Listener,
    ListenerSource,
    NetNamespace,
    Severity,
)
from tests.unit.test_inventory_json import sample

NETNS = 4026531840


def node(host: str, index: int, collected_at: datetime | None = None) -> Inventory:
    """node ``index``: 198.18.0.<index>/16 and 2001:db8:18::<index>/48 on the fabric."""
    base = sample()
    store, sshd = base.listeners
    gloo = replace(
        store,
        family=Family.IPV4,
        address=f"198.18.0.{index}",
        port=40000 + index,
        inode=9,
        classification=Classification("c10d-gloo", "c10d-gloo", "pair-listener", Confidence.HIGH,
                                      ("thread gloo_tcp_loop x1",), Severity.HIGH, False, True, None),
    )  # fmt: skip
    interfaces = (
        InterfaceAddress("fabric", Family.IPV4, f"198.18.0.{index}", 16, False, False),
        InterfaceAddress("fabric", Family.IPV6, f"2001:db8:18::{index}", 48, False, False),
        InterfaceAddress("fabric", Family.IPV6, f"fe80::{index}", 64, False, True),
        InterfaceAddress("lo", Family.IPV4, "127.0.0.1", 8, True, False),
        InterfaceAddress("lo", Family.IPV6, "::1", 128, True, False),
    )
    namespace = NetNamespace(NETNS, True, (), 120, ListenerSource.NETLINK, interfaces)
    listeners: tuple[Listener, ...] = (store, gloo, sshd)
    return replace(
        base,
        host=host,
        collected_at=collected_at or datetime.now(UTC),
        namespaces=(namespace,),
        listeners=listeners,
        gaps=(),
    )


def write(path: Path, inventory: Inventory) -> Path:
    path.write_text(json.dumps(inventory_json.to_json(inventory)))
    return path


def two_nodes(directory: Path) -> tuple[Path, Path]:
    return (
        write(directory / "node01.json", node("node01", 1)),
        write(directory / "node02.json", node("node02", 2)),
    )
