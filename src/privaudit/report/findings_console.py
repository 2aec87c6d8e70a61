"""Findings on the terminal: regressions first, then one block per finding, coloured by severity."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from privaudit.findings import CheckStatus, Finding, Severity
from privaudit.report.schema import Report

SEVERITY_STYLE = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}
STATUS_STYLE = {CheckStatus.PASS: "green", CheckStatus.FAIL: "red", CheckStatus.UNKNOWN: "dim",
                CheckStatus.MANUAL: "magenta"}


def _label(f: Finding) -> str:
    if f.suppressed:
        return "[dim]SUPPRESSED[/dim]"
    if f.status == "fail":
        style = SEVERITY_STYLE[f.severity]
        return f"[{style}]{f.severity.value.upper()}[/{style}]"
    if f.status == "pass":
        return "[green]PASS[/green]"
    return "[dim]UNKNOWN[/dim]"


def render_findings(report: Report, console: Console) -> None:
    """Print regressions, findings (failing first, most severe first) and their non-passing checks."""
    if report.regressions:
        console.print(f"[bold red]Regressions ({len(report.regressions)})[/bold red]")
        for r in report.regressions:
            console.print(f"  [red]{escape(r.kind)}[/red] {escape(r.id)}: {escape(r.message)}", highlight=False)
    order = {"fail": 0, "unknown": 1, "pass": 2}
    findings = sorted(report.findings, key=lambda f: (f.suppressed, order.get(f.status, 3), -f.severity.rank))
    if findings:
        console.print("[bold]Findings[/bold]")
    for f in findings:
        console.print(f"  {_label(f)} {escape(f.id)} -- {escape(f.title)} ({escape(f.atlas_technique)})", highlight=False)
        if f.status == "fail":
            console.print(f"      [dim]severity:[/dim] {escape(f.severity_reason)}", highlight=False)
        if f.suppressed:
            console.print(f"      [dim]suppressed: {escape(f.suppression_reason or '')}[/dim]", highlight=False)
        for c in f.checks:
            if c.status not in (CheckStatus.FAIL, CheckStatus.MANUAL):
                continue
            style = STATUS_STYLE[c.status]
            note = " [dim](suppressed)[/dim]" if c.data.get("suppressed") else ""
            text = c.evidence if c.status == CheckStatus.FAIL else (c.needs or c.evidence)
            console.print(f"      [{style}]{c.status.value:<7}[/{style}] {escape(c.check)}: {escape(text)}{note}",
                          highlight=False)
        unknown = [c.check for c in f.checks if c.status == CheckStatus.UNKNOWN]
        if unknown:
            # UNKNOWN is not a failure: evidence is missing. The report says what would answer each one.
            console.print(f"      [dim]no evidence yet: {escape(', '.join(unknown))}[/dim]", highlight=False)
    for w in report.warnings:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(w)}", highlight=False)
