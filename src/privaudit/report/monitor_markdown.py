"""Markdown for a ``privaudit monitor`` report: the findings, the probing principals and the decisions."""

from __future__ import annotations

from privaudit.report import WriteOptions, register_writer
from privaudit.report.markdown import cell, shorten, status_label
from privaudit.report.monitor_schema import MonitorReport


@register_writer("markdown", ".md", ".markdown", kind="monitor")
def render(report: MonitorReport, options: WriteOptions) -> str:
    return to_markdown(report)


def to_markdown(report: MonitorReport) -> str:
    failed = [f for f in report.findings if f.failed]
    head = (f"**privaudit monitor: {max(failed, key=lambda f: f.severity.rank).severity.value.upper()}** - "
            f"{len(report.flagged)} principal(s) probing `{report.model_name}`" if failed
            else f"**privaudit monitor: no probing seen** for `{report.model_name}`")
    t = report.throughput
    lines = [head, "", f"{report.records} requests ({report.queries} queries) from {report.principals} principals; "
             f"replayed through {', '.join(report.detectors) or 'no detectors'} at {t.queries_per_second:,.0f} "
             f"queries/s ({t.records_per_second:,.0f} requests/s).", "",
             "| Rule | Severity | Status | Summary |", "|---|---|---|---|"]
    lines += [f"| {cell(f.rule_id)} {cell(f.title)} | {f.severity.value} | {cell(status_label(f))} | {cell(shorten(f.summary))} |"
              for f in report.findings]
    if report.flagged:
        lines += ["", "| Principal | Level | Queries | Addresses | Detections | Answered after alarm |",
                  "|---|---|---:|---:|---|---:|"]
        lines += [f"| {cell(p.principal)} | {p.level} | {p.queries} | {p.ips} | "
                  + cell(", ".join(f"{d.detector} @ {d.queries}" for d in p.detections))
                  + f" | {p.answered_after} |" for p in report.flagged]
    if report.allowed_alarms:
        lines += ["", "Alarms on allowed principals (logged, never escalated): "
                  + ", ".join(cell(p.principal) for p in report.allowed_alarms)]
    if report.decisions:
        lines += ["", "Decisions: " + ", ".join(f"{cell(k or 'none')} {v}" for k, v in report.decisions.items())]
    lines += [f"- warning: {shorten(w)}" for w in report.warnings]
    lines += ["", f"<sub>privaudit {report.privaudit_version} - {len(report.sources)} log file(s) - {report.created_at}</sub>"]
    return "\n".join(lines) + "\n"
