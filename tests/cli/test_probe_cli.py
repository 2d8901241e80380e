"""`netaudit probe` exit statuses and streams: stdout carries the report alone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import jsonschema
import pytest

from tests.cli.helpers import run

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "inventory.schema.json").read_text())


def test_json_on_a_pipe_validates_against_the_schema() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run("probe")  # not a tty: json by default
    document = result.json()
    jsonschema.validate(document, SCHEMA)
    mine = [item for item in document["listeners"] if item["port"] == port]
    assert mine and mine[0]["pid"] == os.getpid() and mine[0]["service"] is None
    assert result.status in (0, 3)
    assert (result.status == 3) == bool(document["gaps"])


def test_table_on_a_terminal() -> None:
    result = run("probe", tty=True)
    assert result.stdout.startswith("netaudit probe · host ")
    assert "only `netaudit scan` from a peer proves reachability" in result.stdout
    assert result.stderr == ""


def test_intended_subnet_reaches_the_hints() -> None:
    result = run("probe", "--format", "json", "--intended-subnet", "198.18.0.0/15")
    assert result.json()["intended_subnets"] == ["198.18.0.0/15"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("probe", "--bogus"), "unrecognized arguments: --bogus"),
        (("probe", "--format", "xml"), "invalid choice: 'xml'"),
        (("probe", "--intended-subnet", "10.0.0.0/33"), "--intended-subnet: '10.0.0.0/33' is not"),
        (
            ("probe", "--config", "/nonexistent/netaudit.toml"),
            "/nonexistent/netaudit.toml: cannot read",
        ),
        (("probe", "--probes-dir", "/nonexistent"), "/nonexistent: not a directory"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        ((), "a command is required"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: tuple[str, ...], message: str) -> None:
    result = run(*argv)
    assert result.status == 2
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("netaudit: error: ")
    assert "Traceback" not in result.stderr


def test_malformed_config_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('intended_subnets = ["198.18.0.0/24"]\n[scan]\nrate_per_s = "fast"\n')
    result = run("probe", "--config", str(config))
    assert result.status == 2
    assert f"{config}: scan.rate_per_s: expected a number, got string" in result.stderr


def test_malformed_signature_directory(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("schema = 1\nid = 'Bad Id'\n")
    result = run("probe", "--probes-dir", str(tmp_path))
    assert result.status == 2
    assert "broken.toml: id: expected lowercase letters" in result.stderr


def test_help_and_version_exit_0() -> None:
    assert run("--help").status == 0
    help_text = run("probe", "--help")
    assert help_text.status == 0
    assert run("--version").status == 0


def test_an_internal_error_is_exit_4_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from netaudit import inventory

    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(inventory, "collect", broken)
    result = run("probe")
    assert result.status == 4
    assert "internal error: RuntimeError: boom" in result.stderr
    assert "Traceback" not in result.stderr
    debug = run("probe", "--debug")
    assert "Traceback" in debug.stderr
