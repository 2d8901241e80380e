"""Parsing hostile documents: every parser failure becomes the caller's one-line InputError."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from netaudit import docparse
from netaudit.inventory_json import InventoryError
from netaudit.typedread import InputError


class DocError(InputError):
    pass


def _json_error(data: bytes | str) -> str:
    with pytest.raises(DocError) as caught:
        docparse.parse_json(data, "a.json", DocError)
    message = str(caught.value)
    assert "\n" not in message
    return message


def _toml_error(text: str | bytes) -> str:
    with pytest.raises(DocError) as caught:
        docparse.parse_toml(text, "a.toml", DocError)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_parse_json_reads_text_and_bytes() -> None:
    assert docparse.parse_json('{"a": [1, "[[["]}', "a.json", DocError) == {"a": [1, "[[["]}
    assert docparse.parse_json(b'["\\u00e9"]', "a.json", DocError) == ["é"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("[" * 1000 + "]" * 1000, "nested deeper than 64 levels"),
        ("[" * 100_000, "nested deeper than 64 levels"),
        ('{"a":' * 65 + "1" + "}" * 65, "nested deeper than 64 levels"),
        ("1" * 5000, f"an integer longer than {sys.get_int_max_str_digits()} digits"),
        ('{"port": ' + "9" * 4301 + "}", "an integer longer than"),
        ("NaN", "NaN is not a JSON value"),
        ('{"timeout_s": Infinity}', "Infinity is not a JSON value"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        ("{not json", "Expecting property name"),
        ("", "Expecting value"),
    ],
)
def test_parse_json_refuses_with_one_line_naming_the_source(data: str | bytes, why: str) -> None:
    message = _json_error(data)
    assert message.startswith("a.json: not JSON: ")
    assert why in message


def test_json_depth_bound_is_exact() -> None:
    assert docparse.parse_json("[" * 64 + "]" * 64, "a.json", DocError) is not None
    assert "nested deeper" in _json_error("[" * 65 + "]" * 65)


@pytest.mark.parametrize(
    "text",
    [
        '["' + "[" * 200 + '"]',  # brackets inside a string do not nest
        '["\\\\", "' + "{" * 200 + '"]',  # an escaped backslash closes nothing
        '["\\"' + "[" * 200 + '"]',  # an escaped quote opens nothing
        '{"k' + "[" * 100 + '": "' + "]" * 100 + '"}',
    ],
)
def test_brackets_in_strings_do_not_count(text: str) -> None:
    assert docparse.json_depth(text.encode()) <= 2
    docparse.parse_json(text, "a.json", DocError)


def test_brackets_after_a_string_with_escapes_still_count() -> None:
    text = '["\\\\", ' + "[" * 70 + "]" * 70 + "]"
    assert docparse.json_depth(text.encode()) == 71
    assert "nested deeper" in _json_error(text)


def test_json_depth_matches_the_parsed_depth_on_random_documents() -> None:
    import random

    def depth(value: object) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(item) for item in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(item) for item in value), default=0)
        return 0

    rng = random.Random(7)
    tricky = ("[", "]", "{", "}", '"', "\\", '\\"', "x")

    def build(level: int) -> object:
        roll = rng.random()
        if level > 80 or roll < 0.3:
            return "".join(rng.choice(tricky) for _ in range(rng.randint(0, 4)))
        if roll < 0.65:
            return [build(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(tricky) + str(i): build(level + 1) for i in range(rng.randint(0, 3))}

    for _ in range(500):
        value = build(0)
        for _ in range(rng.randint(0, 70)):
            value = [value] if rng.random() < 0.5 else {"[": value}
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        measured, actual = docparse.json_depth(text.encode()), depth(value)
        # 0 means "too few brackets outside strings to matter"; otherwise the scan is exact.
        assert (measured > docparse.MAX_DEPTH) == (actual > docparse.MAX_DEPTH)
        assert measured in (0, actual)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a = " + "[" * 600 + "]" * 600, "nested deeper than 64 levels"),
        ("a = " + "{b = " * 100 + "1" + "}" * 100, "nested deeper than 64 levels"),
        (".".join(["a"] * 5000) + " = 1", "nested deeper than 64 levels"),  # dotted keys nest too
        ("[" + ".".join(["t"] * 200) + "]\nx = 1", "nested deeper than 64 levels"),
        ("a = " + "1" * 5000, f"an integer longer than {sys.get_int_max_str_digits()} digits"),
        (b"a = '\xff'", "not UTF-8 text (byte 5)"),
        ('title = "open', "Unterminated string"),
    ],
)
def test_parse_toml_refuses_with_one_line_naming_the_source(text: str | bytes, why: str) -> None:
    message = _toml_error(text)
    assert message.startswith("a.toml: not valid TOML: ")
    assert why in message


def test_toml_brackets_in_strings_and_comments_do_not_count() -> None:
    deep = "[" * 100
    text = (
        f'a = "{deep}"\nb = \'{deep}\'\nc = """\n{deep}\n"""\n'
        f"d = '''{deep}'''\n# {deep}\n[table]\ne = [[1], [2]]\n"
    )
    data = docparse.parse_toml(text, "a.toml", DocError)
    assert data["a"] == deep and data["table"] == {"e": [[1], [2]]}


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_recursion_guard_behind_the_prescan_leaves_the_interpreter_usable(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pre-scan that lets everything through, the parser itself recurses too deep...
    monkeypatch.setattr(docparse, "MAX_DEPTH", 10**9)
    parse = docparse.parse_json if kind == "json" else docparse.parse_toml
    prefix = "" if kind == "json" else "a = "
    for _ in range(3):
        with pytest.raises(DocError, match="nested deeper"):
            parse(prefix + "[" * 5000 + "]" * 5000, "a", DocError)
    # ...and the interpreter still parses and recurses normally afterwards.
    assert parse(prefix + "[" * 200 + "]" * 200, "a", DocError)


# load_inventory_documents: the --inventory reader the scan command uses -------------------


def test_inventories_single_bundle_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"host": "a"}')
    (tmp_path / "bundle.json").write_text('[{"host": "b"}, {"host": "c"}]')
    loaded = docparse.load_inventory_documents(
        [str(tmp_path / "one.json"), str(tmp_path / "bundle.json"), "-"],
        io.StringIO('{"host": "d"}'),
        1 << 20,
    )
    assert loaded == [
        (str(tmp_path / "one.json"), {"host": "a"}),
        (f"{tmp_path / 'bundle.json'}[0]", {"host": "b"}),
        (f"{tmp_path / 'bundle.json'}[1]", {"host": "c"}),
        ("<stdin>", {"host": "d"}),
    ]


def _inventory_error(paths: list[str], limit_bytes: int = 1 << 20, stdin: str = "") -> str:
    with pytest.raises(InventoryError) as caught:
        docparse.load_inventory_documents(paths, io.StringIO(stdin), limit_bytes)
    return str(caught.value)


def test_inventory_errors_name_the_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_text(" " * 2048 + "{}")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 1000 + "]" * 1000)
    assert (
        _inventory_error([str(tmp_path / "none.json")])
        == f"{tmp_path}/none.json: cannot read: No such file or directory"
    )
    assert _inventory_error([str(fifo)]) == f"{fifo}: cannot read: a FIFO, not a regular file"
    assert _inventory_error(["/dev/zero"]) == "/dev/zero: cannot read: a character device, not a regular file"
    assert _inventory_error([str(tmp_path)]) == f"{tmp_path}: cannot read: a directory, not a regular file"
    assert _inventory_error([str(big)], 1024) == f"{big}: cannot read: larger than 1024 bytes"
    assert _inventory_error([str(deep)]) == f"{deep}: not JSON: nested deeper than 64 levels"
    assert _inventory_error(["-"], stdin="[" * 70) == "<stdin>: not JSON: nested deeper than 64 levels"
    assert _inventory_error(["-", "-"], stdin="{}") == "-: standard input is given more than once"
