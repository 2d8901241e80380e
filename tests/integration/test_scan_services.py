"""From the answer to the report: `netaudit scan` from outside a lab node confirms a Ray
dashboard with its declared exchange, names the known CVEs of the version it answered
(probes/cves/cves.toml, seen "answer"), and rates it medium when token authentication is on.

STAND-IN: Ray itself is too heavy for CI (its real dashboard is tested where installed, in
test_services.py); this server answers `GET /api/version` the way Ray's dashboard does
(python/ray/dashboard/modules/job/job_head.py get_version; with RAY_AUTH_MODE=token, the 401
of python/ray/_private/authentication/http_token_authentication.py), and nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_scan_cluster import netaudit, report_of
from tests.lab.netlab import Cluster, Lab, cluster, lab_fixture  # noqa: F401

pytestmark = pytest.mark.requires_root

INTENDED = ["--intended-subnet", "198.18.0.0/24", "--intended-subnet", "2001:db8:18::/64"]
FAST = ["--timeout", "0.5", "--retries", "1"]
RAY_VERSION = "2.40.0"

DASHBOARD = """
import http.server, json, sys
token = sys.argv[2] == "token"
class Ray(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if token:
            body, status = b"Unauthorized: Missing authentication token", 401
        elif self.path == "/api/version":
            body = json.dumps({"version": "4", "ray_version": sys.argv[3], "ray_commit": "abc"}).encode()
            status = 200
        else:
            body, status = b"", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        sys.stderr.write(self.requestline + "\\n")
http.server.ThreadingHTTPServer((sys.argv[1], 8265), Ray).serve_forever()
"""


@pytest.fixture
def one_node(lab: Lab) -> Iterator[Cluster]:
    yield cluster(lab, nodes=1, ipv6=True, route_fabric_via_mgmt=True)


def _scan_dashboard(c: Cluster, mode: str) -> tuple[dict[str, Any], list[str]]:
    node = c.nodes[0]
    server = node.ns.popen(
        ["python3", "-c", DASHBOARD, node.mgmt_v4, mode, RAY_VERSION], stderr=-1, text=True
    )
    try:
        _wait(c, node.mgmt_v4)
        result = netaudit(c.outside.ns, "scan", node.mgmt_v4, "--port", "8265", *INTENDED, *FAST,
                          "--format", "json")  # fmt: skip
        report = report_of(result)
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=10)
    return report, [line for line in err.splitlines() if line.strip()]


def _wait(c: Cluster, address: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if c.nodes[0].ns.probe_tcp(address, 8265) == "open":  # from inside: no request logged
            return
        time.sleep(0.1)
    pytest.fail(f"the stand-in dashboard did not listen on {address}:8265")


def test_an_open_dashboard_is_critical_and_names_the_cves_of_the_version_it_answered(
    one_node: Cluster,
) -> None:
    report, requests = _scan_dashboard(one_node, "open")
    [finding] = [f for f in report["findings"] if f["port"] == 8265]
    assert (finding["rule_id"], finding["service"], finding["severity"]) == (
        "NA044",
        "ray-dashboard",
        "critical",
    )
    attempts = [a for e in report["endpoints"] if e["port"] == 8265 for a in e["attempts"] if a["confirmed"]]
    assert attempts and all(a["version"] == RAY_VERSION and a["authentication"] is False for a in attempts)
    cves = {c["id"]: c for c in finding["cves"]}
    # Ray 2.40.0: the Jobs API (disputed, no fixed release) and the dashboard's CSRF/DNS
    # rebinding flaw fixed in 2.52.0
    assert cves["CVE-2023-48022"]["fixed"] == "" and cves["CVE-2023-48022"]["disputed"] is True
    assert cves["CVE-2025-62593"]["fixed"] == "2.52.0"
    assert all(c["version"] == RAY_VERSION and c["seen"] == "answer" for c in cves.values())
    # the dashboard was asked one thing, the version, and nothing else
    assert requests and all(line == "GET /api/version HTTP/1.1" for line in requests)


def test_a_dashboard_with_token_authentication_is_medium_and_says_why(one_node: Cluster) -> None:
    report, requests = _scan_dashboard(one_node, "token")
    [finding] = [f for f in report["findings"] if f["port"] == 8265]
    assert (finding["rule_id"], finding["severity"]) == ("NA044", "medium")
    assert any("authentication is on" in line for line in finding["evidence"])
    assert finding["cves"] == []  # a 401 carries no version
    assert all(line == "GET /api/version HTTP/1.1" for line in requests)
    assert json.dumps(report)  # the report stays one JSON document
