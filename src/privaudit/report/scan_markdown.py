"""Markdown for a scan (a pull-request comment): failing deployments first, one table row per check."""

from __future__ import annotations

from typing import Any

from privaudit.report import WriteOptions, register_writer
from privaudit.report.markdown import cell, code


@register_writer("markdown", ".md", ".markdown", kind="scan")
def render(report: Any, options: WriteOptions) -> str:
    failing = [f for f in report.findings if f.failed]
    lines = ["## privaudit scan", ""]
    if failing:
        lines.append(f"**{len(failing)} failing finding(s)** across {len({f.model_name for f in failing})} of "
                     f"{len(report.deployments)} deployment(s).")
    else:
        lines.append(f"No failing finding across {len(report.deployments)} deployment(s).")
    lines += ["", "| Deployment | Rule | Status | Severity | Failing checks |", "|---|---|---|---|---|"]
    for f in sorted(report.findings, key=lambda f: (not f.failed, -f.severity.rank, f.id)):
        bad = [c.check for c in f.checks if c.status.value == "FAIL"]
        status = f.status + (" (suppressed)" if f.suppressed else "")
        lines.append(f"| {code(f.model_name)} | {f.rule_id} | {status} | {f.severity.value} | {cell(', '.join(bad)) or '-'} |")
    for dep in report.deployments:
        where = f"{dep.file}:{dep.line or 1}" if dep.file else (dep.arn or dep.id)
        lines += ["", f"### {cell(dep.name)} ({cell(dep.kind)}, {code(where)})", ""]
        seen = set()
        for f in report.findings:
            if f.model_name != dep.name:
                continue
            for c in f.checks:
                if c.check in seen:
                    continue
                seen.add(c.check)
                lines.append(f"- **{c.check}** {c.status.value}: {cell(c.evidence)}")
    lines += [f"- warning: {cell(w)}" for w in report.warnings]
    return "\n".join(lines) + "\n"
