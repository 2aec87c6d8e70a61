"""HTML for a scan: the verdict, then one card per deployment with its graph, checks and remediation."""

from __future__ import annotations

from typing import Any

import jinja2

from privaudit.findings import CheckStatus
from privaudit.report import WriteOptions, register_writer
from privaudit.report.scan_graph_svg import svg

TEMPLATE = "scan.html.j2"


def build_context(report: Any) -> dict[str, Any]:
    cards = []
    for dep in report.deployments:
        findings = [f for f in report.findings if f.model_name == dep.name]
        checks: dict[str, dict[str, Any]] = {}
        for f in findings:
            for c in f.checks:
                row = checks.setdefault(c.check, {"check": c.check, "title": c.title, "rules": {}, "evidence": c.evidence,
                                                  "needs": c.needs, "where": c.data.get("location")})
                row["rules"][f.rule_id] = c.status.value + (" (suppressed)" if c.data.get("suppressed") else "")
        cards.append({"dep": dep, "findings": findings, "checks": list(checks.values()), "svg": svg(dep),
                      "failed": any(f.failed for f in findings)})
    failing = [f for f in report.findings if f.failed]
    return {"report": report, "cards": cards, "failing": failing, "statuses": [s.value for s in CheckStatus],
            "remediation": {f.rule_id: f.remediation for f in report.findings}}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("privaudit.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)


@register_writer("html", ".html", ".htm", kind="scan")
def render(report: Any, options: WriteOptions) -> str:
    return _environment().get_template(TEMPLATE).render(**build_context(report))
