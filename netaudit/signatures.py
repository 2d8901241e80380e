"""Service signatures: the TOML files of probes/, validated on load.

A signature is data, not code: loading one never runs anything, so an admin can add their
own with ``--probes-dir`` safely. Each file describes one service: its risk when exposed,
whether a connect() or a read-only handshake is safe, and rules that recognise its listeners
from local facts. A rule is a set of predicates from a fixed vocabulary (``Predicate``
kinds below); all must hold, and an optional ``any`` list adds alternatives of which one
must hold. docs/signatures.md documents the format.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from netaudit import docparse, safeio
from netaudit.models import Confidence, Severity
from netaudit.typedread import InputError, Table

SCHEMA = 1
SIGNATURE_LIMIT_BYTES = 1 << 20  # the shipped files are under 4 KiB each
HANDSHAKES = frozenset({"none", "tcpstore-ping", "http-get-root"})
BIND_SCOPES = frozenset(
    {
        "wildcard", "dual-stack", "ipv4-wildcard", "ipv6-wildcard",
        "loopback", "link-local", "specific", "not-wildcard",
    }
)  # fmt: skip
PORT_SOURCES = frozenset({"env", "child-env", "arg"})
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
_RULE_ID = re.compile(r"^NA\d{3}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
_OPTION = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class SignatureError(InputError):
    """A signature file is malformed: the message names the file and field."""


@dataclass(frozen=True, slots=True)
class PortSource:
    """Where a port number may be read: ``env:MASTER_PORT``, ``child-env:MASTER_PORT``,
    ``arg:--rdzv-endpoint`` (a ``host:port`` or ``port`` value)."""

    kind: str
    name: str

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Predicates:
    """Every field None means "not constrained". See docs/signatures.md."""

    libraries: tuple[str, ...] | None = None
    no_libraries: tuple[str, ...] | None = None
    threads: tuple[str, ...] | None = None  # globs on /proc/<pid>/task/*/comm
    no_threads: tuple[str, ...] | None = None
    comm: tuple[str, ...] | None = None
    cmdline: re.Pattern[str] | None = None
    env: tuple[tuple[str, str], ...] | None = None
    env_not: tuple[tuple[str, str], ...] | None = None
    owner: str | None = None  # "known" | "unknown"
    bind: tuple[str, ...] | None = None
    backlog: tuple[int | str, ...] | None = None  # ints, or "somaxconn"
    ports: tuple[int, ...] | None = None
    port_from: tuple[PortSource, ...] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    variant: str
    confidence: Confidence
    priority: int
    description: str
    when: Predicates
    any_of: tuple[Predicates, ...]
    limit_by_threads: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Signature:
    id: str
    service: str
    title: str
    risk: Severity
    rule_id: str
    is_connect_safe: bool
    is_do_not_touch: bool
    handshake: str | None
    default_ports: tuple[int, ...]
    fix: str
    references: tuple[str, ...]
    thread_notes: tuple[tuple[str, str], ...]
    rules: tuple[Rule, ...]
    path: str

    def thread_note(self, name: str) -> str | None:
        return dict(self.thread_notes).get(name)


def _env_pairs(reader: Table, key: str) -> tuple[tuple[str, str], ...] | None:
    table = reader.get(key, dict)
    if table is None:
        return None
    pairs = []
    for name, value in sorted(table.items()):
        if not _ENV_NAME.match(name) or not isinstance(value, str):
            reader.fail(key, f'expected NAME = "value" pairs, got {name!r}')
        pairs.append((name, value))
    return tuple(pairs)


def _predicates(reader: Table, allow_any: bool) -> tuple[Predicates, tuple[Predicates, ...]]:
    cmdline_text = reader.get("cmdline", str)
    try:
        cmdline = re.compile(cmdline_text) if cmdline_text is not None else None
    except re.error as error:
        reader.fail("cmdline", f"invalid regular expression: {error}")
    bind = reader.strings("bind")
    if bind is not None and not set(bind) <= BIND_SCOPES:
        reader.fail("bind", f"unknown scope; expected some of {sorted(BIND_SCOPES)}")
    backlog_raw = reader.get("backlog", list)
    backlog: tuple[int | str, ...] | None = None
    if backlog_raw is not None:
        if not backlog_raw or not all(
            (type(item) is int and item >= 0) or item == "somaxconn" for item in backlog_raw
        ):
            reader.fail("backlog", 'expected a list of integers or "somaxconn"')
        backlog = tuple(backlog_raw)
    port_from = None
    sources = reader.strings("port_from")
    if sources is not None:
        parsed = []
        for text in sources:
            kind, _, name = text.partition(":")
            valid_name = _OPTION.match(name) if kind == "arg" else _ENV_NAME.match(name)
            if kind not in PORT_SOURCES or not valid_name:
                reader.fail("port_from", f"{text!r}: expected env:NAME, child-env:NAME or arg:--option")
            parsed.append(PortSource(kind, name))
        port_from = tuple(parsed)
    owner = reader.get("owner", str)
    if owner not in (None, "known", "unknown"):
        reader.fail("owner", 'expected "known" or "unknown"')
    predicates = Predicates(
        libraries=reader.strings("libraries"),
        no_libraries=reader.strings("no_libraries"),
        threads=reader.strings("threads"),
        no_threads=reader.strings("no_threads"),
        comm=reader.strings("comm"),
        cmdline=cmdline,
        env=_env_pairs(reader, "env"),
        env_not=_env_pairs(reader, "env_not"),
        owner=owner,
        bind=bind,
        backlog=backlog,
        ports=reader.ints("ports", 1, 65535),
        port_from=port_from,
    )
    alternatives: list[Predicates] = []
    if allow_any:
        raw_any = reader.get("any", list)
        for index, table in enumerate(raw_any or []):
            sub = Table(reader.source, f"{reader.where}.any[{index}]", table, SignatureError)
            alternatives.append(_predicates(sub, allow_any=False)[0])
            sub.finish()
        if raw_any is not None and not alternatives:
            reader.fail("any", "expected at least one alternative")
    reader.finish()
    return predicates, tuple(alternatives)


def _rule(reader: Table) -> Rule:
    variant = reader.get("variant", str, required=True)
    if not _ID.match(variant):
        reader.fail("variant", "expected lowercase letters, digits and dashes")
    confidence_text = reader.get("confidence", str, required=True)
    try:
        confidence = Confidence(confidence_text)
    except ValueError:
        reader.fail("confidence", "expected high, medium or low")
    priority = reader.get("priority", int, required=True)
    description = reader.get("description", str) or ""
    limit = reader.strings("limit_by_threads")
    when_reader = reader.required_sub("when")
    when, any_of = _predicates(when_reader, allow_any=True)
    reader.finish()
    return Rule(variant, confidence, priority, description, when, any_of, limit)


def parse(text: str, path: str) -> Signature:
    """One signature from TOML text; ``path`` is used in error messages only."""
    data = docparse.parse_toml(text, path, SignatureError)
    reader = Table(path, "", data, SignatureError)
    schema = reader.get("schema", int, required=True)
    if schema != SCHEMA:
        reader.fail("schema", f"this netaudit reads schema {SCHEMA}, not {schema}")
    ident = reader.get("id", str, required=True)
    if not _ID.match(ident):
        reader.fail("id", "expected lowercase letters, digits and dashes")
    service = reader.get("service", str, required=True)
    if not _ID.match(service):
        reader.fail("service", "expected lowercase letters, digits and dashes")
    risk_text = reader.get("risk", str, required=True)
    try:
        risk = Severity(risk_text)
    except ValueError:
        reader.fail("risk", f"expected one of {[s.value for s in Severity]}")
    rule_id = reader.get("rule_id", str, required=True)
    if not _RULE_ID.match(rule_id):
        reader.fail("rule_id", "expected NA followed by three digits")
    handshake = reader.get("handshake", str, required=True)
    if handshake not in HANDSHAKES:
        reader.fail("handshake", f"expected one of {sorted(HANDSHAKES)}")
    do_not_touch = reader.get("do_not_touch", bool, required=True)
    connect_safe = reader.get("connect_safe", bool, required=True)
    if do_not_touch and (connect_safe or handshake != "none"):
        reader.fail("do_not_touch", "a do-not-touch service cannot be connect_safe or have a handshake")
    notes_table = reader.get("thread_notes", dict) or {}
    if not all(isinstance(value, str) for value in notes_table.values()):
        reader.fail("thread_notes", 'expected thread = "note" pairs')
    rule_tables = reader.tables("rules", required=True)
    if not rule_tables:
        reader.fail("rules", "expected at least one [[rules]] table")
    rules = tuple(_rule(table) for table in rule_tables)
    signature = Signature(
        id=ident,
        service=service,
        title=reader.get("title", str, required=True),
        risk=risk,
        rule_id=rule_id,
        is_connect_safe=connect_safe,
        is_do_not_touch=do_not_touch,
        handshake=None if handshake == "none" else handshake,
        default_ports=reader.ints("default_ports", 1, 65535) or (),
        fix=reader.get("fix", str, required=True),
        references=reader.strings("references") or (),
        thread_notes=tuple(sorted(notes_table.items())),
        rules=rules,
        path=path,
    )
    reader.finish()
    return signature


def _directory_files(directory: str, label: str | None = None) -> list[tuple[str, str]]:
    """(name for messages, text) of every *.toml file of ``directory``, sorted."""
    files = []
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".toml"):
            continue
        path = os.path.join(directory, name)
        shown = f"{label}/{name}" if label else path
        try:
            raw = safeio.read_document(path, SIGNATURE_LIMIT_BYTES)
        except OSError as error:
            raise docparse.read_error(shown, error, SignatureError) from None
        try:
            files.append((shown, raw.decode("utf-8")))
        except UnicodeDecodeError as error:
            raise SignatureError(f"{shown}: not UTF-8 text (byte {error.start})") from None
    return files


def _shipped_files() -> list[tuple[str, str]]:
    # The probes package directory, from a checkout or a wheel alike. A plain path rather than
    # importlib.resources, whose import (zipfile, tempfile, pathlib) cost the prolog gate 38 ms.
    import probes

    try:
        return _directory_files(os.path.dirname(os.path.abspath(probes.__file__)), "probes")
    except OSError as error:
        raise SignatureError(f"probes/: cannot read the shipped signatures: {error}") from None


def read_sources(
    extra_dirs: tuple[str, ...] = (), include_shipped: bool = True
) -> list[list[tuple[str, str]]]:
    """The files ``load`` parses: per source in order (the shipped ones, then each extra
    directory), (name for messages, text) of each file, sorted by name."""
    sources = [_shipped_files()] if include_shipped else []
    for directory in extra_dirs:
        if not os.path.isdir(directory):
            raise SignatureError(f"{directory}: not a directory of signature files")
        try:
            sources.append(_directory_files(directory))
        except OSError as error:
            raise SignatureError(f"{directory}: cannot read: {error}") from None
    return sources


def build(sources: list[list[tuple[str, str]]]) -> tuple[Signature, ...]:
    """Parse ``read_sources``'s files. A later file with an id already loaded replaces it (an
    admin overriding a shipped signature); two files with one id in the same source are an
    error."""
    by_id: dict[str, Signature] = {}
    for files in sources:
        seen_here: dict[str, str] = {}
        for path_text, text in files:
            signature = parse(text, path_text)
            if signature.id in seen_here:
                first = seen_here[signature.id]
                raise SignatureError(f"{path_text}: id: {signature.id!r} is also in {first}")
            seen_here[signature.id] = path_text
            by_id[signature.id] = signature
    return tuple(sorted(by_id.values(), key=lambda s: s.id))


def load(extra_dirs: tuple[str, ...] = (), include_shipped: bool = True) -> tuple[Signature, ...]:
    """The shipped signatures, then each extra directory's, parsed (``build``).
    netaudit.sigcache.load gives the same through a cache of the compiled form."""
    return build(read_sources(extra_dirs, include_shipped))
