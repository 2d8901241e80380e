"""Parsing documents that arrive from outside (inventories, configs, baselines, reports,
signatures) into plain data, with every way the parser can fail turned into the caller's
one-line ``InputError``.

``json.loads`` and ``tomllib.loads`` raise more than their DecodeErrors: RecursionError for
nesting about 1,000 (JSON) or 500 (TOML) deep, ValueError for an integer past Python's
4,300-digit limit, UnicodeDecodeError for bytes that are not UTF-8. A hostile inventory
turned each into an internal error (exit 4). No netaudit document nests deeper than about 8
levels, so anything past ``MAX_DEPTH`` is refused by a pre-scan before the parser recurses;
RecursionError is still caught behind it, as a second guard.
"""

from __future__ import annotations

import codecs
import json
import re
import sys
import tomllib
from array import array
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import IO, NoReturn

from netaudit import safeio
from netaudit.typedread import InputError

MAX_DEPTH = 64
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
_SCAN_CHUNK = 1 << 20

_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'"[]{}')
# '[' and '{' become 1, ']' and '}' become -1 (255 as a signed char).
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")

# What TOML brackets cannot nest inside: multi-line and single-line strings, basic and
# literal, and comments. Unterminated ones run to the end of the text or line. A heuristic
# bound, not a parser: tomllib still decides what is valid, and RecursionError is caught.
_TOML_SKIP = re.compile(
    r'"""(?:[^"\\]|\\[\s\S]|"(?!""))*(?:"""|\Z)'
    r"|'''[\s\S]*?(?:'''|\Z)"
    r'|"(?:[^"\\\n]|\\.)*"?'
    r"|'[^'\n]*'?"
    r"|#[^\n]*"
)


class _NotJsonConstant(ValueError):
    pass


def _reject_constant(name: str) -> NoReturn:
    # Python accepts NaN and Infinity; JSON does not, and a NaN timeout never expires.
    raise _NotJsonConstant(f"{name} is not a JSON value")


def _bracket_depth(brackets: bytes) -> int:
    """The deepest nesting of a text of only []{} (closing ones may be unbalanced), stopping
    early once past MAX_DEPTH."""
    if brackets.count(b"[") + brackets.count(b"{") <= MAX_DEPTH:
        return 0  # cannot nest deeper than it opens
    steps = brackets.translate(_STEPS)
    depth = deepest = 0
    for start in range(0, len(steps), _SCAN_CHUNK):
        chunk = steps[start : start + _SCAN_CHUNK]
        peak = max(accumulate(array("b", chunk), initial=depth))
        deepest = max(deepest, peak)
        if deepest > MAX_DEPTH:
            break
        depth += chunk.count(1) - chunk.count(255)
    return deepest


def json_depth(raw: bytes) -> int:
    """How deep the arrays and objects of the JSON text ``raw`` nest (0 when at most
    MAX_DEPTH brackets open in all, whatever their nesting)."""
    # Brackets inside strings do not nest. Backslashes pair from the left, so dropping each
    # escaped backslash and then each escaped quote leaves exactly the quotes that open or
    # close strings; keeping only quotes and brackets, every odd piece between quotes is a
    # string's content. All at C speed: a regex over the text cost half of json.loads again.
    # A document without a backslash (a node's inventory, mostly) skips the two copies.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in raw else raw
    structure = unescaped.translate(None, _NOT_STRUCTURE)
    if structure.count(b"[") + structure.count(b"{") <= MAX_DEPTH:
        return 0
    # Two adjacent quotes end one string and open the next (or hold an empty one): dropping
    # them keeps every other quote's parity, and leaves few pieces to split in a real document.
    structure = structure.replace(b'""', b"")
    return _bracket_depth(b"".join(structure.split(b'"')[::2]))


def toml_bracket_depth(text: str) -> int:
    """How deep the inline arrays and tables (and table headers) of TOML ``text`` nest."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    stripped = _TOML_SKIP.sub("", text).encode("utf-8", "surrogatepass")
    return _bracket_depth(stripped.translate(None, _NOT_BRACKETS))


def _data_depth(data: object) -> int:
    """The nesting of parsed data, iteratively (dotted TOML keys nest without brackets)."""
    deepest = 0
    pending: list[tuple[object, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _number_message(error: ValueError) -> str | None:
    if "integer string conversion" in str(error):
        return f"an integer longer than {sys.get_int_max_str_digits()} digits"
    return None


def parse_json(data: bytes | bytearray | str, source: str, error: type[InputError]) -> object:
    """The JSON document ``data`` (UTF-8 bytes or text) as Python data.

    Raises ``error`` with one line ``{source}: not JSON: {why}`` for anything the parser
    refuses, and for nesting deeper than MAX_DEPTH, integers past Python's digit limit,
    NaN/Infinity and bytes that are not UTF-8.
    """
    return _loads(_checked_text(data, source, error), source, error)


def _checked_text(data: bytes | bytearray | str, source: str, error: type[InputError]) -> str:
    """``data`` as text, refused (as parse_json says) when it is not UTF-8 or nests too deep."""
    if isinstance(data, str):
        text = data
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as problem:
            raise error(f"{source}: not JSON: not UTF-8 text (byte {problem.start})") from None
    if json_depth(raw) > MAX_DEPTH:
        raise error(f"{source}: not JSON: {_TOO_DEEP}")
    return text


def _loads(text: str, source: str, error: type[InputError]) -> object:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as problem:
        raise error(f"{source}: not JSON: {problem}") from None
    except RecursionError:
        raise error(f"{source}: not JSON: {_TOO_DEEP}") from None
    except ValueError as problem:  # int digits, NaN
        why = _number_message(problem) or str(problem).splitlines()[0]
        raise error(f"{source}: not JSON: {why}") from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # what the json module skips between values
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _skip(text: str, position: int) -> int:
    """The position of the first character at or after ``position`` that is not whitespace."""
    found = _WHITESPACE.match(text, position)
    return found.end() if found else position


def _elements(text: str, start: int, source: str, error: type[InputError]) -> Iterator[object]:
    """The values of the JSON array that opens at ``text[start]``, decoded one at a time: a
    bundle of 4,096 inventories parsed whole held gigabytes until its last one was read.

    Whatever the array gets wrong, past the values already given, is reported by parsing
    the whole text as parse_json does: the same error, in the same words."""
    skip = _skip
    position = skip(text, start + 1)
    if not text.startswith("]", position):
        while True:
            try:
                value, position = _DECODER.raw_decode(text, position)
            except (ValueError, RecursionError):
                break
            yield value
            position = skip(text, position)
            if text.startswith(",", position):
                position = skip(text, position + 1)
                continue
            if text.startswith("]", position) and skip(text, position + 1) == len(text):
                return
            break
    elif skip(text, position + 1) == len(text):
        return
    _loads(text, source, error)  # raises: the array is not well formed
    raise error(f"{source}: not JSON: a list of documents that does not end where it should")


def parse_toml(text: str | bytes, source: str, error: type[InputError]) -> dict[str, object]:
    """The TOML document ``text`` as a dict.

    Raises ``error`` with one line ``{source}: not valid TOML: {why}`` for anything tomllib
    refuses, and for nesting deeper than MAX_DEPTH (brackets or dotted keys), integers past
    Python's digit limit and bytes that are not UTF-8.
    """
    if not isinstance(text, str):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as problem:
            raise error(f"{source}: not valid TOML: not UTF-8 text (byte {problem.start})") from None
    if toml_bracket_depth(text) > MAX_DEPTH:
        raise error(f"{source}: not valid TOML: {_TOO_DEEP}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as problem:
        raise error(f"{source}: not valid TOML: {problem}") from None
    except RecursionError:
        # Only tomllib's own pure-Python frames were on the stack above us; unwinding them
        # leaves no state behind. The pre-scan makes this a second guard.
        raise error(f"{source}: not valid TOML: {_TOO_DEEP}") from None
    except ValueError as problem:  # int digits; a date tomllib matched but cannot build
        why = _number_message(problem) or str(problem).splitlines()[0]
        raise error(f"{source}: not valid TOML: {why}") from None
    if _data_depth(data) > MAX_DEPTH:
        raise error(f"{source}: not valid TOML: {_TOO_DEEP}")
    return data


def read_error(path: str, problem: OSError, error: type[InputError]) -> InputError:
    """The one-line error for a document that could not be read."""
    return error(f"{path}: cannot read: {problem.strerror or problem}")


def load_inventory_documents(
    paths: Sequence[str], stdin: IO[str] | IO[bytes], limit_bytes: int
) -> list[tuple[str, object]]:
    """Every document of ``iter_inventory_documents``, in a list."""
    return list(iter_inventory_documents(paths, stdin, limit_bytes))


_UTF8_CHUNK = 1 << 24


def _is_clean(raw: bytes) -> bool:
    """What _checked_text checks (UTF-8, depth), without holding the text: a 4,096-node
    bundle is 255 MB of bytes, and its text as much again. False: let _checked_text say why."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for start in range(0, len(raw), _UTF8_CHUNK):
            decoder.decode(raw[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return json_depth(raw) <= MAX_DEPTH


def _raw_elements(raw: bytes) -> list[memoryview] | None:
    """The elements of a bundle, each its own JSON text (msgspec's Raw: found, not parsed), or
    None for anything msgspec will not split cleanly: the element-by-element parse below then
    gives the error it always gave."""
    import msgspec

    try:
        elements = msgspec.json.decode(raw, type=list[msgspec.Raw])
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    return [memoryview(element) for element in elements]


def iter_inventory_documents(
    paths: Sequence[str], stdin: IO[str] | IO[bytes], limit_bytes: int, unparsed: bool = False
) -> Iterator[tuple[str, object]]:
    """(label, parsed JSON) of every --inventory file, in order; '-' reads ``stdin``. With
    ``unparsed``, each document comes as its bytes instead (a bundle's elements too, once its
    text passed the same checks), for inventory_json.from_text.

    A file holding a JSON list is a bundle (what the central run of a fan-out sends its
    scanning peers): each element is its own document, labelled ``name[index]``. Every file
    is read through safeio.read_document (regular files only, at most ``limit_bytes``).
    Pass each pair to ``inventory_json.from_json(document, label)``.

    One document is parsed at a time, as the caller asks for it, a bundle's too (after its
    text is checked whole): 4,096 parsed inventories held at once took gigabytes that their
    validated form does not need. A bundle whose list is malformed after some documents has
    already given those; its error is the one json.loads gives for the whole text.

    Raises:
        InventoryError: a file that cannot be read, is not a regular file, is larger than
            ``limit_bytes`` or is not JSON; '-' given twice (stdin is read once).
    """
    # Here, not at the top: config and the gate's imports stay free of the inventory reader.
    from netaudit.inventory_json import InventoryError

    has_read_stdin = False
    for path in paths:
        name = "<stdin>" if path == "-" else path
        try:
            if path == "-":
                if has_read_stdin:
                    raise InventoryError("-: standard input is given more than once")
                has_read_stdin = True
                raw = safeio.read_stream(stdin, limit_bytes)
            else:
                raw = safeio.read_document(path, limit_bytes)
        except OSError as problem:
            raise read_error(name, problem, InventoryError) from None
        is_bundle = raw.lstrip(b" \t\n\r").startswith(b"[")
        if unparsed and not is_bundle:
            yield name, raw  # one document's bytes: inventory_json.from_text reads them
            del raw
            continue
        elements = _raw_elements(raw) if unparsed and _is_clean(raw) else None
        if elements is not None:  # each element's bytes, for inventory_json.from_text
            for index, element in enumerate(elements):
                yield f"{name}[{index}]", bytes(element)
            del raw, elements
            continue
        text = _checked_text(raw, name, InventoryError)
        del raw
        start = _skip(text, 0)
        if text.startswith("[", start):
            for index, document in enumerate(_elements(text, start, name, InventoryError)):
                yield f"{name}[{index}]", document
        else:
            yield name, _loads(text, name, InventoryError)
        del text
