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

``Sharing.compact`` keeps a read inventory small: schema 1 gives every listener its own copy
of its process (command line, environment, threads, job), and a 4,096-node cluster's copies
took more than a gigabyte. Equal values become one object; nothing is dropped or changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from netaudit import bindscope
from netaudit.models import BindScope, Classification, Inventory, Listener, ProcessInfo
from netaudit.signatures import Signature

_T = TypeVar("_T")


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
    """The inventories as the scan may use them. A listener whose document already says
    what our signatures say is kept as it is, not copied (the honest case, and the common
    one); equal claims are judged once."""
    by_id = {signature.id: signature for signature in signatures}
    marks = _marks(signatures)
    notes: list[str] = []
    admitted = []
    marked: dict[tuple[tuple[str, int], ...], bool] = {}
    for inventory in inventories:
        own = {ns.inode: {item.address for item in ns.interfaces} for ns in inventory.namespaces}
        listeners = []
        dropped: list[str] = []
        changed: dict[str, int] = {}
        judged: dict[tuple[int, bool], tuple[Classification, Classification, str | None]] = {}
        for listener in inventory.listeners:
            if not _is_node_address(listener, own):
                dropped.append(listener.endpoint)
                continue
            found = listener.classification
            if found is None:
                listeners.append(listener)
                continue
            is_marked = _is_marked(listener, marks, marked)
            key = (id(found), is_marked)
            verdict = judged.get(key)
            if verdict is None:
                handling, note = derived(found, listener, by_id, marks)
                # `found` is kept in the entry, so its id names it for the whole loop.
                verdict = judged[key] = (found, found if handling == found else handling, note)
            _found, handling, note = verdict
            if note is not None:
                changed[note] = changed.get(note, 0) + 1
            listeners.append(listener if handling is found else replace(listener, classification=handling))
        if dropped:
            shown = ", ".join(sorted(dropped)[:4]) + (
                f" and {len(dropped) - 4} more" if len(dropped) > 4 else ""
            )
            notes.append(
                f"{inventory.host}: {len(dropped)} listener(s) bound to an address that is none of "
                f"that node's interfaces were dropped ({shown})"
            )
        notes += [f"{inventory.host}: {count} listener(s) {note}" for note, count in sorted(changed.items())]
        is_same = len(listeners) == len(inventory.listeners) and all(
            mine is theirs for mine, theirs in zip(listeners, inventory.listeners, strict=True)
        )
        admitted.append(inventory if is_same else replace(inventory, listeners=tuple(listeners)))
    return Intake(tuple(admitted), tuple(notes))


def _is_marked(listener: Listener, marks: _Marks, seen: dict[tuple[tuple[str, int], ...], bool]) -> bool:
    """``_admits_do_not_touch``, its thread globs matched once per distinct set of threads
    (a cluster's ranks have a handful)."""
    process = listener.process
    if process is None or (listener.backlog is not None and listener.backlog in marks.backlogs):
        return _admits_do_not_touch(listener, marks)
    found = seen.get(process.threads)
    if found is None:
        found = seen[process.threads] = _admits_do_not_touch(listener, marks)
    return found


class Sharing:
    """Equal values read from many inventories, kept once (see the module's docstring).

    Values are matched by equality, never by a key such as the pid: two listeners that
    claim one pid with different facts (a forged inventory) keep their own facts.
    """

    def __init__(self) -> None:
        self._seen: dict[object, object] = {}

    def one(self, value: _T) -> _T:
        """``value``, or the equal value met first."""
        return self._seen.setdefault(value, value)  # type: ignore[return-value]

    def _process(self, process: ProcessInfo) -> ProcessInfo:
        keep: Any = self._seen.setdefault  # the hot loop: no method call per value
        environment = tuple([keep(pair, pair) for pair in process.environment])
        threads = tuple([keep(pair, pair) for pair in process.threads])
        name, user, cgroup = process.name, process.user, process.cgroup
        shared = ProcessInfo(
            pid=process.pid,
            ppid=process.ppid,
            name=keep(name, name),
            uid=process.uid,
            user=user if user is None else keep(user, user),
            cmdline=keep(process.cmdline, process.cmdline),
            netns=process.netns,
            environment=keep(environment, environment),
            threads=keep(threads, threads),
            libraries=keep(process.libraries, process.libraries),
            cgroup=cgroup if cgroup is None else keep(cgroup, cgroup),
            job=keep(process.job, process.job),
            is_complete=process.is_complete,
        )
        return keep(shared, shared)  # type: ignore[no-any-return]

    def compact(self, inventory: Inventory) -> Inventory:
        """The same inventory, its listeners' equal parts shared. A listener whose parts are
        already the shared ones (a reader that shares them itself) is kept as it is."""
        keep: Any = self._seen.setdefault
        processes: dict[int, ProcessInfo] = {}
        copies: dict[ProcessInfo, ProcessInfo] = {}
        parts: dict[int, Any] = {}  # the inventory holds its parts: their ids stay theirs
        listeners = []
        for listener in inventory.listeners:
            process = listener.process
            if process is not None:
                shared = processes.get(id(process))
                if shared is None:
                    # Schema 1 gives each listener its own copy: an equal copy met before in
                    # this inventory is found by value, without building it again.
                    shared = copies.get(process)
                    if shared is None:
                        shared = copies[process] = self._process(process)
                    processes[id(process)] = shared
                process = shared
            found, hint = listener.classification, listener.exposure
            address, pids = listener.address, listener.pids
            # A part the reader already shares is looked up by identity, not hashed again.
            if found is not None:
                key = id(found)
                if key not in parts:
                    parts[key] = keep(found, found)
                found = parts[key]
            if hint is not None:
                key = id(hint)
                if key not in parts:
                    parts[key] = keep(hint, hint)
                hint = parts[key]
            address, pids = keep(address, address), keep(pids, pids)
            if (
                process is listener.process
                and found is listener.classification
                and hint is listener.exposure
                and address is listener.address
                and pids is listener.pids
            ):
                listeners.append(listener)
                continue
            listeners.append(
                Listener(
                    netns=listener.netns,
                    family=listener.family,
                    address=address,
                    port=listener.port,
                    inode=listener.inode,
                    source=listener.source,
                    v6only=listener.v6only,
                    backlog=listener.backlog,
                    uid=listener.uid,
                    pid=listener.pid,
                    pids=pids,
                    process=process,
                    classification=found,
                    exposure=hint,
                )
            )
        return replace(inventory, listeners=tuple(listeners))


CLOCK_SKEW_S = 5.0  # NTP keeps a cluster within milliseconds; a node this far ahead is not


def is_fresh(age_s: float | None, max_age_s: float) -> bool:
    """Fresh: collected at most ``max_age_s`` ago, and not in the future beyond the clock skew
    of a healthy cluster (a forged timestamp would otherwise keep a stale inventory fresh
    forever)."""
    return age_s is not None and -CLOCK_SKEW_S <= age_s <= max_age_s
