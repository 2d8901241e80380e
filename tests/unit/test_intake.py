"""Inventories are untrusted: what the intake keeps, drops and re-derives before a scan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netaudit import signatures
from netaudit.audit import intake
from netaudit.models import Classification, Confidence, Family, Inventory, Listener, Severity
from tests.cli.inventories import node

LOADED = signatures.load()


def store_of(inventory: Inventory) -> Listener:
    return next(item for item in inventory.listeners if item.port == 29500)


def with_listeners(inventory: Inventory, *listeners: Listener) -> Inventory:
    return replace(inventory, listeners=listeners)


def test_a_specific_bind_on_another_nodes_address_is_dropped_with_a_note() -> None:
    node1 = node("node01", 1)
    foreign = replace(store_of(node1), family=Family.IPV4, address="198.18.0.2", port=39449, v6only=None)
    own = replace(foreign, address="198.18.0.1", port=39450)
    got = intake.admit([with_listeners(node1, foreign, own)], LOADED)
    assert [item.port for item in got.inventories[0].listeners] == [39450]
    assert got.notes == (
        "node01: 1 listener(s) bound to an address that is none of that node's interfaces were "
        "dropped (198.18.0.2:39449)",
    )


def test_handling_comes_from_our_signatures_not_the_document() -> None:
    node1 = node("node01", 1)
    store = store_of(node1)
    lying = replace(store, classification=replace(store.classification, handshake="http-get-root",
                                                   is_do_not_touch=False, is_connect_safe=True,
                                                   risk=Severity.INFO))  # fmt: skip
    (admitted,) = intake.admit([with_listeners(node1, lying)], LOADED).inventories
    found = admitted.listeners[0].classification
    assert found is not None
    tcpstore = next(s for s in LOADED if s.id == "tcpstore")
    assert (found.handshake, found.risk, found.is_connect_safe) == (
        tcpstore.handshake, tcpstore.risk, tcpstore.is_connect_safe)  # fmt: skip
    assert found.handshake == "tcpstore-ping"


def test_a_signature_we_do_not_know_is_do_not_touch() -> None:
    node1 = node("node01", 1)
    store = store_of(node1)
    made_up = Classification("harmless-thing", "harmless-thing", None, Confidence.HIGH, (), Severity.INFO,
                             False, True, "tcpstore-ping")  # fmt: skip
    got = intake.admit([with_listeners(node1, replace(store, classification=made_up))], LOADED)
    found = got.inventories[0].listeners[0].classification
    assert (
        found is not None and found.is_do_not_touch and not found.is_connect_safe and found.handshake is None
    )
    assert "no loaded signature defines" in got.notes[0]


@pytest.mark.parametrize("mark", ["backlog", "threads"])
def test_a_store_claim_with_tensorpipe_marks_is_never_touched(mark: str) -> None:
    node1 = node("node01", 1)
    store = store_of(node1)
    assert store.process is not None
    if mark == "backlog":
        disguised = replace(store, backlog=128)
    else:
        threads = (*store.process.threads, ("TP_UV_loop", 17))
        disguised = replace(store, process=replace(store.process, threads=threads))
    got = intake.admit([with_listeners(node1, disguised)], LOADED)
    found = got.inventories[0].listeners[0].classification
    assert found is not None and found.handshake is None and not found.is_connect_safe
    assert "marks of a do-not-touch service" in got.notes[0]


@pytest.mark.parametrize(
    ("age_s", "fresh"),
    [(0.0, True), (59.0, True), (61.0, False), (-1.0, True), (-3600.0, False), (None, False)],
)
def test_a_future_collection_time_is_not_fresh(age_s: float | None, fresh: bool) -> None:
    # a second ahead is clock skew; an hour ahead would keep a stale inventory fresh forever
    assert intake.is_fresh(age_s, 60.0) is fresh
