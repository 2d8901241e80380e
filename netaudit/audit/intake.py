"""Inventories are untrusted input: a compromised node can write anything into its own
(DESIGN.md §5). Before an inventory shapes a scan:

- a listener bound to a specific address that is none of its namespace's interface
  addresses is dropped, with a note naming the node (it would aim us at someone else);
- how a listener may be touched (``handshake``, ``connect_safe``, ``do_not_touch``) is
  derived from the signatures this run loaded, by signature, service and variant, never
  read from the document; a classification our signatures do not know is do-not-touch;
- a listener whose process shows the marks of a do-not-touch service (TensorPipe's
  threads or backlog) is never connect-safe and gets no handshake, whatever it claims;
- a ``collected_at`` in the future is not fresh (``is_fresh`` below).

Host names were validated by the reader (netaudit.inventory_json) before they got here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from netaudit import bindscope
from netaudit.models import BindScope, Classification, Inventory, Listener
from netaudit.signatures import Signature


@dataclass(frozen=True, slots=True)
class Intake:
    inventories: tuple[Inventory, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Marks:
    """What betrays a do-not-touch service locally, from the signatures' own rules."""

    threads: tuple[str, ...]
    backlogs: frozenset[int]


def _marks(signatures: Sequence[Signature]) -> _Marks:
    threads: list[str] = []
    backlogs: set[int] = set()
    for signature in signatures:
        if not signature.is_do_not_touch:
            continue
        for rule in signature.rules:
            for predicates in (rule.when, *rule.any_of):
                threads += predicates.threads or ()
                backlogs |= {b for b in predicates.backlog or () if isinstance(b, int)}
            threads += rule.limit_by_threads or ()
    return _Marks(tuple(dict.fromkeys(threads)), frozenset(backlogs))


def _admits_do_not_touch(listener: Listener, marks: _Marks) -> bool:
    if listener.backlog is not None and listener.backlog in marks.backlogs:
        return True
    process = listener.process
    if process is None:
        return False
    return any(fnmatchcase(name, glob) for name, _count in process.threads for glob in marks.threads)


def derived(
    found: Classification, listener: Listener, by_id: dict[str, Signature], marks: _Marks
) -> tuple[Classification, str | None]:
    """The classification with its handling taken from our signatures; and a note when the
    document's claim was not ours."""
    signature = by_id.get(found.signature)
    variants = {rule.variant for rule in signature.rules} if signature else set()
    if (
        signature is None
        or signature.service != found.service
        or (found.variant is not None and found.variant not in variants)
    ):
        untouchable = replace(found, is_do_not_touch=True, is_connect_safe=False, handshake=None)
        return untouchable, (
            f"claims {found.signature}/{found.service}/{found.variant}, which no loaded signature "
            "defines: treated as do-not-touch (SYN only)"
        )
    handling = replace(
        found,
        risk=signature.risk,
        is_do_not_touch=signature.is_do_not_touch,
        is_connect_safe=signature.is_connect_safe and not signature.is_do_not_touch,
        handshake=signature.handshake,
    )
    if not signature.is_do_not_touch and _admits_do_not_touch(listener, marks):
        handling = replace(handling, is_connect_safe=False, handshake=None)
        return handling, (
            f"{found.service} in a process with the marks of a do-not-touch service "
            "(TensorPipe threads or backlog): SYN only"
        )
    return handling, None


def _is_node_address(listener: Listener, own: dict[int, set[str]]) -> bool:
    scope = bindscope.scope_of(listener.family, listener.address, listener.v6only, False)
    if scope is not BindScope.SPECIFIC:
        return True  # wildcards answer on the namespace's own addresses; loopback is never scanned
    return listener.address in own.get(listener.netns, set())


def admit(inventories: Sequence[Inventory], signatures: Sequence[Signature]) -> Intake:
    by_id = {signature.id: signature for signature in signatures}
    marks = _marks(signatures)
    notes: list[str] = []
    admitted = []
    for inventory in inventories:
        own = {ns.inode: {item.address for item in ns.interfaces} for ns in inventory.namespaces}
        listeners = []
        dropped: list[str] = []
        changed: dict[str, int] = {}
        for listener in inventory.listeners:
            if not _is_node_address(listener, own):
                dropped.append(listener.endpoint)
                continue
            found = listener.classification
            if found is None:
                listeners.append(listener)
                continue
            handling, note = derived(found, listener, by_id, marks)
            if note is not None:
                changed[note] = changed.get(note, 0) + 1
            listeners.append(replace(listener, classification=handling))
        if dropped:
            shown = ", ".join(sorted(dropped)[:4]) + (
                f" and {len(dropped) - 4} more" if len(dropped) > 4 else ""
            )
            notes.append(
                f"{inventory.host}: {len(dropped)} listener(s) bound to an address that is none of "
                f"that node's interfaces were dropped ({shown})"
            )
        notes += [f"{inventory.host}: {count} listener(s) {note}" for note, count in sorted(changed.items())]
        admitted.append(replace(inventory, listeners=tuple(listeners)))
    return Intake(tuple(admitted), tuple(notes))


CLOCK_SKEW_S = 5.0  # NTP keeps a cluster within milliseconds; a node this far ahead is not


def is_fresh(age_s: float | None, max_age_s: float) -> bool:
    """Fresh: collected at most ``max_age_s`` ago, and not in the future beyond the clock skew
    of a healthy cluster (a forged timestamp would otherwise keep a stale inventory fresh
    forever)."""
    return age_s is not None and -CLOCK_SKEW_S <= age_s <= max_age_s
