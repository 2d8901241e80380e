"""Typed, strict reading of parsed TOML/JSON tables, with one-line errors that name the file
and the field (``site.toml: scan.rate_per_s: expected a number, got str``).

Signature files, config files and inventory JSON are all untrusted or hand-written input; they
share this reader so that every bad field is reported the same way and unknown keys are
refused instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NoReturn


class InputError(ValueError):
    """A malformed input file. The message is one line naming the file and field."""


_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a table",
}


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds)


def _type_name(value: object) -> str:
    return {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        list: "list",
        dict: "table",
        type(None): "null",
    }.get(type(value), type(value).__name__)


class Table:
    """One table of a document. ``finish()`` refuses the keys that were never asked for."""

    def __init__(self, source: str, where: str, table: object, error: type[InputError] = InputError) -> None:
        self.source, self.where, self.error_type = source, where, error
        if not isinstance(table, dict):
            self._fail(f"expected a table, got {_type_name(table)}")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def path(self, key: str | None = None) -> str:
        if key is None:
            return self.where or "top level"
        return f"{self.where}.{key}" if self.where else key

    def _fail(self, message: str, key: str | None = None) -> NoReturn:
        raise self.error_type(f"{self.source}: {self.path(key)}: {message}")

    def fail(self, key: str, message: str) -> NoReturn:
        self._fail(message, key)

    def has(self, key: str) -> bool:
        return key in self.table

    def get(self, key: str, *kinds: type, required: bool = False, nullable: bool = False) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                self.fail(key, "is required")
            return None
        value = self.table[key]
        if value is None and nullable:
            return None
        accepted = kinds
        if float in kinds and int not in kinds:
            accepted = (*kinds, int)  # 2 is a fine number of seconds
        is_bool_mismatch = isinstance(value, bool) and bool not in kinds
        if not isinstance(value, accepted) or is_bool_mismatch:
            self.fail(key, f"expected {_kind_name(kinds)}, got {_type_name(value)}")
        return float(value) if float in kinds and type(value) is int else value

    def sub(self, key: str, required: bool = False) -> Table | None:
        value = self.get(key, dict, required=required)
        return None if value is None else Table(self.source, self.path(key), value, self.error_type)

    def required_sub(self, key: str) -> Table:
        return Table(self.source, self.path(key), self.get(key, dict, required=True), self.error_type)

    def tables(self, key: str, required: bool = False) -> list[Table]:
        value = self.get(key, list, required=required) or []
        return [
            Table(self.source, f"{self.path(key)}[{index}]", item, self.error_type)
            for index, item in enumerate(value)
        ]

    def strings(self, key: str, required: bool = False, allow_empty: bool = False) -> tuple[str, ...] | None:
        value = self.get(key, list, required=required)
        if value is None:
            return None
        if (not value and not allow_empty) or not all(isinstance(item, str) and item for item in value):
            self.fail(key, "expected a non-empty list of non-empty strings")
        return tuple(value)

    def ints(self, key: str, low: int, high: int, required: bool = False) -> tuple[int, ...] | None:
        value = self.get(key, list, required=required)
        if value is None:
            return None
        if not all(type(item) is int and low <= item <= high for item in value):
            self.fail(key, f"expected a list of integers in {low}..{high}")
        return tuple(value)

    def integer(
        self, key: str, low: int, high: int, required: bool = False, nullable: bool = False
    ) -> int | None:
        value = self.get(key, int, required=required, nullable=nullable)
        if value is not None and not low <= value <= high:
            self.fail(key, f"expected an integer in {low}..{high}, got {value}")
        return value  # type: ignore[no-any-return]

    def number(self, key: str, low: float, high: float, required: bool = False) -> float | None:
        value = self.get(key, float, required=required)
        if value is not None and not low <= value <= high:
            self.fail(key, f"expected a number in {low}..{high}, got {value}")
        return value  # type: ignore[no-any-return]

    def choice(
        self, key: str, choices: frozenset[str] | tuple[str, ...], required: bool = False
    ) -> str | None:
        value = self.get(key, str, required=required)
        if value is not None and value not in choices:
            self.fail(key, f"expected one of {', '.join(sorted(choices))}, got {value!r}")
        return value  # type: ignore[no-any-return]

    def header(self, kind: str, version: int, what: str, advice: str = "") -> None:
        """Check the ``kind`` and ``schema_version`` every netaudit document starts with."""
        tail = f"; {advice}" if advice else ""
        if self.get("kind", str) != kind:
            self.fail("kind", f"not a netaudit {what} (expected {kind!r}){tail}")
        found = self.get("schema_version", int, required=True)
        if found != version:
            self.fail("schema_version", f"this netaudit reads {version}, got {found}{tail}")

    def versioned_header(self, kind: str, versions: tuple[int, ...], what: str) -> int:
        """``header`` for a reader of several schema versions: the version the document has."""
        if self.get("kind", str) != kind:
            self.fail("kind", f"not a netaudit {what} (expected {kind!r})")
        found = self.get("schema_version", int, required=True)
        if found not in versions:
            readable = " or ".join(str(version) for version in versions)
            self.fail("schema_version", f"this netaudit reads {readable}, got {found}")
        return found  # type: ignore[no-any-return]

    def timestamp(self, key: str) -> datetime:
        """A required ISO 8601 time with a time zone (we write ...Z)."""
        text = self.get(key, str, required=True)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(key, f"{text!r} is not an ISO 8601 time")
        if moment.tzinfo is None:
            self.fail(key, "needs a time zone (Z)")
        return moment

    def accept(self, keys: Iterable[str]) -> None:
        """Count ``keys`` as read: their values were validated elsewhere (an equal copy)."""
        self.used.update(keys)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            self.fail(unknown[0], "unknown key")
