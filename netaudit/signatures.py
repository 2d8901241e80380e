"""Service signatures: the TOML files of probes/, validated on load.

A signature is data, not code: loading one never runs anything, so an admin can add their
own with ``--probes-dir`` safely. Each file describes one service: its risk when exposed,
whether a connect() or a read-only handshake is safe, and rules that recognise its listeners
from local facts. A rule is a set of predicates from a fixed vocabulary (``Predicate``
kinds below); all must hold, and an optional ``any`` list adds alternatives of which one
must hold. docs/signatures.md documents the format.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from typing import Any

from netaudit import docparse, safeio
from netaudit.models import Confidence, Severity
from netaudit.typedread import InputError, Table

SCHEMA = 1
SIGNATURE_LIMIT_BYTES = 1 << 20  # the shipped files are under 4 KiB each
# "exchange": the signature's own [exchange] table, run by netaudit.scan.exchange under the
# name ``exchange:<signature id>`` (EXCHANGE_PREFIX).
HANDSHAKES = frozenset({"none", "tcpstore-ping", "http-get-root", "exchange"})
EXCHANGE_PREFIX = "exchange:"
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
_HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,200}$")
# A declared pattern is searched in at most MAX_READ_CAP_BYTES of a stranger's answer: every
# quantifier must be bounded, none nested, and the product of their bounds small, so that a
# search costs at most (window x that product) steps whatever the answer holds.
_PATTERN_LIMIT_CHARS = 512
_PATTERN_REPEAT_MAX = 256
_PATTERN_COST_MAX = 100_000


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
class Exchange:
    """A read-only exchange declared in a signature's [exchange] table (docs/signatures.md).

    Attributes:
        protocol: "http" (one GET of ``path``, the request written by the engine), "zmtp",
            "http2" (the connection preface and an empty SETTINGS frame) or "bytes"
            (``payload`` sent as it is).
        payload: the exact bytes of a zmtp, http2 or bytes exchange; empty for http.
        expect: searched in the first ``read_cap_bytes`` of the answer, as latin-1 text.
        expect_prefix: the answer must start with these bytes.
        version: group 1 is the version the answer carries.
        status: http: the statuses that confirm the service when ``expect`` matches.
        auth_status / auth_expect: http: an answer that proves the service with
            authentication on (Ray's 401): confirmed, and the detail says so.
    """

    signature_id: str
    service: str
    protocol: str
    method: str | None
    path: str | None
    payload: bytes
    read_cap_bytes: int
    expect: re.Pattern[str] | None
    expect_prefix: bytes | None
    version: re.Pattern[str] | None
    status: tuple[int, ...]
    auth_status: tuple[int, ...]
    auth_expect: re.Pattern[str] | None

    @property
    def name(self) -> str:
        """The handshake name classifications and scan plans carry."""
        return f"{EXCHANGE_PREFIX}{self.signature_id}"


def is_handshake_name(name: str) -> bool:
    """A handshake a loaded signature may name: a built-in or ``exchange:<signature id>``."""
    if name.startswith(EXCHANGE_PREFIX):
        return bool(_ID.match(name[len(EXCHANGE_PREFIX) :]))
    return name in HANDSHAKES and name not in ("none", "exchange")


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
    exchange: Exchange | None = None  # set when handshake is "exchange:<id>"

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


def _pattern_cost(parsed: object, nested: bool) -> int:
    """The product of the bounds of the quantifiers in a parsed pattern; raises ValueError for
    an unbounded or nested quantifier."""
    # re's own parser (CPython 3.11+ re/_parser.py, re/_constants.py): what the engine will run.
    constants: Any = importlib.import_module("re._constants")
    cost = 1
    for op, value in parsed:  # type: ignore[attr-defined]
        if op in (constants.MAX_REPEAT, constants.MIN_REPEAT, constants.POSSESSIVE_REPEAT):
            _low, high, sub = value
            if high > _PATTERN_REPEAT_MAX:
                raise ValueError(
                    f"every quantifier needs a bound of at most {_PATTERN_REPEAT_MAX} ({{0,40}})"
                )
            if nested:
                raise ValueError("a quantifier inside a quantified group")
            cost *= (high + 1) * _pattern_cost(sub, nested=True)
        elif op is constants.SUBPATTERN:
            cost *= _pattern_cost(value[-1], nested)
        elif op is constants.ATOMIC_GROUP:
            cost *= _pattern_cost(value, nested)
        elif op is constants.BRANCH:
            cost *= max(_pattern_cost(branch, nested) for branch in value[1])
        elif op in (constants.ASSERT, constants.ASSERT_NOT):
            cost *= _pattern_cost(value[1], nested)
        elif op is constants.GROUPREF_EXISTS:
            raise ValueError("conditional groups are not supported")
        if cost > _PATTERN_COST_MAX:
            raise ValueError(f"its quantifiers allow more than {_PATTERN_COST_MAX:,} ways to match")
    return cost


def _bounded_pattern(reader: Table, key: str, groups: int | None = None) -> re.Pattern[str] | None:
    """A declared regular expression: compiled, bounded (see _PATTERN_COST_MAX), and with
    ``groups`` capturing groups when given."""
    text = reader.get(key, str)
    if text is None:
        return None
    if not text or len(text) > _PATTERN_LIMIT_CHARS:
        reader.fail(key, f"expected a regular expression of 1..{_PATTERN_LIMIT_CHARS} characters")
    try:
        compiled = re.compile(text)
        _pattern_cost(importlib.import_module("re._parser").parse(text), nested=False)
    except re.error as error:
        reader.fail(key, f"invalid regular expression: {error}")
    except ValueError as error:
        reader.fail(key, f"not a bounded regular expression: {error}")
    if groups is not None and compiled.groups != groups:
        reader.fail(key, f"expected exactly {groups} capturing group, got {compiled.groups}")
    return compiled


def _hex(reader: Table, key: str, limit: int) -> bytes | None:
    text = reader.get(key, str)
    if text is None:
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        reader.fail(key, "expected hexadecimal digits, two per byte")
    if not 1 <= len(value) <= limit:
        reader.fail(key, f"expected 1..{limit} bytes")
    return value


def _exchange(reader: Table, ident: str, service: str) -> Exchange:
    """The [exchange] table, checked against the per-service allow-list in code."""
    from netaudit.scan import allowlist

    protocol = str(reader.choice("protocol", allowlist.PROTOCOLS, required=True))
    is_http = protocol == allowlist.HTTP
    method = reader.get("method", str, required=is_http)
    path = reader.get("path", str, required=is_http)
    payload = _hex(reader, "send_hex", allowlist.MAX_PAYLOAD_BYTES)
    status = reader.ints("status", 100, 599)
    auth_status = reader.ints("auth_status", 100, 599)
    auth_expect = _bounded_pattern(reader, "auth_expect")
    if is_http:
        if payload is not None:
            reader.fail("send_hex", "an http exchange is a method and a path; the engine writes the request")
        if not _HTTP_PATH.match(path):
            reader.fail("path", "expected an absolute path of letters, digits and ._~/- (no query)")
    else:
        for key, value in (("method", method), ("path", path), ("status", status),
                           ("auth_status", auth_status), ("auth_expect", auth_expect)):  # fmt: skip
            if value is not None:
                reader.fail(key, f"only an http exchange has {key}")
        if payload is None:
            reader.fail("send_hex", f"a {protocol} exchange declares the exact bytes it sends")
    if (auth_expect is None) != (auth_status is None):
        reader.fail("auth_expect", "auth_status and auth_expect go together: a bare 401 proves nothing")
    read_cap = int(reader.integer("read_cap_bytes", 1, allowlist.MAX_READ_CAP_BYTES, required=True) or 0)
    expect = _bounded_pattern(reader, "expect")
    expect_prefix = _hex(reader, "expect_prefix_hex", read_cap)
    if expect is None and expect_prefix is None:
        reader.fail("expect", "an exchange needs expect or expect_prefix_hex: what proves the service")
    version = _bounded_pattern(reader, "version", groups=1)
    refused = allowlist.refusal(service, protocol, method, path, payload or b"", read_cap)
    if refused is not None:
        reader.fail(*refused)
    reader.finish()
    return Exchange(
        signature_id=ident,
        service=service,
        protocol=protocol,
        method=method,
        path=path,
        payload=payload or b"",
        read_cap_bytes=read_cap,
        expect=expect,
        expect_prefix=expect_prefix,
        version=version,
        status=status or ((200,) if is_http else ()),
        auth_status=auth_status or (),
        auth_expect=auth_expect,
    )


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
    exchange_table = reader.sub("exchange")
    if (handshake == "exchange") != (exchange_table is not None):
        reader.fail("exchange", 'handshake = "exchange" and an [exchange] table go together')
    exchange = _exchange(exchange_table, ident, service) if exchange_table is not None else None
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
        handshake=exchange.name if exchange is not None else None if handshake == "none" else handshake,
        default_ports=reader.ints("default_ports", 1, 65535) or (),
        fix=reader.get("fix", str, required=True),
        references=reader.strings("references") or (),
        thread_notes=tuple(sorted(notes_table.items())),
        rules=rules,
        path=path,
        exchange=exchange,
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
    found = tuple(sorted(by_id.values(), key=lambda s: s.id))
    declare_exchanges(found)
    return found


def declare_exchanges(found: tuple[Signature, ...]) -> None:
    """Record the loaded exchanges: the engine (netaudit.scan.exchange) sends nothing a loaded
    signature did not declare."""
    if any(signature.exchange is not None for signature in found):
        from netaudit.scan import allowlist

        allowlist.declare(found)


def load(extra_dirs: tuple[str, ...] = (), include_shipped: bool = True) -> tuple[Signature, ...]:
    """The shipped signatures, then each extra directory's, parsed (``build``).
    netaudit.sigcache.load gives the same through a cache of the compiled form."""
    return build(read_sources(extra_dirs, include_shipped))
