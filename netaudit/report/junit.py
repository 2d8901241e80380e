"""JUnit XML for CI test dashboards (Jenkins, GitLab): one test case per endpoint, failing
when a finding at or above --fail-on names it, skipped when nothing could test it; one error
case per incomplete item, so a silent host shows as an error, not a pass."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from netaudit.audit.policy import failing
from netaudit.models import PortState, Report


def to_junit(report: Report) -> str:
    bad = failing(report.findings, report.fail_on)
    suite = ET.Element(
        "testsuite",
        name="netaudit scan",
        timestamp=report.generated_at.isoformat(),
        hostname=report.vantage_host,
        time=f"{report.duration_s:.3f}",
    )
    tests = failures = skipped = errors = 0
    for endpoint in report.endpoints:
        tests += 1
        found = endpoint.classification
        service = f"{found.service}/{found.variant}" if found else "default-port"
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"netaudit.{endpoint.host}",
            name=f"{endpoint.text} {service} not reachable from outside",
        )
        mine = [
            f for f in bad if (f.host, f.address, f.port) == (endpoint.host, endpoint.address, endpoint.port)
        ]
        if mine:
            failures += 1
            failure = ET.SubElement(
                case, "failure", type=mine[0].rule_id, message=f"{mine[0].severity.value}: {mine[0].title}"
            )
            failure.text = "\n".join(
                f"{f.rule_id} from {f.source or 'static'}: {'; '.join(f.evidence)}\nfix: {f.remediation}"
                + "".join(f"\n{cve.text} ({cve.source})" for cve in f.cves)
                for f in mine
            )
        elif endpoint.attempts and all(a.state is PortState.NOT_TESTED for a in endpoint.attempts):
            skipped += 1
            ET.SubElement(case, "skipped", message=endpoint.attempts[0].reason)
        unverified = [a for a in endpoint.attempts if a.is_unverified_filter]
        if unverified:
            # A pass that rests on silence nobody verified: say so where CI shows it.
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(
                f"filtered (unverified) from {a.source}: no canary answered on this path" for a in unverified
            )
    for index, item in enumerate(report.incomplete):
        tests += 1
        errors += 1
        case = ET.SubElement(
            suite, "testcase", classname="netaudit.incomplete", name=f"incomplete {index + 1}"
        )
        ET.SubElement(case, "error", message=item)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
