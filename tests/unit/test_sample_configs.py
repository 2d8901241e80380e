"""Every sample config loads, and the sample scripts name absolute paths only (a prolog and a
cron job run with no PATH), so none of them can rot unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netaudit import config

SAMPLES = Path(__file__).parents[2] / "sample_configs"


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_sample_config_loads(path: Path) -> None:
    loaded = config.load(str(path))
    assert loaded.path == str(path)


def test_the_samples_cover_every_way_of_working() -> None:
    names = {path.name for path in SAMPLES.iterdir()}
    assert {
        "workstation.toml",
        "slurm-cluster.toml",
        "cron-audit.toml",
        "prolog-gate.toml",
        "prolog.sh",
        "healthcheck.sh",
        "netaudit-audit.service",
        "netaudit-audit.timer",
        "netaudit.cron",
    } <= names


def test_cluster_sample_has_a_scope_and_a_fanout() -> None:
    cluster = config.load(str(SAMPLES / "slurm-cluster.toml"))
    assert cluster.scan.targets and cluster.fanout.method == "clustershell"
    assert cluster.exceptions and cluster.exceptions[0].reason
    cron = config.load(str(SAMPLES / "cron-audit.toml"))
    assert cron.output.baseline and cron.output.textfile_dir and cron.output.syslog
    gate = config.load(str(SAMPLES / "prolog-gate.toml"))
    assert gate.gate.on_error == "open" and gate.gate.deadline_s <= 10


@pytest.mark.parametrize("name", ["prolog.sh", "healthcheck.sh", "netaudit.cron", "netaudit-audit.service"])
def test_scripts_use_absolute_paths(name: str) -> None:
    text = "\n".join(line for line in (SAMPLES / name).read_text().splitlines() if not line.startswith("#"))
    assert "/usr/local/bin/netaudit" in text
    bare = re.findall(r"(?<![\w/.\-$])netaudit (?:gate|scan|probe)", text)
    assert bare == [], f"{name} runs netaudit by PATH lookup: {bare}"
