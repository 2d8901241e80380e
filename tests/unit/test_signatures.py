"""Every shipped signature loads; malformed ones are refused with file and field; the rule
registry and its docs pages are complete (kube-hunter's registry test, in our terms)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netaudit import signatures
from netaudit.rules import RULES
from netaudit.signatures import SignatureError

ROOT = Path(__file__).parents[2]
VALID = """\
schema = 1
id = "mine"
service = "mine"
title = "My service"
risk = "high"
rule_id = "NA007"
connect_safe = false
do_not_touch = false
handshake = "none"
fix = "bind it to loopback"

[[rules]]
variant = "x"
confidence = "low"
priority = 5
[rules.when]
comm = ["myserver"]
"""


def test_every_shipped_signature_loads_and_names_a_known_rule() -> None:
    loaded = signatures.load()
    assert {s.id for s in loaded} >= {
        "tcpstore", "c10d-gloo", "c10d-nccl", "rpc-tensorpipe", "c10d-workerserver",
        "elastic-agent", "torch-unknown",
    }  # fmt: skip
    for signature in loaded:
        assert signature.rule_id in RULES, signature.path


def test_every_probe_file_is_shipped_as_package_data() -> None:
    on_disk = {path.name for path in (ROOT / "probes").glob("*.toml")}
    assert {Path(s.path).name for s in signatures.load()} == on_disk


def test_rule_registry_and_docs_pages_match() -> None:
    pages = {path.stem for path in (ROOT / "docs" / "rules").glob("NA*.md")}
    assert pages == set(RULES)
    for rule_id in RULES:
        text = (ROOT / "docs" / "rules" / f"{rule_id}.md").read_text()
        assert text.startswith(f"# {rule_id}"), rule_id
        assert "## Fix" in text, rule_id


def test_tensorpipe_can_never_be_touched() -> None:
    rpc = next(s for s in signatures.load() if s.id == "rpc-tensorpipe")
    assert rpc.is_do_not_touch and not rpc.is_connect_safe and rpc.handshake is None


def test_admin_directory_adds_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(VALID)
    (tmp_path / "tcpstore.toml").write_text(VALID.replace('id = "mine"', 'id = "tcpstore"'))
    loaded = {s.id: s for s in signatures.load((str(tmp_path),))}
    assert loaded["mine"].title == "My service"
    assert loaded["tcpstore"].service == "mine"  # the admin's file replaced the shipped one


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('schema = 1', 'schema = 2'), "schema: this netaudit reads schema 1, not 2"),
        (('risk = "high"', 'risk = "severe"'), "risk: expected one of"),
        (('rule_id = "NA007"', 'rule_id = "X1"'), "rule_id: expected NA followed by three digits"),
        (('handshake = "none"', 'handshake = "exploit"'), "handshake: expected one of"),
        (('do_not_touch = false', 'do_not_touch = true\nextra = 1'), "extra: unknown key"),
        (('connect_safe = false', 'connect_safe = true'), None),
        (('comm = ["myserver"]', 'comm = "myserver"'), "rules[0].when.comm: expected a list"),
        (('comm = ["myserver"]', 'cmdline = "("'), "rules[0].when.cmdline: invalid regular expression"),
        (('comm = ["myserver"]', 'bind = ["everywhere"]'), "rules[0].when.bind: unknown scope"),
        (('comm = ["myserver"]', 'port_from = ["env:lower"]'), "rules[0].when.port_from"),
        (('comm = ["myserver"]', 'any = [{ any = [] }]'), "rules[0].when.any[0].any: unknown key"),
        (('priority = 5', 'priority = "5"'), "rules[0].priority: expected an integer"),
        (('confidence = "low"', 'confidence = "certain"'), "rules[0].confidence"),
        (('[rules.when]', '[rules.when]\nports = [0]'), "rules[0].when.ports: expected a list of integers in 1..65535"),
        (('title = "My service"', 'title = "My service'), "not valid TOML"),
    ],
)  # fmt: skip
def test_malformed_signatures_are_refused_naming_file_and_field(
    edit: tuple[str, str], message: str | None
) -> None:
    text = VALID.replace(*edit)
    if message is None:
        signatures.parse(text, "mine.toml")  # valid: connect_safe alone is fine
        return
    with pytest.raises(SignatureError) as error:
        signatures.parse(text, "mine.toml")
    assert str(error.value).startswith("mine.toml: ")
    assert message in str(error.value)


def test_do_not_touch_cannot_be_connect_safe() -> None:
    text = VALID.replace("do_not_touch = false", "do_not_touch = true").replace(
        "connect_safe = false", "connect_safe = true"
    )
    with pytest.raises(SignatureError, match="do_not_touch"):
        signatures.parse(text, "mine.toml")


def test_duplicate_ids_in_one_directory_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(VALID)
    (tmp_path / "b.toml").write_text(VALID)
    with pytest.raises(SignatureError, match=r"b\.toml: id: 'mine' is also in"):
        signatures.load((str(tmp_path),))


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match="not a directory"):
        signatures.load((str(tmp_path / "nope"),))
