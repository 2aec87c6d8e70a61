"""The terminal summary of a scan: one row per deployment and rule, failing checks named."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STYLE = {"fail": "bold red", "pass": "green", "unknown": "yellow"}


def render_scan(report: Any, console: Console) -> None:
    table = Table(title=f"privaudit scan: {len(report.deployments)} deployment(s), "
                        f"{report.provenance.resources_read} resources read in {report.provenance.seconds:.1f}s")
    for col in ("Deployment", "Kind", "Rule", "Status", "Severity", "Checks"):
        table.add_column(col)
    for f in report.findings:
        dep = report.deployment_for(f)
        bad = [c.check for c in f.checks if c.status.value == "FAIL"]
        unknown = [c.check for c in f.checks if c.status.value == "UNKNOWN"]
        status = f.status + (" (suppressed)" if f.suppressed else "")
        # Names come from infrastructure files: printed as written, never read as rich markup.
        table.add_row(escape(f.model_name), escape(dep.kind) if dep else "", f.rule_id, f"[{STYLE.get(f.status, '')}]{status}[/]",
                      f.severity.value, "; ".join(part for part in (
                          "FAIL " + ", ".join(bad) if bad else "", "UNKNOWN " + ", ".join(unknown) if unknown else "") if part))
    console.print(table)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False)
