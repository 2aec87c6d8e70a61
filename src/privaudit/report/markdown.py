"""A short Markdown summary for a pull-request comment: verdict first, then the tables that back it."""

from __future__ import annotations

import html
import re

from privaudit.findings import Finding
from privaudit.report import WriteOptions, register_writer
from privaudit.report.schema import FPR_KEYS, Report

SUMMARY_CHARS = 140
MAX_WARNINGS = 3


# Underscores inside a word (rmia_online) never start emphasis, so only those at a word's edge are escaped;
# with [ and ] escaped no link or image can form, so parentheses and ! stay as written.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*{}\[\]#|~]|(?<!\w)_|_(?!\w))")


def _text(text: object) -> str:
    """A user-supplied string (model or column name, suppression id or reason) as literal Markdown:
    one line, HTML escaped, Markdown punctuation backslash-escaped (a pipe cannot end a table cell)."""
    line = html.escape(" ".join(str(text).split()), quote=False)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", line)


def code(text: str) -> str:
    """A name as inline code (where HTML and Markdown are inert), or escaped text if it holds a backtick or
    a pipe (which ends a table cell even inside code)."""
    line = " ".join(text.split())
    return f"`{line}`" if "`" not in line and "|" not in line and line else _text(line)


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell."""
    return _text(text)


def shorten(text: str, limit: int = SUMMARY_CHARS) -> str:
    """One line of at most ``limit`` characters, cut between words (a single over-long word is cut)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    head = line[: limit - 1]
    cut = head.rfind(" ")
    return (head[:cut] if cut > limit // 2 else head).rstrip(" ,;:-") + "…"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def status_label(finding: Finding) -> str:
    return f"{finding.status} (suppressed)" if finding.suppressed else finding.status


def verdict(report: Report) -> str:
    failed = [f for f in report.findings if f.failed]
    model = code(report.model_name) if report.model_name else "the model"
    if not failed:
        unknown = sum(f.status == "unknown" for f in report.findings)
        extra = f" ({unknown} rule{'s' if unknown != 1 else ''} without evidence)" if unknown else ""
        return f"**privaudit: no findings** for {model}{extra}"
    worst = max(failed, key=lambda f: f.severity.rank).severity
    n = len(failed)
    return f"**privaudit: {worst.value.upper()}** - {n} failing finding{'s' if n != 1 else ''} for {model}"


def to_markdown(report: Report) -> str:
    m = report.membership
    lines = [verdict(report), ""]
    if report.regressions:
        lines += ["**Regressions since the baseline**", ""]
        lines += [f"- {_text(r.kind)} {code(r.id)}: {_text(shorten(r.message))}" for r in report.regressions]
        lines.append("")
    if not report.split_check.passed:
        lines += [f"> Split check failed: {_text(shorten(report.split_check.message))}", ""]
    if report.findings:
        lines += ["| Rule | Severity | Status | Summary |", "|---|---|---|---|"]
        for f in report.findings:
            lines.append(f"| {cell(f.rule_id)} {cell(f.title)} | {f.severity.value} | {cell(status_label(f))} | "
                         f"{cell(shorten(f.summary))} |")
        lines.append("")
    if m.attacks:
        lines += ["| Attack | AUC | TPR@1% FPR | TPR@0.1% FPR | TPR@0.01% FPR |", "|---|---:|---:|---:|---:|"]
        for a in m.attacks:
            name = f"**{cell(a.name)}**" if a.name == m.best else cell(a.name)
            lines.append(f"| {name} | {a.auc:.3f} | " + " | ".join(_pct(a.tpr_at_fpr.get(k)) for k in FPR_KEYS) + " |")
        lines.append("")
    lines.append(f"Train accuracy {m.train_accuracy:.3f}, holdout {m.holdout_accuracy:.3f}, "
                 f"gap {m.generalization_gap:.3f}."
                 + (f" Reference models: {cell(m.reference_recipe)}." if m.reference_recipe else ""))
    lines.append("")
    if report.what_if:
        inv = any(w.inversion_mode for w in report.what_if)
        lines += ["**What if it were served hardened**", "",
                  "| Serving | Best attack | AUC | TPR@1% FPR | TPR@0.1% FPR | Holdout accuracy |"
                  + (" Inversion accuracy | Inversion queries |" if inv else ""),
                  "|---|---|---:|---:|---:|---:|" + ("---:|---:|" if inv else "")]
        for w in report.what_if:
            row = (f"| {cell(w.serving)} | {cell(w.best_attack or 'n/a')} | {_num(w.auc)} | "
                   f"{_pct(w.tpr_at_fpr.get('0.01'))} | {_pct(w.tpr_at_fpr.get('0.001'))} | {w.accuracy:.3f} |")
            if inv:
                acc = "refused" if w.inversion_mode == "refused" else _pct(w.inversion_attack_accuracy)
                row += f" {acc} | {w.inversion_queries if w.inversion_queries is not None else 'n/a'} |"
            lines.append(row)
        lines.append("")
    if m.skipped:
        lines += ["Skipped attacks: " + "; ".join(f"{cell(s.name)} ({cell(s.reason)})" for s in m.skipped), ""]
    if report.warnings:
        shown = report.warnings[:MAX_WARNINGS]
        more = len(report.warnings) - len(shown)
        lines += [f"- warning: {_text(shorten(w))}" for w in shown]
        if more:
            lines.append(f"- and {more} more warning{'s' if more != 1 else ''} (see the full report)")
        lines.append("")
    model_hash = report.provenance.sha256.get("model")
    lines.append(f"<sub>privaudit {report.provenance.privaudit_version} - model "
                 f"{'sha256 ' + model_hash[:12] if model_hash else 'in memory (no file hash)'} - "
                 f"{report.provenance.created_at}</sub>")
    return "\n".join(lines) + "\n"


@register_writer("markdown", ".md")
def render(report: Report, options: WriteOptions) -> str:
    return to_markdown(report)
