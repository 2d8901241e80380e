"""Known CVEs as evidence: a version netaudit learned (the torch a process maps, a package
beside it, the version a service's read-only answer carries) checked against the data file
probes/cves/cves.toml, each entry with its affected ranges, first fixed release and sources.

The data is the authority and is reviewed like a signature: no range here is guessed, and a
disputed CVE says so. Versions are compared as PEP 440 versions (``packaging``, the library pip
itself vendors); a version text that does not parse matches nothing rather than everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from netaudit import docparse, safeio
from netaudit.models import CveEvidence
from netaudit.typedread import InputError, Table

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet

SCHEMA = 1
DATA_LIMIT_BYTES = 1 << 20
# What a version may look like wherever netaudit reads one from outside (a service's answer, an
# inventory, a peer's report): PEP 440 and its local labels, bounded.
VERSION_TEXT = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}\Z")
_CVE_ID = re.compile(r"^(CVE-[0-9]{4}-[0-9]{4,7}|GHSA(-[23456789cfghjmpqrvwx]{4}){3})$")
PACKAGE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z")  # a PyPI name, lower case
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class AdvisoryError(InputError):
    pass


@dataclass(frozen=True, slots=True)
class Advisory:
    """One CVE: ``affected`` holds PEP 440 specifier sets, one per affected range; ``fixed``
    is the first fixed release, "" where none exists."""

    id: str
    package: str
    services: tuple[str, ...]
    affected: tuple[str, ...]
    fixed: str
    disputed: bool
    summary: str
    sources: tuple[str, ...]
    condition: str = ""  # the configuration the CVE needs beyond the version, or ""


@dataclass(frozen=True, slots=True)
class Known:
    """The data file: the advisories, and which package a service's answered version names."""

    advisories: tuple[Advisory, ...]
    answered_by: Mapping[str, str]  # service -> the package whose version its answer carries

    def for_service(self, service: str) -> tuple[Advisory, ...]:
        return tuple(a for a in self.advisories if service in a.services)


@cache  # a few dozen ranges in all, checked against every finding's versions
def _specifier(text: str) -> SpecifierSet:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(text)
    except InvalidSpecifier as error:
        raise ValueError(str(error)) from None


def _advisory(table: Table) -> Advisory:
    ident = table.get("id", str, required=True)
    if not _CVE_ID.match(ident):
        table.fail("id", f"{ident[:40]!r} is not a CVE or GHSA id")
    package = table.get("package", str, required=True)
    if not PACKAGE_NAME.match(package):
        table.fail("package", "expected a lower-case PyPI name")
    services = table.strings("services", required=True) or ()
    for service in services:
        if not _SERVICE.match(service):
            table.fail("services", f"{service[:40]!r} is not a service name")
    affected = table.strings("affected", required=True) or ()
    for text in affected:
        try:
            _specifier(text)
        except ValueError:
            table.fail("affected", f"{text[:60]!r} is not a PEP 440 specifier set")
    fixed = table.get("fixed", str, required=True)
    if fixed and not VERSION_TEXT.match(fixed):
        table.fail("fixed", f"{fixed[:40]!r} is not a version")
    sources = table.strings("sources", required=True) or ()
    advisory = Advisory(
        id=ident,
        package=package,
        services=services,
        affected=affected,
        fixed=fixed,
        disputed=table.get("disputed", bool, required=True),
        summary=table.get("summary", str, required=True),
        sources=sources,
        condition=table.get("condition", str) or "",
    )
    table.finish()
    return advisory


def parse(text: str, path: str) -> Known:
    """The data file's advisories; ``path`` names it in errors."""
    reader = Table(path, "", docparse.parse_toml(text, path, AdvisoryError), AdvisoryError)
    schema = reader.get("schema", int, required=True)
    if schema != SCHEMA:
        reader.fail("schema", f"this netaudit reads schema {SCHEMA}, not {schema}")
    reader.get("updated", str, required=True)
    answered = reader.sub("answered_by")
    answered_by: dict[str, str] = {}
    if answered is not None:
        for service in sorted(answered.table):
            package = answered.get(service, str)
            if not _SERVICE.match(service) or not PACKAGE_NAME.match(package):
                answered.fail(service, 'expected service = "package"')
            answered_by[service] = package
        answered.finish()
    advisories = tuple(_advisory(table) for table in reader.tables("cve", required=True))
    seen: set[tuple[str, str]] = set()
    for advisory in advisories:
        if (advisory.id, advisory.package) in seen:
            reader.fail("cve", f"{advisory.id} for {advisory.package} is listed twice")
        seen.add((advisory.id, advisory.package))
    reader.finish()
    return Known(advisories, answered_by)


def shipped_path() -> str:
    import probes

    return os.path.join(os.path.dirname(os.path.abspath(probes.__file__)), "cves", "cves.toml")


@cache
def shipped() -> Known:
    path = shipped_path()
    try:
        raw = safeio.read_document(path, DATA_LIMIT_BYTES)
    except OSError as error:
        raise docparse.read_error("probes/cves/cves.toml", error, AdvisoryError) from None
    return parse(raw.decode("utf-8", "replace"), "probes/cves/cves.toml")


@lru_cache(maxsize=1024)  # a cluster runs few versions, seen on many findings
def _parsed_version(text: str) -> object | None:
    from packaging.version import InvalidVersion, Version

    if not VERSION_TEXT.match(text):
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def is_affected(advisory: Advisory, version: str) -> bool:
    """Whether ``version`` lies in one of the advisory's ranges. A local build label
    (2.2.1+cpu) is the release it labels; pre-releases count, since they ship the code."""
    parsed = _parsed_version(version)
    if parsed is None:
        return False
    return any(_specifier(text).contains(parsed, prereleases=True) for text in advisory.affected)  # type: ignore[arg-type]


def evidence(known: Known, service: str, versions: Iterable[tuple[str, str, str]]) -> tuple[CveEvidence, ...]:
    """The advisories of ``service`` that the (package, version, seen) triples fall in, one
    per advisory (the first version that falls in it), sorted by id."""
    candidates = known.for_service(service)
    if not candidates:
        return ()
    found: dict[str, CveEvidence] = {}
    for package, version, seen in versions:
        for advisory in candidates:
            if advisory.package != package or advisory.id in found or not is_affected(advisory, version):
                continue
            found[advisory.id] = CveEvidence(
                id=advisory.id,
                package=package,
                version=version,
                seen=seen,
                fixed=advisory.fixed,
                disputed=advisory.disputed,
                summary=advisory.summary,
                source=advisory.sources[0],
                condition=advisory.condition,
            )
    return tuple(found[key] for key in sorted(found))


def answered_versions(
    known: Known, service: str, versions: Sequence[str | None]
) -> list[tuple[str, str, str]]:
    """(package, version, "answer") for the versions a service's answers carried."""
    package = known.answered_by.get(service)
    if package is None:
        return []
    return [(package, version, "answer") for version in dict.fromkeys(versions) if version]
