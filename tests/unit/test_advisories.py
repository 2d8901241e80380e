"""Known CVEs as evidence (netaudit.advisories, probes/cves/cves.toml): the data file is checked
like a signature, versions fall in ranges as PEP 440 says, a finding names the CVEs of what runs
behind it (the torch a process maps, a package beside it, a version its answer carried), a peer's
claim is re-derived, and a service that asks for credentials is rated lower."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from netaudit import advisories, pkgversions, signatures
from netaudit.advisories import AdvisoryError
from netaudit.audit import policy
from netaudit.models import (
    Attempt,
    Classification,
    Confidence,
    CveEvidence,
    Endpoint,
    Family,
    Finding,
    JobIdentity,
    Listener,
    ListenerSource,
    Method,
    PortState,
    ProcessInfo,
    Severity,
    VantageSource,
)

DATA = """\
schema = 1
updated = "2026-12-04"

[answered_by]
ray-dashboard = "ray"

[[cve]]
id = "CVE-2024-5480"
package = "torch"
services = ["rpc-tensorpipe"]
affected = ["<2.2.2"]
fixed = "2.2.2"
disputed = true
summary = "remote code execution through RPC"
sources = ["https://nvd.nist.gov/vuln/detail/CVE-2024-5480"]

[[cve]]
id = "CVE-2025-47277"
package = "vllm"
services = ["tcpstore"]
affected = [">=0.6.5,<0.8.5"]
fixed = "0.8.5"
disputed = false
summary = "TCPStore on every interface"
sources = ["https://github.com/advisories/GHSA-hjq4-87xh-g4fv"]

[[cve]]
id = "CVE-2023-48022"
package = "ray"
services = ["ray-dashboard"]
affected = [">=2.0"]
fixed = ""
disputed = true
summary = "the Jobs API runs any command"
sources = ["https://nvd.nist.gov/vuln/detail/CVE-2023-48022"]
"""
KNOWN = advisories.parse(DATA, "cves.toml")
OUTSIDE = VantageSource("203.0.113.10", "eth1", "203.0.113.0/24", False)
RULES = policy.Policy("subnet", (), dt.date(2026, 12, 4), "admin", KNOWN)


# The data file --------------------------------------------------------------------------------


def test_the_shipped_data_loads_and_names_real_services_and_sources() -> None:
    known = advisories.shipped()
    services = {s.service for s in signatures.load()}
    assert known.advisories, "no advisory in the shipped data"
    for advisory in known.advisories:
        assert set(advisory.services) <= services, advisory.id
        assert all(source.startswith("https://") for source in advisory.sources), advisory.id
        assert advisory.summary and advisory.affected
    assert set(known.answered_by) <= services


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('id = "CVE-2024-5480"', 'id = "CVE-24-1"'), "cves.toml: cve[0].id: 'CVE-24-1' is not a CVE or GHSA id"),
        (('affected = ["<2.2.2"]', 'affected = ["< two"]'), "cve[0].affected: '< two' is not a PEP 440"),
        (('fixed = "2.2.2"', 'fixed = "2.2.2; rm -rf"'), "cve[0].fixed: '2.2.2; rm -rf' is not a version"),
        (('disputed = true', 'disputed = "yes"'), "cve[0].disputed: expected true or false, got string"),
        (('package = "vllm"', 'package = "vLLM!"'), "cve[1].package: expected a lower-case PyPI name"),
        (('ray-dashboard = "ray"', 'ray-dashboard = 3'), "answered_by.ray-dashboard: expected a string, got integer"),
        (("schema = 1", "schema = 2"), "schema: this netaudit reads schema 1, not 2"),
    ],
)  # fmt: skip
def test_a_broken_data_file_is_one_line_naming_the_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(AdvisoryError) as error:
        advisories.parse(DATA.replace(*change, 1), "cves.toml")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_same_cve_twice_for_one_package_is_refused() -> None:
    twice = DATA + DATA[DATA.index("[[cve]]") :].split("\n\n", maxsplit=1)[0] + "\n"
    with pytest.raises(AdvisoryError, match="CVE-2024-5480 for torch is listed twice"):
        advisories.parse(twice, "cves.toml")


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("2.2.1", True), ("2.2.1+cpu", True), ("2.2.0a0+git1234abc", True), ("2.2.2", False),
        ("2.13.0+cpu", False), ("banana", False), ("2.2.1; DROP", False), ("", False),
    ],
)  # fmt: skip
def test_versions_fall_in_ranges_as_pep_440_says(version: str, affected: bool) -> None:
    torch_rpc = KNOWN.advisories[0]
    assert advisories.is_affected(torch_rpc, version) is affected


# Findings -------------------------------------------------------------------------------------


def _endpoint(
    service: str, port: int, *, torch: str | None = None, packages: tuple[tuple[str, str], ...] = (),
    authentication: bool | None = None, version: str | None = None,
) -> Endpoint:  # fmt: skip
    process = ProcessInfo(
        pid=4242, ppid=1, name="python3", uid=1000, user="alice", cmdline=("python3", "serve.py"),
        netns=1, environment=(), threads=(), libraries=(), cgroup=None,
        job=JobIdentity(slurm_job_id="7", torch_version=torch), packages=packages,
    )  # fmt: skip
    signature = next(s for s in signatures.load() if s.service == service)
    found = Classification(
        signature=signature.id, service=service, variant="x", confidence=Confidence.HIGH, evidence=("test",),
        risk=signature.risk, is_do_not_touch=signature.is_do_not_touch, is_connect_safe=True,
        handshake=signature.handshake,
    )  # fmt: skip
    listener = Listener(
        netns=1, family=Family.IPV4, address="0.0.0.0", port=port, inode=port, source=ListenerSource.NETLINK,
        v6only=None, backlog=128, uid=1000, pid=4242, pids=(4242,), process=process, classification=found,
    )  # fmt: skip
    attempt = Attempt(
        OUTSIDE.address, PortState.OPEN, Method.SYN, "syn-ack", 0.2, False, True, confirmed=True,
        detail="answered", vantage="admin", authentication=authentication, version=version,
    )  # fmt: skip
    return Endpoint("node01", "198.51.100.11", Family.IPV4, port, listener, 1.0, True, (attempt,))


def _evaluate(endpoint: Endpoint) -> list[Finding]:
    found = policy.evaluate([endpoint], {OUTSIDE.address: OUTSIDE}, signatures.load(), RULES, {})
    assert len(found) == 1
    return list(found)


def test_a_finding_names_the_cve_of_the_torch_its_process_maps() -> None:
    [finding] = _evaluate(_endpoint("rpc-tensorpipe", 41001, torch="2.2.1+cpu"))
    [cve] = finding.cves
    assert (cve.id, cve.package, cve.version, cve.seen, cve.fixed, cve.disputed) == (
        "CVE-2024-5480", "torch", "2.2.1+cpu", "local", "2.2.2", True)  # fmt: skip
    assert cve.text.startswith(
        "CVE-2024-5480: torch 2.2.1+cpu (local), fixed in 2.2.2; disputed by the vendor"
    )


def test_a_fixed_torch_or_another_service_names_no_cve() -> None:
    assert _evaluate(_endpoint("rpc-tensorpipe", 41001, torch="2.2.2"))[0].cves == ()
    assert _evaluate(_endpoint("tcpstore", 29500, torch="2.2.1"))[0].cves == ()  # the RPC CVE is RPC's


def test_a_package_beside_the_process_names_its_cve() -> None:
    [finding] = _evaluate(_endpoint("tcpstore", 29500, torch="2.6.0", packages=(("vllm", "0.8.4"),)))
    assert [(c.id, c.version, c.seen) for c in finding.cves] == [("CVE-2025-47277", "0.8.4", "local")]


def test_the_version_a_service_answered_names_its_cve_and_an_unknown_one_none() -> None:
    [finding] = _evaluate(_endpoint("ray-dashboard", 8265, version="2.40.0", authentication=False))
    assert [(c.id, c.version, c.seen, c.fixed) for c in finding.cves] == [
        ("CVE-2023-48022", "2.40.0", "answer", "")
    ]
    # MLflow's answer carries its version too, but the data names no package for it
    assert _evaluate(_endpoint("mlflow", 5000, version="2.40.0"))[0].cves == ()


def test_a_peers_claimed_cve_is_replaced_by_what_this_run_derives() -> None:
    endpoint = _endpoint("rpc-tensorpipe", 41001, torch="2.13.0")
    [finding] = _evaluate(endpoint)
    forged = CveEvidence("CVE-2099-0001", "torch", "2.13.0", "local", "", False, "made up", "https://x")
    claimed = replace(finding, cves=(forged,))
    assert policy.with_cves([claimed], [endpoint], KNOWN)[0].cves == ()


@pytest.mark.parametrize(
    ("service", "port", "authentication", "severity"),
    [
        ("ray-dashboard", 8265, True, Severity.MEDIUM),
        ("ray-dashboard", 8265, False, Severity.CRITICAL),
        ("ray-dashboard", 8265, None, Severity.CRITICAL),
        ("jupyter-server", 8888, True, Severity.MEDIUM),
        ("zeromq", 5555, True, Severity.MEDIUM),
        ("tensorboard", 6006, True, Severity.MEDIUM),  # already medium: never raised
    ],
)  # fmt: skip
def test_a_service_that_asks_for_credentials_is_rated_medium(
    service: str, port: int, authentication: bool | None, severity: Severity
) -> None:
    [finding] = _evaluate(_endpoint(service, port, authentication=authentication))
    assert finding.severity is severity
    said = any("authentication is on" in line for line in finding.evidence)
    assert said is (authentication is True and severity is Severity.MEDIUM and service != "tensorboard")


# Package versions beside a process ------------------------------------------------------------


def _site(root: Path, *dist_infos: str) -> str:
    site = root / "opt/venv/lib/python3.11/site-packages"
    for name in dist_infos:
        (site / name).mkdir(parents=True)
    (site / "vllm").mkdir(parents=True, exist_ok=True)
    return "/" + str(site.relative_to(root))


def test_the_distribution_beside_a_mapped_package_gives_its_version(tmp_path: Path) -> None:
    site = _site(tmp_path, "vllm-0.8.4.dist-info", "ray-2.40.0.dist-info", "vllm_extra-1.0.dist-info")
    paths = [f"{site}/vllm/_C.abi3.so", f"{site}/torch/lib/libtorch.so", "/usr/lib/libc.so.6"]
    wanted = pkgversions.site_modules(paths)
    assert wanted == {(site, "vllm")}
    assert pkgversions.versions(str(tmp_path), wanted, {}) == [("vllm", "0.8.4")]


def test_a_command_line_path_counts_and_names_map_to_pypi(tmp_path: Path) -> None:
    site = _site(tmp_path, "torchserve-0.12.0.dist-info", "tensorrt_llm-0.18.1.dist-info")
    argv = ["java", "-cp", f".:{site}/ts/frontend/model-server.jar", "x", f"--x={site}/tensorrt_llm/y.py"]
    wanted = pkgversions.site_modules(argv)
    assert pkgversions.versions(str(tmp_path), wanted, {}) == [
        ("tensorrt-llm", "0.18.1"),
        ("torchserve", "0.12.0"),
    ]


def test_a_linked_site_directory_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    (real / "vllm-0.1.0.dist-info").mkdir(parents=True)
    (tmp_path / "venv").mkdir()
    os.symlink(real, tmp_path / "venv" / "site-packages")
    wanted = pkgversions.site_modules(["/venv/site-packages/vllm/_C.so"])
    assert pkgversions.versions(str(tmp_path), wanted, {}) == []


def test_version_text_is_bounded() -> None:
    assert advisories.VERSION_TEXT.match("2.13.0+cpu")
    assert not advisories.VERSION_TEXT.match("2" * 65)
    assert not re.match(advisories.VERSION_TEXT, "1.0\n")


def test_a_link_in_one_process_root_cannot_blank_anothers_listing(tmp_path: Path) -> None:
    # Given process A's virtualenv is a link to process B's real one (a link above the
    # site-packages directory, which a stat of the whole path would follow)
    real_root, hostile_root = tmp_path / "b", tmp_path / "a"
    site = _site(real_root, "vllm-0.8.4.dist-info")
    (hostile_root / "opt").mkdir(parents=True)
    os.symlink(real_root / "opt/venv", hostile_root / "opt/venv")
    wanted = {(site, "vllm")}
    listings: dict[tuple[int, int], list[str] | None] = {}
    # when A is read first (refused: no link is followed), then B, with one cache for the run,
    assert pkgversions.versions(str(hostile_root), wanted, listings) == []
    # then B's version is still found
    assert pkgversions.versions(str(real_root), wanted, listings) == [("vllm", "0.8.4")]


def test_site_paths_are_read_token_by_token_and_bounded() -> None:
    argv = [
        f"--x={'/a' * 3000}/site-packages/vllm/y.so",
        "/v/site-packages/vllm/_C.so:/w/dist-packages/ray/r.so",
    ]
    assert pkgversions.site_modules(argv) == {("/v/site-packages", "vllm"), ("/w/dist-packages", "ray")}
    assert pkgversions.site_modules(["/site-packages/" * 20_000]) == set()  # no module named there


def test_a_peers_answered_version_names_no_cve_on_another_vantages_finding() -> None:
    endpoint = _endpoint("ray-dashboard", 8265, version="1.13.0")  # what "admin" was answered
    [finding] = _evaluate(endpoint)
    assert finding.cves == ()  # 1.13.0 is before the data's Ray range (>=2.0)
    peer = replace(endpoint.attempts[0], vantage="peer01", version="2.0.0")
    merged = replace(endpoint, attempts=(*endpoint.attempts, peer))
    assert policy.with_cves([finding], [merged], KNOWN)[0].cves == ()
    # while the peer's own finding names them
    assert policy.with_cves([replace(finding, vantage="peer01")], [merged], KNOWN)[0].cves


def test_a_cve_that_needs_a_configuration_says_so() -> None:
    known = advisories.shipped()
    [pynccl] = advisories.evidence(known, "tcpstore", [("vllm", "0.8.4", "local")])
    assert pynccl.id == "CVE-2025-47277" and "PyNcclPipe" in pynccl.condition
    assert pynccl.text.endswith(f"(only when {pynccl.condition})")
    no_condition = [cve for cve in advisories.evidence(known, "ray-dashboard", [("ray", "2.8.0", "answer")])]
    assert no_condition and all(cve.condition == "" and "only when" not in cve.text for cve in no_condition)
