"""JSON as netaudit prints it: sorted keys always, so two runs diff cleanly; indented for a
person when the document is small, compact beyond that. Indentation switches Python to its
pure-Python encoder, which took 1.1 s of a 16,384-endpoint scan report (bench/README.md); the
C encoder writes the same content in the same order in a tenth of that.

The documents are trees that netaudit builds itself, never cyclic, so the encoder's check for
cycles (a dict of every container's id) is skipped: 8 % of a 10,000-listener inventory.

``write`` prints what ``dumps`` returns without ever holding all of it: the C encoder keeps
its pieces and then the joined text, which made the text of 10,000 listeners cost 9 MB of
peak memory on top of the document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

INDENT_UP_TO_ITEMS = 1000
_CHUNK_ITEMS = 512  # entries of a long list or table encoded per write()
_compact = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


def dumps(document: object, items: int) -> str:
    """``items``: how many listeners or endpoints the document holds."""
    if items <= INDENT_UP_TO_ITEMS:
        return json.dumps(document, indent=2, sort_keys=True, check_circular=False) + "\n"
    return _compact(document) + "\n"


def write(document: object, items: int, stream: IO[str]) -> None:
    """Write ``dumps(document, items)`` to ``stream``: the same characters, a large document
    one top-level member at a time and its long lists and tables a chunk at a time."""
    if items <= INDENT_UP_TO_ITEMS or not isinstance(document, dict) or not _has_text_keys(document):
        stream.write(dumps(document, items))
        return
    separator = "{"
    for key, value in sorted(document.items()):
        stream.write(f"{separator}{_compact(key)}:")
        separator = ","
        _write_value(value, stream)
    stream.write("}\n")


def _has_text_keys(table: dict[Any, Any]) -> bool:
    # The encoder sorts keys as they are, then writes them as text: only for text keys is
    # the order of the pieces the order of the whole.
    return all(isinstance(key, str) for key in table)


def _write_value(value: object, stream: IO[str]) -> None:
    pieces: Iterator[object]
    if isinstance(value, list) and len(value) > _CHUNK_ITEMS:
        pieces = (value[start : start + _CHUNK_ITEMS] for start in range(0, len(value), _CHUNK_ITEMS))
        opening, closing = "[", "]"
    elif isinstance(value, dict) and len(value) > _CHUNK_ITEMS and _has_text_keys(value):
        items = sorted(value.items())
        pieces = (dict(items[start : start + _CHUNK_ITEMS]) for start in range(0, len(items), _CHUNK_ITEMS))
        opening, closing = "{", "}"
    else:
        stream.write(_compact(value))
        return
    stream.write(opening)
    for index, piece in enumerate(pieces):
        text = _compact(piece)[1:-1]  # the piece's entries, without its own brackets
        stream.write(f",{text}" if index else text)
    stream.write(closing)
