"""Apply the signatures of probes/ to listeners, keeping the evidence of every match.

Rules of all signatures are tried in priority order (highest first); a listener takes the
first rule whose predicates all hold. Rules are tried per owning process, so a rule's
``limit_by_threads`` (a Gloo process has exactly one gloo_tcp_loop thread per listener)
hands out its capacity to the listeners that the higher-priority rules left over.

Process-level predicates (libraries, threads, environment, ...) are settled once per process,
so a node with thousands of unrelated listeners pays one cheap check per process, not per
rule and listener.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from netaudit import bindscope
from netaudit.models import BindScope, Classification, Family
from netaudit.procinfo import ProcessFacts, ProcessGone
from netaudit.signatures import PortSource, Predicates, Rule, Signature

_PORT_AT_END = re.compile(r"(?::|^)(\d{1,5})$")


class ListenerFacts(Protocol):
    """What classification reads of a listener: a models.Listener, or the lighter row the
    probe builds before it has everything a Listener holds (one Listener per socket at
    10,000 listeners costs 27 ms)."""

    @property
    def netns(self) -> int: ...
    @property
    def family(self) -> Family: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def backlog(self) -> int | None: ...
    @property
    def pid(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class ListenerContext:
    """What listener-level predicates need beyond the Listener itself.

    Attributes:
        scope_by_index: each listener's bind scope, by its index (a list or a mapping).
    """

    scope_by_index: Mapping[int, BindScope] | Sequence[BindScope]
    somaxconn_by_netns: Mapping[int, int | None]


@dataclass(frozen=True, slots=True)
class _Ranked:
    signature: Signature
    rule: Rule


def _ranked(signatures: Iterable[Signature]) -> list[_Ranked]:
    ranked = [_Ranked(sig, rule) for sig in signatures for rule in sig.rules]
    # Highest priority first; ties broken by signature id and rule order for determinism.
    order = {id(item.rule): index for index, item in enumerate(ranked)}
    ranked.sort(key=lambda item: (-item.rule.priority, item.signature.id, order[id(item.rule)]))
    return ranked


def port_of(value: str) -> int | None:
    """The port of ``29500``, ``host:29500`` or ``[::1]:29500``; None if there is none."""
    match = _PORT_AT_END.search(value.strip())
    if not match:
        return None
    port = int(match.group(1))
    return port if 0 < port < 65536 else None


def _argument_values(cmdline: tuple[str, ...], option: str) -> list[str]:
    values = []
    for index, arg in enumerate(cmdline):
        if arg == option and index + 1 < len(cmdline):
            values.append(cmdline[index + 1])
        elif arg.startswith(option + "="):
            values.append(arg[len(option) + 1 :])
    return values


# Process-level predicates ------------------------------------------------------------------


def _thread_matches(facts: ProcessFacts, globs: tuple[str, ...]) -> list[tuple[str, int]]:
    return [
        (name, count)
        for name, count in sorted(facts.threads.items())
        if any(fnmatchcase(name, glob) for glob in globs)
    ]


def _process_evidence(when: Predicates, facts: ProcessFacts | None, signature: Signature) -> list[str] | None:
    """Evidence strings if every process-level predicate holds, else None. Cheap checks come
    first; each fact is read from /proc at most once per run."""
    evidence: list[str] = []
    if when.owner == "unknown":
        if facts is not None:
            return None
        evidence.append("owning process not visible (another pid namespace, or no privilege)")
    elif when.owner == "known" and facts is None:
        return None
    needs_process = any(
        value is not None
        for value in (
            when.libraries,
            when.no_libraries,
            when.threads,
            when.no_threads,
            when.comm,
            when.cmdline,
            when.env,
            when.env_not,
        )
    )
    if not needs_process:
        return evidence
    if facts is None:
        return None
    if when.comm is not None:
        if facts.comm not in when.comm:
            return None
        evidence.append(f"process name {facts.comm}")
    if when.libraries is not None:
        found = facts.libraries_matching(when.libraries)
        if not found:
            return None
        evidence.append(f"maps {', '.join(found[:3])}")
    if when.no_libraries is not None and facts.libraries_matching(when.no_libraries):
        return None
    if when.threads is not None:
        threads = _thread_matches(facts, when.threads)
        if not threads:
            return None
        for name, count in threads:
            note = signature.thread_note(name)
            evidence.append(f"thread {name} x{count}" + (f" ({note})" if note else ""))
    if when.no_threads is not None and _thread_matches(facts, when.no_threads):
        return None
    if when.cmdline is not None:
        match = when.cmdline.search(" ".join(facts.cmdline))
        if not match:
            return None
        evidence.append(f"command line has {match.group(0).strip()!r}")
    environment = facts.environment if (when.env or when.env_not) else {}
    for name, value in when.env or ():
        if environment.get(name) != value:
            return None
        evidence.append(f"{name}={value}")
    for name, value in when.env_not or ():
        if environment.get(name) == value:
            return None
        evidence.append(f"{name} is not {value}")
    return evidence


def _rule_process_evidence(ranked: _Ranked, facts: ProcessFacts | None) -> list[str] | None:
    evidence = _process_evidence(ranked.rule.when, facts, ranked.signature)
    if evidence is None or not ranked.rule.any_of:
        return evidence
    for alternative in ranked.rule.any_of:
        extra = _process_evidence(alternative, facts, ranked.signature)
        if extra is not None:
            return evidence + extra
    return None


# Listener-level predicates ------------------------------------------------------------------


def _port_source_evidence(source: PortSource, port: int, facts: ProcessFacts | None) -> str | None:
    if facts is None:
        return None
    if source.kind == "env":
        value = facts.environment.get(source.name)
        if value is not None and port_of(value) == port:
            return f"port {port} = {source.name} of this process"
    elif source.kind == "child-env":
        for child in facts.child_facts():
            try:
                value = child.environment.get(source.name)
            except ProcessGone:
                continue
            if value is not None and port_of(value) == port:
                return f"port {port} = {source.name} of child pid {child.pid}"
    elif source.kind == "arg":
        for value in _argument_values(facts.cmdline, source.name):
            if port_of(value) == port:
                return f"port {port} = {source.name} {value}"
    return None


def _listener_evidence(
    when: Predicates,
    listener: ListenerFacts,
    scope: BindScope,
    somaxconn: int | None,
    facts: ProcessFacts | None,
) -> list[str] | None:
    evidence: list[str] = []
    if when.ports is not None:
        if listener.port not in when.ports:
            return None
        evidence.append(f"port {listener.port}")
    if when.bind is not None:
        if not bindscope.matches(scope, when.bind):
            return None
        evidence.append(bindscope.describe(scope, listener.address, listener.family))
    if when.backlog is not None:
        if listener.backlog is None:
            return None
        wanted = {somaxconn if item == "somaxconn" else item for item in when.backlog}
        if listener.backlog not in wanted:
            return None
        named = " (somaxconn)" if listener.backlog == somaxconn else ""
        evidence.append(f"backlog {listener.backlog}{named}")
    if when.port_from is not None:
        for source in when.port_from:
            found = _port_source_evidence(source, listener.port, facts)
            if found:
                evidence.append(found)
                break
        else:
            return None
    return evidence


def _rule_listener_evidence(
    ranked: _Ranked,
    listener: ListenerFacts,
    scope: BindScope,
    somaxconn: int | None,
    facts: ProcessFacts | None,
) -> list[str] | None:
    evidence = _listener_evidence(ranked.rule.when, listener, scope, somaxconn, facts)
    if evidence is None or not ranked.rule.any_of:
        return evidence
    for alternative in ranked.rule.any_of:
        extra = _listener_evidence(alternative, listener, scope, somaxconn, facts)
        if extra is not None:
            return evidence + extra
    return None


# The engine --------------------------------------------------------------------------------


def _classify_group(
    ranked: list[_Ranked],
    indexes: list[int],
    listeners: Sequence[ListenerFacts],
    facts: ProcessFacts | None,
    context: ListenerContext,
    result: dict[int, Classification],
) -> None:
    applicable: list[tuple[_Ranked, list[str]]] = []
    for item in ranked:
        evidence = _rule_process_evidence(item, facts)
        if evidence is not None:
            applicable.append((item, evidence))
    if not applicable:
        return
    capacity: dict[tuple[str, ...], int] = {}
    for item, process_evidence in applicable:
        limit = item.rule.limit_by_threads
        if limit is not None and facts is not None and limit not in capacity:
            capacity[limit] = sum(count for _name, count in _thread_matches(facts, limit))
        for index in indexes:
            if index in result:
                continue
            if limit is not None and capacity.get(limit, 0) <= 0:
                break
            listener = listeners[index]
            scope = context.scope_by_index[index]
            somaxconn = context.somaxconn_by_netns.get(listener.netns)
            listener_evidence = _rule_listener_evidence(item, listener, scope, somaxconn, facts)
            if listener_evidence is None:
                continue
            if limit is not None:
                capacity[limit] -= 1
            signature = item.signature
            result[index] = Classification(
                signature=signature.id,
                service=signature.service,
                variant=item.rule.variant,
                confidence=item.rule.confidence,
                evidence=tuple(process_evidence + listener_evidence),
                risk=signature.risk,
                is_do_not_touch=signature.is_do_not_touch,
                is_connect_safe=signature.is_connect_safe,
                handshake=signature.handshake,
            )


def classify(
    listeners: Sequence[ListenerFacts],
    signatures: Iterable[Signature],
    facts_of: Mapping[int, ProcessFacts],
    context: ListenerContext,
) -> tuple[dict[int, Classification], set[int]]:
    """Classify ``listeners`` (by index). ``facts_of`` maps each listener's primary pid to its
    facts. Returns the classifications and the pids that vanished while being read."""
    ranked = _ranked(signatures)
    groups: dict[int | None, list[int]] = {}
    for index, listener in enumerate(listeners):
        groups.setdefault(listener.pid, []).append(index)
    result: dict[int, Classification] = {}
    vanished: set[int] = set()
    for pid in sorted(groups, key=lambda p: -1 if p is None else p):
        indexes = sorted(groups[pid], key=lambda i: (listeners[i].port, listeners[i].address))
        if pid is None:
            # Unattributed listeners share no process, so no capacity: one group each.
            for index in indexes:
                _classify_group(ranked, [index], listeners, None, context, result)
            continue
        try:
            _classify_group(ranked, indexes, listeners, facts_of[pid], context, result)
        except ProcessGone:
            vanished.add(pid)
            for index in indexes:
                result.pop(index, None)
    return result, vanished
