"""The compiled-signature cache gives exactly what parsing gives, follows the files' content,
and is ignored whenever it is unreadable, corrupt or not ours; writing it never fails a run."""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path

import pytest

from netaudit import options, sigcache, signatures
from netaudit.config import Config
from netaudit.signatures import SignatureError
from tests.unit.test_signatures import VALID

# test_signatures' valid signature, with more kinds of condition for the cache to carry
MINE = (
    VALID
    + """\
cmdline = '--serve(\\s|$)'
env = { MY_PORT = "1" }
"""
)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "netaudit"


def _files(cache: Path) -> list[Path]:
    return sorted(cache.glob("signatures-*.cache"))


def _forbid_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str, path: str) -> signatures.Signature:
        raise AssertionError(f"parsed {path} although the cache holds it")

    monkeypatch.setattr(signatures, "parse", refuse)


def test_a_hit_gives_the_parsed_signatures_without_parsing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = signatures.load()
    assert sigcache.load((), str(cache)) == parsed  # a miss: parsed, then written
    [written] = _files(cache)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    _forbid_parsing(monkeypatch)
    assert sigcache.load((), str(cache)) == parsed


def test_never_pickle_one_header_line_then_json(cache: Path) -> None:
    sigcache.load((), str(cache))
    header, payload = _files(cache)[0].read_bytes().split(b"\n", 1)
    assert header.startswith(b"netaudit-signature-cache 1 ")
    assert {item["id"] for item in json.loads(payload)} >= {"tcpstore", "c10d-gloo"}


def test_an_edited_signature_is_a_new_key_never_a_stale_hit(tmp_path: Path, cache: Path) -> None:
    extra = tmp_path / "site-probes"
    extra.mkdir()
    (extra / "mine.toml").write_text(MINE)
    first = sigcache.load((str(extra),), str(cache))
    assert next(s for s in first if s.id == "mine").title == "My service"
    (extra / "mine.toml").write_text(MINE.replace("My service", "Renamed"))
    second = sigcache.load((str(extra),), str(cache))
    assert second == signatures.load((str(extra),))
    assert next(s for s in second if s.id == "mine").title == "Renamed"
    assert len(_files(cache)) == 2


def test_an_extra_directory_and_a_pattern_survive_the_round_trip(tmp_path: Path, cache: Path) -> None:
    extra = tmp_path / "site-probes"
    extra.mkdir()
    (extra / "mine.toml").write_text(MINE)
    sigcache.load((str(extra),), str(cache))
    hit = sigcache.read(str(cache), sigcache.cache_key(signatures.read_sources((str(extra),))))
    assert hit == signatures.load((str(extra),))
    mine = next(s for s in hit if s.id == "mine")
    assert mine.rules[0].when.cmdline is not None and mine.rules[0].when.cmdline.search("x --serve")


def test_a_bad_signature_is_an_error_and_nothing_is_cached(tmp_path: Path, cache: Path) -> None:
    extra = tmp_path / "site-probes"
    extra.mkdir()
    (extra / "mine.toml").write_text(MINE.replace('risk = "high"', 'risk = "dire"'))
    with pytest.raises(SignatureError, match="risk"):
        sigcache.load((str(extra),), str(cache))
    assert _files(cache) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data.replace(b'"tcpstore"', b'"tcpstorf"', 1),  # a flipped byte: digest
        lambda data: b"garbage\n" + data,  # not our header
        lambda data: b"",
    ],
)
def test_a_corrupt_cache_is_ignored_and_rewritten(
    cache: Path, damage: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = sigcache.load((), str(cache))
    [path] = _files(cache)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    assert sigcache.load((), str(cache)) == expected
    _forbid_parsing(monkeypatch)  # and the rewritten cache is whole again
    assert sigcache.load((), str(cache)) == expected


def test_a_well_formed_payload_of_the_wrong_shape_is_ignored(cache: Path) -> None:
    sources = signatures.read_sources()
    key = sigcache.cache_key(sources)
    good = sigcache.encode(signatures.build(sources), key)
    header, payload = good.split(b"\n", 1)
    items = json.loads(payload)
    items[0]["rules"][0]["priority"] = "95"  # a string where an integer belongs
    forged = json.dumps(items).encode()
    forged_header = b" ".join(
        [*header.split(b" ")[:3], sigcache.blake2b(forged, digest_size=32).hexdigest().encode()]
    )
    with pytest.raises(ValueError, match="int"):
        sigcache.decode(forged_header + b"\n" + forged, key)
    cache.mkdir(parents=True, mode=0o700)
    Path(sigcache.path_for(str(cache), key)).write_bytes(forged_header + b"\n" + forged)
    os.chmod(sigcache.path_for(str(cache), key), 0o600)
    assert sigcache.read(str(cache), key) is None


def _prepared(cache: Path) -> tuple[Path, str]:
    sigcache.load((), str(cache))
    key = sigcache.cache_key(signatures.read_sources())
    return Path(sigcache.path_for(str(cache), key)), key


def test_a_group_or_world_writable_file_is_not_trusted(cache: Path) -> None:
    path, key = _prepared(cache)
    for mode in (0o620, 0o602):
        os.chmod(path, mode)
        assert sigcache.read(str(cache), key) is None
    os.chmod(path, 0o600)
    assert sigcache.read(str(cache), key) == signatures.load()


def test_a_writable_directory_is_not_trusted_nor_written(cache: Path) -> None:
    path, key = _prepared(cache)
    os.chmod(cache, 0o777)  # noqa: S103 - the directory under test is the unsafe one
    assert sigcache.read(str(cache), key) is None
    path.unlink()
    assert sigcache.load((), str(cache)) == signatures.load()
    assert _files(cache) == []  # a directory others may write is no place for it
    assert "writable by others" in (sigcache.store(str(cache), key, signatures.load()) or "")


@pytest.mark.skipif(os.geteuid() != 0, reason="requires root to give the file to another user")
def test_a_file_of_another_user_is_not_trusted(cache: Path) -> None:
    path, key = _prepared(cache)
    os.chown(path, 4242, 4242)
    assert sigcache.read(str(cache), key) is None


def test_a_link_or_a_fifo_in_its_place_is_not_followed(tmp_path: Path, cache: Path) -> None:
    path, key = _prepared(cache)
    elsewhere = tmp_path / "elsewhere.cache"
    elsewhere.write_bytes(path.read_bytes())
    elsewhere.chmod(0o600)
    path.unlink()
    path.symlink_to(elsewhere)
    assert sigcache.read(str(cache), key) is None
    path.unlink()
    os.mkfifo(path, 0o600)  # nobody writes: a blocking read would hang the gate
    assert sigcache.read(str(cache), key) is None


def test_a_cache_that_cannot_be_written_never_fails_the_load(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    assert sigcache.load((), str(blocked / "netaudit")) == signatures.load()
    reason = sigcache.store(str(blocked / "netaudit"), "0" * 64, signatures.load())
    assert reason is not None and "not written" in reason


def test_old_caches_and_stale_temporaries_are_pruned(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(parents=True, mode=0o700)
    for index in range(12):
        old = cache / f"signatures-{index:032x}.cache"
        old.write_text("old")
        os.utime(old, (1_000_000 + index, 1_000_000 + index))
    leftover = cache / ".netaudit-abc.tmp"
    leftover.write_text("half")
    os.utime(leftover, (1_000_000, 1_000_000))
    fresh = cache / ".netaudit-def.tmp"
    fresh.write_text("a write in progress")
    sigcache.load((), str(cache))
    kept = _files(cache)
    assert len(kept) == 8
    assert Path(sigcache.path_for(str(cache), sigcache.cache_key(signatures.read_sources()))) in kept
    assert cache / f"signatures-{11:032x}.cache" in kept and cache / f"signatures-{0:032x}.cache" not in kept
    assert not leftover.exists() and fresh.exists()


def test_where_the_cache_lives() -> None:
    assert (
        sigcache.directory({"XDG_CACHE_HOME": "/srv/cache", "HOME": "/home/a"}, euid=1000)
        == "/srv/cache/netaudit"
    )
    assert (
        sigcache.directory({"XDG_CACHE_HOME": "relative", "HOME": "/home/a"}, euid=1000)
        == "/home/a/.cache/netaudit"
    )
    assert sigcache.directory({}, euid=0) == "/var/cache/netaudit"
    assert sigcache.directory({"HOME": "/root"}, euid=0) == "/var/cache/netaudit"
    assert sigcache.directory({}, euid=1000) is None


def test_the_gate_loads_through_the_cache_of_its_user(tmp_path: Path) -> None:
    extra = tmp_path / "site-probes"
    extra.mkdir()
    (extra / "mine.toml").write_text(MINE)
    args = argparse.Namespace(probes_dir=[str(extra)])
    environ = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert options.load_signatures_cached(args, Config(), environ) == options.load_signatures(args, Config())
    assert len(_files(tmp_path / "xdg" / "netaudit")) == 1
    (extra / "broken.toml").write_text("schema = 1\n")
    with pytest.raises(SignatureError, match=r"broken\.toml"):  # the same error as without a cache
        options.load_signatures_cached(args, Config(), environ)


def test_declared_exchanges_survive_the_round_trip_and_are_declared_from_a_hit(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netaudit.scan import allowlist, exchange

    parsed = {s.id: s for s in signatures.load()}
    assert parsed["zeromq"].exchange is not None and parsed["ray-dashboard"].exchange is not None
    sigcache.load((), str(cache))  # a miss: written
    monkeypatch.setattr(allowlist, "_declared", {})  # a fresh process: nothing declared yet
    _forbid_parsing(monkeypatch)
    hit = {s.id: s for s in sigcache.load((), str(cache))}
    assert hit == parsed
    for signature in hit.values():
        if signature.exchange is not None:
            assert exchange.declared(signature.exchange.name) == signature.exchange
            assert signature.handshake == signature.exchange.name


def test_a_cache_forging_a_forbidden_exchange_is_ignored(cache: Path) -> None:
    sources = signatures.read_sources()
    key = sigcache.cache_key(sources)
    header, payload = sigcache.encode(signatures.build(sources), key).split(b"\n", 1)
    items = json.loads(payload)
    frontend = next(item for item in items if item["id"] == "c10d-debug-frontend")
    frontend["exchange"]["path"] = "/tcpstore"  # dumps every key: the allow-list forbids it
    forged = json.dumps(items).encode()
    forged_header = b" ".join(
        [*header.split(b" ")[:3], sigcache.blake2b(forged, digest_size=32).hexdigest().encode()]
    )
    with pytest.raises(ValueError, match="/tcpstore"):
        sigcache.decode(forged_header + b"\n" + forged, key)
    cache.mkdir(parents=True, mode=0o700)
    Path(sigcache.path_for(str(cache), key)).write_bytes(forged_header + b"\n" + forged)
    os.chmod(sigcache.path_for(str(cache), key), 0o600)
    assert sigcache.read(str(cache), key) is None
    loaded = {s.id: s for s in sigcache.load((), str(cache))}  # parsed again, the real path
    assert loaded["c10d-debug-frontend"].exchange is not None
    assert loaded["c10d-debug-frontend"].exchange.path == "/"
