"""The msgspec fast path (netaudit.inventory_fast) against the hand-written reader.

For every inventory the tests can build, as every writer prints it and in both schemas, the
fast path reads the model the hand-written reader reads, sharing what it shares. For hostile
documents (the fuzz corpus's generator, and cases made by hand) it gives that model or
declines, never a model the reader would refuse; and inventory_json.from_text gives exactly
what from_json over docparse.parse_json gives: the same model or the same one-line error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from netaudit import docparse, inventory, inventory_fast, inventory_json, jsonout, signatures
from netaudit.inventory_json import InventoryError
from netaudit.models import Inventory, JobIdentity, Listener
from tests.cli import inventories as cli_inventories
from tests.cli import test_hostile_inputs as hostile
from tests.unit.test_golden_reports import small_inventory
from tests.unit.test_inventory_json import sample, set_at
from tests.unit.test_inventory_schema2 import as_schema_1, shared_sample

REPO = Path(__file__).resolve().parents[2]
SOURCE = "node.json"


# The two readers -------------------------------------------------------------------------------


def by_hand(raw: bytes | str) -> Inventory | str:
    """What the hand-written reader makes of ``raw``: the model, or its one-line error."""
    try:
        return inventory_json.from_json(docparse.parse_json(raw, SOURCE, InventoryError), SOURCE)
    except InventoryError as error:
        return str(error)


def by_from_text(raw: bytes | str) -> Inventory | str:
    try:
        return inventory_json.from_text(raw, SOURCE)
    except InventoryError as error:
        return str(error)


def _groups(listeners: tuple[Listener, ...], part: str) -> list[list[int]]:
    """Indexes of listeners holding one object as ``part`` (None aside), in groups of 2+."""
    held: dict[int, list[int]] = {}
    for index, listener in enumerate(listeners):
        value = getattr(listener, part)
        if value is not None:
            held.setdefault(id(value), []).append(index)
    return [indexes for indexes in held.values() if len(indexes) > 1]


def assert_shares_as_the_reader_does(fast: Inventory, slow: Inventory) -> None:
    """What the reader shares inside one document the fast path shares too (intake.Sharing
    finds a process once per object), and process strings are interned as the reader does."""
    for part in ("process", "classification", "exposure"):
        for indexes in _groups(slow.listeners, part):
            assert len({id(getattr(fast.listeners[i], part)) for i in indexes}) == 1, (part, indexes)
    for listener in fast.listeners:
        process = listener.process
        if process is None:
            continue
        texts = [process.name, *process.cmdline, *process.libraries]
        texts += [text for pair in process.environment for text in pair]
        texts += [name for name, _count in process.threads]
        assert all(text is sys.intern(text) for text in texts)


def compare(raw: bytes | str) -> bool:
    """Both readers on ``raw``; True when the fast path read it (False: it declined)."""
    expected = by_hand(raw)
    found = inventory_fast.decode(raw)
    if found is not None:
        assert isinstance(expected, Inventory), f"the fast path read what the reader refuses: {expected}"
        assert found == expected
        assert_shares_as_the_reader_does(found, expected)
    assert by_from_text(raw) == expected
    return found is not None


# Valid inventories: every builder the tests have ------------------------------------------------


@cache
def _bench() -> ModuleType:
    """bench/cluster_bench.py: its node_inventory is what the 4,096-node benchmark reads."""
    spec = importlib.util.spec_from_file_location("cluster_bench", REPO / "bench" / "cluster_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_nodes() -> list[Inventory]:
    by_id = {signature.id: signature for signature in signatures.load()}
    moment = datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC)
    # 0: docker bridge, debug WorkerServers; 3: a second rail; 7: no IPv6; 9: an RPC job.
    return [_bench().node_inventory(i, 4096, by_id, Counter(), moment) for i in (0, 3, 7, 9, 17)]


def _this_machine() -> Inventory:
    """What `netaudit probe` finds on the machine running the tests."""
    return inventory.collect(signatures.load(), is_own_namespace_only=True)


BUILDERS: dict[str, Callable[[], list[Inventory]]] = {
    "sample": lambda: [sample()],
    "shared-sample": lambda: [shared_sample()],
    "cli-nodes": lambda: [cli_inventories.node("node01", 1), cli_inventories.node("node02", 2)],
    "golden-small": lambda: [small_inventory()],
    "bench-cluster": _bench_nodes,
    "probe-here": lambda: [_this_machine()],
}


def _texts(built: Inventory) -> Iterator[tuple[str, bytes | str]]:
    """Every way a writer prints ``built``: the probe's JSON, compact JSON, schema 1, text."""
    document = inventory_json.to_json(built)
    yield "probe", jsonout.dumps(document, len(built.listeners)).encode()
    yield "compact", json.dumps(document, separators=(",", ":")).encode()
    yield "str", json.dumps(document)
    yield "schema-1", json.dumps(as_schema_1(json.loads(json.dumps(document)))).encode()


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_every_inventory_the_tests_build_reads_the_same_both_ways(builder: str) -> None:
    for built in BUILDERS[builder]():
        for how, raw in _texts(built):
            # The fast path must read what the writers print: a decline would be silent and slow.
            assert compare(raw), f"{builder} {built.host} ({how}): the fast path declined"


def test_the_job_fields_are_the_models_in_its_order() -> None:
    # _job() builds JobIdentity positionally, in this order.
    assert inventory_fast._Job.__struct_fields__ == JobIdentity.__slots__


# Hostile documents ---------------------------------------------------------------------------------


def test_the_fuzz_corpus_reads_the_same_or_is_declined() -> None:
    # The inventories of the hostile-input test's corpus (a mutated schema 2 sample and the
    # hand-made cases: deep nesting, 5,000-digit integers, NaN, BOM, UTF-16, bundles, ...).
    cases = [case for case in hostile.generate(hostile.CASES, hostile.SEED) if case.role == "inventory"]
    raws = [case.content for case in cases if case.content is not None]
    read = [compare(raw) for raw in raws]
    assert len(raws) > 100
    assert any(read)


def _mutants(document: dict[str, Any], seed: int, count: int) -> Iterator[bytes]:
    """The fuzz corpus's own mutations (data and bytes), of ``document``."""
    rng = random.Random(seed)
    text = json.dumps(document).encode()
    for _ in range(count):
        if rng.random() < 0.7:
            yield json.dumps(hostile._mutate_data(rng, document)).encode()
        else:
            yield hostile._mutate_bytes(rng, text)


@pytest.mark.parametrize("schema", [1, 2])
def test_mutations_of_a_richer_inventory_read_the_same_or_are_declined(schema: int) -> None:
    # shared_sample has what the fuzz corpus's sample lacks: two listeners of one process, a
    # pid whose facts are null, a listener without a pid.
    document = json.loads(json.dumps(inventory_json.to_json(shared_sample())))
    if schema == 1:
        document = as_schema_1(document)
    outcomes = Counter()
    for raw in _mutants(document, seed=schema, count=400):
        valid = isinstance(by_hand(raw), Inventory)
        outcomes[(valid, compare(raw))] += 1
    # Mutants the reader accepts (a string for a string, an optional key left out) are read
    # by the fast path too, nearly all: declining them would only be slow.
    accepted, declined = outcomes[(True, True)], outcomes[(True, False)]
    assert accepted >= 10
    assert declined <= accepted // 4, outcomes


def _base() -> str:
    return json.dumps(inventory_json.to_json(shared_sample()))


def _edit(path: tuple[Any, ...], value: Any, schema: int = 2) -> str:
    document = json.loads(_base())
    if schema == 1:
        document = as_schema_1(document)
    set_at(document, path, value)
    return json.dumps(document)


def _schema_1(edit: Callable[[dict[str, Any]], object] = lambda document: None) -> str:
    document = as_schema_1(json.loads(_base()))
    edit(document)
    return json.dumps(document)


def _spliced(old: str, new: str, text: str | None = None) -> bytes:
    """The base text with its first ``old`` replaced by ``new`` (duplicate keys, raw bytes)."""
    text = _base() if text is None else text
    assert old in text
    return text.replace(old, new, 1).encode("utf-8", "surrogatepass")


HOST = '"host": "node01"'
PORT = '"port": 29500'
SCHEMA = '"schema_version": 2'
FACTS = '"processes": {"100": '
NAME = '"name": "pt_elastic"'

# (case, the text, the reader accepts it, the fast path reads it)
HAND_MADE: list[tuple[str, Callable[[], bytes | str], bool, bool]] = [
    ("base", _base, True, True),
    # Duplicate keys: json.loads keeps the last, and so does msgspec, or it declines.
    ("dup-host-last-valid", lambda: _spliced(HOST, '"host": "../x", ' + HOST), True, True),
    ("dup-host-last-invalid", lambda: _spliced(HOST, HOST + ', "host": "../x"'), False, False),
    ("dup-port-last-valid", lambda: _spliced(PORT, '"port": 0, ' + PORT), True, False),
    ("dup-port-last-invalid", lambda: _spliced(PORT, PORT + ', "port": 0'), False, False),
    ("dup-schema-version", lambda: _spliced(SCHEMA, '"schema_version": 1, ' + SCHEMA), True, False),
    ("dup-schema-version-last-1", lambda: _spliced(SCHEMA, SCHEMA + ', "schema_version": 1'), False, False),
    ("dup-pid-facts-then-null", lambda: _spliced('"4242": null', '"4242": null, "100": null'), True, True),
    ("dup-pid-null-then-facts", lambda: _spliced(FACTS, FACTS + 'null, "100": '), True, True),
    ("dup-env-name", lambda: _spliced('"SLURM_JOB_ID": "4242"', '"SLURM_JOB_ID": "1", "SLURM_JOB_ID": "4242"'),
     True, True),
    # Integers: unbounded in the reader where msgspec's bounds end at 64 bits.
    ("inode-u64-max", lambda: _edit(("listeners", 0, "inode"), 2**64 - 1), True, False),
    ("inode-past-u64", lambda: _edit(("listeners", 0, "inode"), 2**64), False, False),
    ("inode-i64-max", lambda: _edit(("listeners", 0, "inode"), 2**63 - 1), True, True),
    ("port-huge", lambda: _edit(("listeners", 0, "port"), 10**30), False, False),
    ("thread-count-huge", lambda: _edit(("processes", "100", "threads", "pt_elastic"), 10**30), True, False),
    ("thread-count-negative", lambda: _edit(("processes", "100", "threads", "pt_elastic"), -1), True, True),
    ("rank-5000-digits", lambda: _spliced('"rank": 0', '"rank": ' + "9" * 5000), False, False),
    ("rank-4300-digits", lambda: _spliced('"rank": 0', '"rank": ' + "9" * 4300), True, False),
    ("port-float", lambda: _spliced(PORT, '"port": 29500.0'), False, False),
    ("port-exponent", lambda: _spliced(PORT, '"port": 2.95e4'), False, False),
    ("port-true", lambda: _spliced(PORT, '"port": true'), False, False),
    ("pid-minus-zero", lambda: _spliced('"pid": 100', '"pid": -0'), False, False),
    ("is-complete-1", lambda: _edit(("is_complete",), 1), False, False),
    ("nan", lambda: _spliced(PORT, '"port": NaN'), False, False),
    ("infinity", lambda: _spliced(PORT, '"port": Infinity'), False, False),
    # Nesting: the reader takes any list as a schema 1 listener's cmdline; 100 deep is refused.
    ("schema-1-cmdline-nested", lambda: _edit(("listeners", 0, "cmdline"), [[["python3"]]], schema=1),
     True, False),
    ("schema-1-cmdline-100-deep", lambda: _spliced('"cmdline": ["python3", "torchrun", "train.py"]',
                                                   '"cmdline": ' + "[" * 100 + "]" * 100, _schema_1()),
     False, False),
    ("environment-deep", lambda: _edit(("processes", "100", "environment", "X"), json.loads("[" * 80 + "]" * 80)),
     False, False),
    # Text: what json.loads and msgspec might decode differently.
    ("lone-surrogate", lambda: _spliced(NAME, '"name": "pt\\ud800"'), True, False),
    ("surrogate-pair", lambda: _spliced(NAME, '"name": "pt\\ud83d\\ude00"'), True, True),
    ("escaped-nul", lambda: _spliced(NAME, '"name": "pt\\u0000"'), True, True),
    ("raw-control-character", lambda: _spliced(NAME, '"name": "pt\x01"'), False, False),
    ("raw-delete", lambda: _spliced(NAME, '"name": "pt\x7f"'), True, True),
    ("non-ascii-str", lambda: _spliced(NAME, '"name": "pt_\u00e9l\u00e4stic"').decode(), True, True),
    ("bom", lambda: b"\xef\xbb\xbf" + _base().encode(), False, False),
    ("not-utf8", lambda: _spliced(NAME, '"name": "pt"').replace(b'"pt"', b'"pt\xff"'), False, False),
    ("utf8-surrogate", lambda: _spliced(NAME, '"name": "pt"').replace(b'"pt"', b'"pt\xed\xa0\x80"'), False,
     False),
    ("overlong-utf8", lambda: _spliced(NAME, '"name": "pt"').replace(b'"pt"', b'"pt\xc0\xaf"'), False, False),
    ("past-u10ffff", lambda: _spliced(NAME, '"name": "pt"').replace(b'"pt"', b'"pt\xf4\x90\x80\x80"'), False,
     False),
    ("utf16", lambda: _base().encode("utf-16"), False, False),
    ("str-lone-surrogate", lambda: _base().replace("pt_elastic", "pt\ud800", 1), True, False),
    # Framing.
    ("trailing-garbage", lambda: _base() + " x", False, False),
    ("trailing-whitespace", lambda: _base() + " \n\t\r", True, True),
    ("leading-whitespace", lambda: "\n " + _base(), True, True),
    ("form-feed", lambda: "\f" + _base(), False, False),
    ("empty", lambda: b"", False, False),
    ("bundle", lambda: "[" + _base() + "]", False, False),
    ("null", lambda: b"null", False, False),
    # Fields.
    ("schema-version-3", lambda: _edit(("schema_version",), 3), False, False),
    ("schema-version-text", lambda: _edit(("schema_version",), "2"), False, False),
    ("kind-foreign", lambda: _edit(("kind",), "netaudit.report"), False, False),
    ("unknown-top-key", lambda: _edit(("extra",), 1), False, False),
    ("unknown-listener-key", lambda: _edit(("listeners", 0, "extra"), 1), False, False),
    ("processes-key-0100", lambda: _spliced('"100": {', '"0100": {'), False, False),
    ("schema-2-with-schema-1-facts", lambda: _edit(("listeners", 0, "process"), None), False, False),
    ("schema-1-processes", lambda: _edit(("processes",), {}, schema=1), False, False),
    ("time-with-offset", lambda: _edit(("collected_at",), "2026-11-25T13:00:00+01:00"), True, True),
    ("time-without-zone", lambda: _edit(("collected_at",), "2026-11-25T12:00:00"), False, False),
    ("time-not-a-time", lambda: _edit(("collected_at",), "yesterday"), False, False),
    ("both-dnt-and-connect-safe", lambda: _edit(("listeners", 0, "do_not_touch"), True), False, False),
    ("unclassified-odd-confidence", lambda: _edit(("listeners", 3, "confidence"), "sure"), True, True),
    ("unclassified-null-evidence", lambda: _edit(("listeners", 3, "evidence"), None), False, False),
    ("classified-without-evidence", lambda: _spliced('"evidence": ["thread pt_tcpstore_uv x1"], ', ""),
     False, False),
    ("address-unnormalised-v6", lambda: _edit(("listeners", 0, "address"), "0:0::0"), True, True),
    ("address-of-the-other-family", lambda: _edit(("listeners", 0, "address"), "0.0.0.0"), False, False),
    ("address-scoped", lambda: _edit(("namespaces", 0, "interfaces", 1, "address"), "FE80::1%lo"), True, True),
    ("hint-address-invalid", lambda: _edit(("listeners", 0, "exposure", "answers_on"), ["x"]), False, False),
    ("pid-without-entry", lambda: _edit(("listeners", 3, "pid"), 7), False, False),
    ("entry-without-listener", lambda: _spliced('"4242": null', '"4242": null, "77": null'), False, False),
    ("listeners-null", lambda: _edit(("listeners",), None), False, False),
    ("evidence-empty-string", lambda: _edit(("listeners", 0, "evidence"), [""]), False, False),
    ("schema-1-other-facts", lambda: _edit(("listeners", 1, "process", "cmdline"), ["evil"], schema=1),
     False, False),
    ("schema-1-facts-of-another-pid", lambda: _edit(("listeners", 1, "process", "pid"), 101, schema=1),
     False, False),
    ("schema-1-null-facts-then-facts", lambda: _edit(("listeners", 0, "process"), None, schema=1), False,
     False),
    ("schema-1-job-null", lambda: _schema_1(lambda d: [d["listeners"][i].update(job=None) for i in (0, 1)]),
     True, True),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "valid", "fast"), HAND_MADE, ids=[case[0] for case in HAND_MADE])
def test_hostile_documents_made_by_hand(
    name: str, make: Callable[[], bytes | str], valid: bool, fast: bool
) -> None:
    raw = make()
    outcome = by_hand(raw)
    assert isinstance(outcome, Inventory) is valid, outcome
    if not valid:
        assert isinstance(outcome, str) and outcome.startswith(f"{SOURCE}: ") and "\n" not in outcome
    assert compare(raw) is fast


def test_from_text_names_the_field_of_a_bad_document() -> None:
    raw = _edit(("listeners", 1, "port"), 0)
    with pytest.raises(
        InventoryError, match=r"^node\.json: listeners\[1\]\.port: expected an integer in 1\.\."
    ):
        inventory_json.from_text(raw, SOURCE)


def test_the_fast_path_shares_each_process_and_hint() -> None:
    found = inventory_fast.decode(_base())
    assert found is not None
    store, rendezvous, vanished, other = found.listeners
    assert store.process is not None and store.process is rendezvous.process
    assert (vanished.pid, vanished.process) == (4242, None)
    assert vanished.exposure is other.exposure
    assert found == shared_sample()


# Import cost -----------------------------------------------------------------------------------------


def _imported(*argv: str) -> set[str]:
    """The modules a netaudit command line imports (`python -X importtime`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60, check=False)  # fmt: skip
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_the_probe_and_the_gate_do_not_import_msgspec() -> None:
    # Control: the check sees msgspec where an inventory is read.
    reading = _imported(
        "-c", f"from netaudit import inventory_json; inventory_json.from_text({_base()!r}, 'x')"
    )
    assert {"msgspec", "netaudit.inventory_fast"} <= reading
    for command in (["probe", "--format", "json", "--namespaces", "own"], ["gate", "--format", "json"]):
        imported = _imported("-m", "netaudit", *command)
        assert "netaudit.cli" in imported
        assert not {"msgspec", "netaudit.inventory_fast"} & imported, command


# Bundles (`--inventory -` with a list: what the central run of a fan-out sends its peers) -----


def _read_all(raw: bytes, unparsed: bool) -> list[Inventory] | str:
    import io

    documents = docparse.iter_inventory_documents(["-"], io.BytesIO(raw), 1 << 30, unparsed=unparsed)
    try:
        return [
            inventory_json.from_text(document, label)
            if isinstance(document, bytes)
            else inventory_json.from_json(document, label)
            for label, document in documents
        ]
    except InventoryError as error:
        return str(error)


def test_a_bundle_reads_the_same_element_by_element_and_names_a_bad_one_the_same_way() -> None:
    nodes = [json.loads(json.dumps(inventory_json.to_json(node), default=str)) for node in _bench_nodes()[:3]]
    good = json.dumps(nodes).encode()
    fast, slow = _read_all(good, unparsed=True), _read_all(good, unparsed=False)
    assert isinstance(fast, list) and fast == slow and len(fast) == 3
    bad = [*nodes[:2], {**nodes[2], "host": "../../etc"}]
    message = _read_all(json.dumps(bad).encode(), unparsed=True)
    assert isinstance(message, str) and message.startswith("<stdin>[2]: host: ")
    assert message == _read_all(json.dumps(bad).encode(), unparsed=False)
    for broken in (good[:-1], good + b"x", b"[" + json.dumps(nodes[0]).encode() + b",]"):
        assert _read_all(broken, unparsed=True) == _read_all(broken, unparsed=False)
