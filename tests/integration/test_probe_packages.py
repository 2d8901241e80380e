"""The probe names the version of a package with known CVEs installed beside a real process: a
pyzmq server that maps ``site-packages/vllm/_C.abi3.so`` (a copy of a real shared object, opened
with dlopen) from a virtualenv whose ``vllm-0.8.4.dist-info`` says the version. What a vLLM
engine looks like to /proc, without vLLM's gigabytes."""

from __future__ import annotations

import _json
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netaudit import advisories
from tests.integration.test_services import _free_port, _running, _wait_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("zmq") is None, reason="requires pyzmq (test extra)")

SERVER = """
import ctypes, sys, time, zmq
ctypes.CDLL(sys.argv[1])
context = zmq.Context()
pull = context.socket(zmq.PULL)
pull.bind(f"tcp://127.0.0.1:{sys.argv[2]}")
sys.stdin.read()
"""


def test_a_vllm_beside_the_process_is_named_with_its_version_and_its_cves(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm-0.8.4.dist-info").mkdir()
    (site / "ray-2.40.0.dist-info").mkdir()  # installed, but this process does not use Ray
    extension = site / "vllm" / "_C.abi3.so"
    shutil.copyfile(_json.__file__, extension)
    port = _free_port()
    with _running([sys.executable, "-c", SERVER, str(extension), str(port)]) as process:
        _wait_port("127.0.0.1", port, process, "the pyzmq server")
        probe = subprocess.run(
            [sys.executable, "-m", "netaudit", "probe", "--format", "json"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert probe.returncode in (0, 3), probe.stderr
        inventory = json.loads(probe.stdout)
        [listener] = [item for item in inventory["listeners"] if item["port"] == port]
        assert listener["pid"] == process.pid and listener["service"] == "zeromq"
        facts = inventory["processes"][str(process.pid)]
        assert facts["packages"] == {"vllm": "0.8.4"}
    # and the shipped data names vLLM 0.8.4's ZeroMQ CVEs, each with its fixed release
    known = advisories.shipped()
    cves = advisories.evidence(known, "zeromq", [("vllm", "0.8.4", "local")])
    assert {"CVE-2025-30165", "CVE-2025-32444"} <= {cve.id for cve in cves}
    assert all(cve.fixed and cve.package == "vllm" for cve in cves)
