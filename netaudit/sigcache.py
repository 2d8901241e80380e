"""Compiled signatures, cached: the gate runs before every job, and parsing and validating the
TOML files of probes/ (and --probes-dir) every time costs more than reading their compiled
form back.

Safe by construction:

* Keyed on content. The key hashes every signature file's name and bytes, source by source,
  with netaudit's version, the cache format and the parser's own files: a changed signature is
  a new key, never a stale hit.
* Never pickle: one header line, then JSON of plain values. Reading it back checks the
  header, a digest of the JSON, and every field's type; patterns are compiled again.
* Trusted only if ours: the directory and the file must belong to root or to the user
  running netaudit and be writable by no one else; the file must be a regular file (opened
  without following a link) of at most 1 MiB. Anything else is ignored.
* Written atomically (netaudit.atomic), 0600 in a 0700 directory, only after the files
  parsed without error. A write that fails is ignored: the cache can make a run faster,
  never fail it.

Unreadable, corrupt or foreign: a miss, and the files are parsed as if there were no cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from collections.abc import Mapping
from typing import Any

from netaudit import __version__, signatures
from netaudit.models import Confidence, Severity
from netaudit.signatures import Exchange, PortSource, Predicates, Rule, Signature

try:
    # The C module hashlib takes BLAKE2 from, without hashlib's OpenSSL load (3 ms of a gate).
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

CACHE_FORMAT = 1
_MAGIC = "netaudit-signature-cache"
_LIMIT_BYTES = 1 << 20
_KEEP_FILES = 8  # one per set of signature files in use; older ones are pruned after a write
_STALE_TEMPORARY_S = 3600.0  # a write killed by the gate's deadline leaves its temporary file
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _Corrupt(ValueError):
    """The cache file is not what this netaudit writes."""


def directory(environ: Mapping[str, str], euid: int | None = None) -> str | None:
    """Where the cache lives: ``$XDG_CACHE_HOME/netaudit`` when that is set to an absolute
    path, else /var/cache/netaudit for root and ``~/.cache/netaudit`` for anyone else; None
    when a user has no home. ``euid`` defaults to this process's."""
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "netaudit")
    if (os.geteuid() if euid is None else euid) == 0:
        return "/var/cache/netaudit"
    home = environ.get("HOME", "")
    return os.path.join(home, ".cache", "netaudit") if os.path.isabs(home) else None


def load(
    extra_dirs: tuple[str, ...], cache_dir: str | None, include_shipped: bool = True
) -> tuple[Signature, ...]:
    """The same signatures as ``signatures.load``, read from the cache when it holds them."""
    sources = signatures.read_sources(extra_dirs, include_shipped)
    key = cache_key(sources)
    if cache_dir is not None:
        cached = read(cache_dir, key)
        if cached is not None:
            return cached
    found = signatures.build(sources)  # a SignatureError stops here, before anything is cached
    if cache_dir is not None:
        store(cache_dir, key, found)
    return found


def _fingerprint(path: str) -> str:
    try:
        info = os.stat(path)
    except OSError:
        return "-"
    return f"{info.st_size}.{info.st_mtime_ns}"


def cache_key(sources: list[list[tuple[str, str]]]) -> str:
    """The hash of everything the compiled form depends on."""
    digest = blake2b(digest_size=32)
    parser = f"{_fingerprint(signatures.__file__)} {_fingerprint(__file__)}"
    digest.update(f"{_MAGIC} {CACHE_FORMAT} {__version__} {parser}\n".encode())
    for files in sources:
        digest.update(b"\0source\n")
        for name, text in files:
            name_bytes, text_bytes = name.encode(), text.encode()
            digest.update(f"{len(name_bytes)} {len(text_bytes)}\n".encode())
            digest.update(name_bytes)
            digest.update(text_bytes)
    return digest.hexdigest()


def path_for(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, f"signatures-{key[:32]}.cache")


def _is_ours(info: os.stat_result) -> bool:
    return info.st_uid in (0, os.geteuid()) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read(cache_dir: str, key: str) -> tuple[Signature, ...] | None:
    """The cached signatures of ``key``, or None: missing, unreadable, foreign or corrupt."""
    try:
        if not _is_ours(os.stat(cache_dir)):
            return None
        fd = os.open(path_for(cache_dir, key), _READ_FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _is_ours(info) or info.st_size > _LIMIT_BYTES:
            return None
        chunks = []
        remaining = _LIMIT_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return decode(b"".join(chunks), key)
    except (ValueError, KeyError, TypeError, RecursionError, re.error):
        return None


def store(cache_dir: str, key: str, found: tuple[Signature, ...]) -> str | None:
    """Cache ``found`` under ``key``; why it was not, or None."""
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        if not _is_ours(os.stat(cache_dir)):
            return f"{cache_dir}: not owned by root or by this user, or writable by others"
        from netaudit import atomic  # only on a miss: it imports tempfile

        path = path_for(cache_dir, key)
        atomic.write(path, encode(found, key), mode=0o600)
        _prune(cache_dir, path)
    except Exception as error:  # whatever it is, a cache must never be why a run fails
        return f"{cache_dir}: signature cache not written: {error}"
    return None


def _prune(cache_dir: str, kept: str) -> None:
    """Keep the newest caches, and drop temporary files a killed run left behind."""
    now = time.time()
    caches, doomed = [], []
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        try:
            modified = os.lstat(path).st_mtime
        except OSError:
            continue  # another run pruned it first
        if name.startswith("signatures-") and name.endswith(".cache") and path != kept:
            caches.append((modified, path))
        elif name.startswith(".netaudit-") and name.endswith(".tmp") and now - modified > _STALE_TEMPORARY_S:
            doomed.append(path)
    caches.sort(reverse=True)
    doomed += [path for _modified, path in caches[_KEEP_FILES - 1 :]]
    for path in doomed:
        with contextlib.suppress(OSError):
            os.unlink(path)


# The format ---------------------------------------------------------------------------------


def encode(found: tuple[Signature, ...], key: str) -> bytes:
    payload = json.dumps([_signature_plain(item) for item in found], separators=(",", ":")).encode()
    digest = blake2b(payload, digest_size=32).hexdigest()
    return f"{_MAGIC} {CACHE_FORMAT} {key} {digest}\n".encode() + payload


def decode(data: bytes, key: str) -> tuple[Signature, ...]:
    """Raises _Corrupt (a ValueError) for anything this netaudit did not write for ``key``."""
    header, _newline, payload = data.partition(b"\n")
    if header.split(b" ") != [_MAGIC.encode(), str(CACHE_FORMAT).encode(), key.encode(),
                              blake2b(payload, digest_size=32).hexdigest().encode()]:  # fmt: skip
        raise _Corrupt("header")
    items = json.loads(payload)
    if type(items) is not list:
        raise _Corrupt("payload")
    found = tuple(_signature(item) for item in items)
    signatures.declare_exchanges(found)  # as parsing does: the engine sends only what is loaded
    return found


def _pairs(pairs: tuple[tuple[str, str], ...] | None) -> list[list[str]] | None:
    return None if pairs is None else [list(pair) for pair in pairs]


def _predicates_plain(when: Predicates) -> dict[str, Any]:
    return {
        "libraries": when.libraries,
        "no_libraries": when.no_libraries,
        "threads": when.threads,
        "no_threads": when.no_threads,
        "comm": when.comm,
        "cmdline": when.cmdline.pattern if when.cmdline is not None else None,
        "env": _pairs(when.env),
        "env_not": _pairs(when.env_not),
        "owner": when.owner,
        "bind": when.bind,
        "backlog": when.backlog,
        "ports": when.ports,
        "port_from": None if when.port_from is None else [[s.kind, s.name] for s in when.port_from],
    }


def _signature_plain(item: Signature) -> dict[str, Any]:
    return {
        "id": item.id,
        "service": item.service,
        "title": item.title,
        "risk": item.risk.value,
        "rule_id": item.rule_id,
        "is_connect_safe": item.is_connect_safe,
        "is_do_not_touch": item.is_do_not_touch,
        "handshake": item.handshake,
        "default_ports": item.default_ports,
        "fix": item.fix,
        "references": item.references,
        "thread_notes": _pairs(item.thread_notes),
        "rules": [
            {
                "variant": rule.variant,
                "confidence": rule.confidence.value,
                "priority": rule.priority,
                "description": rule.description,
                "when": _predicates_plain(rule.when),
                "any_of": [_predicates_plain(alternative) for alternative in rule.any_of],
                "limit_by_threads": rule.limit_by_threads,
            }
            for rule in item.rules
        ],
        "path": item.path,
        "exchange": _exchange_plain(item.exchange),
    }


def _exchange_plain(exchange: Exchange | None) -> dict[str, Any] | None:
    if exchange is None:
        return None
    return {
        "signature_id": exchange.signature_id,
        "service": exchange.service,
        "protocol": exchange.protocol,
        "method": exchange.method,
        "path": exchange.path,
        "payload": exchange.payload.hex(),
        "read_cap_bytes": exchange.read_cap_bytes,
        "expect": _pattern_text(exchange.expect),
        "expect_prefix": None if exchange.expect_prefix is None else exchange.expect_prefix.hex(),
        "version": _pattern_text(exchange.version),
        "status": exchange.status,
        "auth_status": exchange.auth_status,
        "auth_expect": _pattern_text(exchange.auth_expect),
    }


def _pattern_text(pattern: re.Pattern[str] | None) -> str | None:
    return None if pattern is None else pattern.pattern


def _check(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise _Corrupt(f"expected {kind.__name__}")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(_check(item, str) for item in _check(value, list))


def _optional_strings(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _strings(value)


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(_check(item, int) for item in _check(value, list))


def _pairs_of(value: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for pair in _check(value, list):
        first, second = _strings(pair)
        pairs.append((first, second))
    return tuple(pairs)


def _optional_pairs(value: Any) -> tuple[tuple[str, str], ...] | None:
    return None if value is None else _pairs_of(value)


def _backlog(value: Any) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    items = tuple(_check(value, list))
    if not all(type(item) is int or item == "somaxconn" for item in items):
        raise _Corrupt("backlog")
    return items


def _port_from(value: Any) -> tuple[PortSource, ...] | None:
    pairs = _optional_pairs(value)
    if pairs is None:
        return None
    if not all(kind in signatures.PORT_SOURCES for kind, _name in pairs):
        raise _Corrupt("port_from")
    return tuple(PortSource(kind, name) for kind, name in pairs)


def _predicates(value: Any) -> Predicates:
    table = _check(value, dict)
    cmdline = table["cmdline"]
    owner = table["owner"]
    if owner not in (None, "known", "unknown"):
        raise _Corrupt("owner")
    bind = _optional_strings(table["bind"])
    if bind is not None and not set(bind) <= signatures.BIND_SCOPES:
        raise _Corrupt("bind")
    return Predicates(
        libraries=_optional_strings(table["libraries"]),
        no_libraries=_optional_strings(table["no_libraries"]),
        threads=_optional_strings(table["threads"]),
        no_threads=_optional_strings(table["no_threads"]),
        comm=_optional_strings(table["comm"]),
        cmdline=None if cmdline is None else re.compile(_check(cmdline, str)),
        env=_optional_pairs(table["env"]),
        env_not=_optional_pairs(table["env_not"]),
        owner=owner,
        bind=bind,
        backlog=_backlog(table["backlog"]),
        ports=None if table["ports"] is None else _ints(table["ports"]),
        port_from=_port_from(table["port_from"]),
    )


def _rule(value: Any) -> Rule:
    table = _check(value, dict)
    return Rule(
        variant=_check(table["variant"], str),
        confidence=Confidence(table["confidence"]),
        priority=_check(table["priority"], int),
        description=_check(table["description"], str),
        when=_predicates(table["when"]),
        any_of=tuple(_predicates(item) for item in _check(table["any_of"], list)),
        limit_by_threads=_optional_strings(table["limit_by_threads"]),
    )


def _optional_pattern(value: Any) -> re.Pattern[str] | None:
    return None if value is None else re.compile(_check(value, str))


def _optional_hex(value: Any) -> bytes | None:
    return None if value is None else bytes.fromhex(_check(value, str))


def _exchange(value: Any) -> Exchange | None:
    if value is None:
        return None
    table = _check(value, dict)
    method, path = table["method"], table["path"]
    return Exchange(
        signature_id=_check(table["signature_id"], str),
        service=_check(table["service"], str),
        protocol=_check(table["protocol"], str),
        method=None if method is None else _check(method, str),
        path=None if path is None else _check(path, str),
        payload=bytes.fromhex(_check(table["payload"], str)),
        read_cap_bytes=_check(table["read_cap_bytes"], int),
        expect=_optional_pattern(table["expect"]),
        expect_prefix=_optional_hex(table["expect_prefix"]),
        version=_optional_pattern(table["version"]),
        status=_ints(table["status"]),
        auth_status=_ints(table["auth_status"]),
        auth_expect=_optional_pattern(table["auth_expect"]),
    )


def _signature(value: Any) -> Signature:
    table = _check(value, dict)
    handshake = table["handshake"]
    if handshake is not None and not signatures.is_handshake_name(_check(handshake, str)):
        raise _Corrupt("handshake")
    exchange = _exchange(table["exchange"])
    if (exchange.name if exchange is not None else None) != (
        handshake if handshake is not None and handshake.startswith(signatures.EXCHANGE_PREFIX) else None
    ):
        raise _Corrupt("exchange")
    return Signature(
        id=_check(table["id"], str),
        service=_check(table["service"], str),
        title=_check(table["title"], str),
        risk=Severity(table["risk"]),
        rule_id=_check(table["rule_id"], str),
        is_connect_safe=_check(table["is_connect_safe"], bool),
        is_do_not_touch=_check(table["is_do_not_touch"], bool),
        handshake=handshake,
        default_ports=_ints(table["default_ports"]),
        fix=_check(table["fix"], str),
        references=_strings(table["references"]),
        thread_notes=_pairs_of(table["thread_notes"]),
        rules=tuple(_rule(item) for item in _check(table["rules"], list)),
        path=_check(table["path"], str),
        exchange=exchange,
    )
