"""JUnit XML for CI test dashboards: a test suite per finding, a test case per check.

A FAIL check is a ``<failure>``; UNKNOWN and MANUAL checks are ``<skipped>`` (no evidence either
way is never a pass or a failure); PASS checks are plain passed test cases. The failing checks of a
suppressed finding are reported as skipped, with the suppression reason, so an accepted risk does
not break the build.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from privaudit.findings import Check, CheckStatus, Finding
from privaudit.report import WriteOptions, register_writer
from privaudit.report.schema import Report

# Characters XML 1.0 does not allow, even escaped; ElementTree would write them as they are.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str | None) -> str:
    return _INVALID_XML.sub("\ufffd", text or "")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items()})
    if text:
        el.text = _clean(text)
    return el


def _case(suite: ET.Element, finding: Finding, check: Check) -> str:
    """Add one test case; returns its outcome: "failure", "skipped" or "passed"."""
    case = _sub(suite, "testcase", classname=finding.rule_id, name=f"{check.check}: {check.title}", time="0")
    if check.status == CheckStatus.FAIL and finding.suppressed:
        reason = finding.suppression_reason or "suppressed by policy"
        _sub(case, "skipped", f"{check.evidence}\n\nSuppressed: {reason}", message=f"suppressed: {reason}")
        return "skipped"
    if check.status == CheckStatus.FAIL:
        _sub(case, "failure", f"{check.evidence}\n\nFinding severity {finding.severity.value}: {finding.severity_reason}",
             message=check.evidence, type=finding.severity.value)
        return "failure"
    if check.status in (CheckStatus.UNKNOWN, CheckStatus.MANUAL):
        reason = check.needs or check.evidence
        _sub(case, "skipped", check.evidence if check.needs else None, message=f"{check.status.value}: {reason}")
        return "skipped"
    if check.evidence:
        _sub(case, "system-out", check.evidence)
    return "passed"


def to_junit(report: Report) -> ET.Element:
    root = ET.Element("testsuites", {"name": "privaudit"})
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for finding in report.findings:
        suite = _sub(root, "testsuite", name=f"{finding.rule_id} {finding.title}", time="0")
        props = _sub(suite, "properties")
        for key, value in (("finding_id", finding.id), ("model", finding.model_name), ("status", finding.status),
                           ("severity", finding.severity.value), ("atlas_technique", finding.atlas_technique),
                           ("suppressed", str(finding.suppressed).lower())):
            _sub(props, "property", name=key, value=value)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for check in finding.checks:
            outcome = _case(suite, finding, check)
            counts["tests"] += 1
            if outcome in ("failure", "skipped"):
                counts["failures" if outcome == "failure" else "skipped"] += 1
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", "0")
        suite.set("skipped", str(counts["skipped"]))
        for key in totals:
            totals[key] += counts[key]
    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", "0")
    return root


@register_writer("junit", ".xml")
@register_writer("junit", ".xml", kind="scan")
def render(report: Report, options: WriteOptions) -> str:
    root = to_junit(report)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
