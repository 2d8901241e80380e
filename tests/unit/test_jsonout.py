"""Streaming JSON writes exactly what the one-shot encoder returns, chunk boundaries included."""

from __future__ import annotations

import io
import json

import pytest

from netaudit import jsonout


def _document(listeners: int, processes: int) -> dict[str, object]:
    return {
        "schema_version": 2,
        "host": "gpu-01",
        "gaps": ["1 listeners have no visible owner"],
        "listeners": [
            {
                "port": 20000 + i,
                "pid": 100 + i % 7,
                "evidence": [f"thread gloo_tcp_loop x{i}"],
                "v6only": None,
                "backlog": 4096,
                "address": "::1" if i % 4 == 3 else "127.0.0.1",
                "score": i / 3,
            }
            for i in range(listeners)
        ],
        "processes": {
            str(100 + i): {"cmdline": ["python3", "tr\u00e4in.py", 'say "hi"\n'], "name": f"rank{i}"}
            for i in range(processes)
        },
        "namespaces": [{"inode": 4026531840, "names": []}],
        "empty": [],
    }


@pytest.mark.parametrize(
    ("listeners", "processes"),
    [(1001, 3), (1024, 600), (2049, 1025), (5, 2)],
    ids=["list", "both", "odd", "small"],
)
def test_written_text_is_what_dumps_returns(listeners: int, processes: int) -> None:
    document = _document(listeners, processes)
    stream = io.StringIO()

    jsonout.write(document, listeners, stream)

    assert stream.getvalue() == jsonout.dumps(document, listeners)
    assert json.loads(stream.getvalue()) == document


def test_compact_beyond_the_threshold_and_indented_below() -> None:
    assert jsonout.dumps({"b": [1], "a": None}, 2000) == '{"a":null,"b":[1]}\n'
    assert jsonout.dumps({"b": [1], "a": None}, 2) == '{\n  "a": null,\n  "b": [\n    1\n  ]\n}\n'
