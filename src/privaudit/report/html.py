"""The HTML report: one self-contained page that a reader without an ML background can follow.

Layout, top to bottom: the verdict in one sentence, regressions against a baseline (when there are
any), the findings with their checks and remediation, the plots (one ROC plot of every attack, member/non-member
score histograms, per-class vulnerability), the most exposed records, the what-if table, the audit
questions and the provenance.

The page never loads anything: styles are inline, plots are matplotlib SVGs embedded as ``data:``
URIs (each one its own document, so ids inside never clash and nothing inside can run), and a
Content-Security-Policy forbids every other source. All report text goes through jinja2 autoescaping.
Plots are drawn on :class:`matplotlib.figure.Figure` objects with an Agg canvas; pyplot is never
imported and rcParams are only changed inside a ``rc_context`` that restores them.
"""

from __future__ import annotations

import base64
import io
import math
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2

from privaudit.findings import CheckStatus, Finding, Severity
from privaudit.report import WriteOptions, register_writer
from privaudit.report.html_inversion import inversion_view
from privaudit.report.schema import AttackReport, Report
from privaudit.rules.examples import DP_TRAINING_EXAMPLES, FAMILY_EXAMPLES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MEMBERSHIP_RULE = "ATLAS-EXF-003"
INVERSION_RULE = "ATLAS-EXF-001"
VISIBLE_RECORDS = 20  # rows of the exposed-records table shown before the "show all" toggle
MAX_CLASSES_PLOTTED = 25

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
BLUE, VERMILLION, GREY = "#0072B2", "#D55E00", "#6b7280"

_RC = {
    "svg.fonttype": "path",  # glyphs as paths: the SVG needs no font at all
    "svg.hashsalt": "privaudit",  # stable element ids, so the same report renders to the same bytes
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
}


@dataclass(frozen=True)
class Plot:
    kind: str  # "roc" | "histogram" | "per_class"
    uri: str  # data:image/svg+xml;base64,...
    alt: str
    caption: str
    attack: str | None = None


# --------------------------------------------------------------------------------------- formatting


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}%"


def _num(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fpr_label(key: str) -> str:
    """'0.001' -> '0.1%'."""
    return f"{100 * float(key):g}%"


def _mpl_text(text: object, limit: int = 40) -> str:
    """Text for a matplotlib label: literal dollar signs (no mathtext), shortened."""
    s = str(text)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _split_list(sentence: str) -> list[str]:
    """Split 'a; b (x; y); c' at top-level semicolons."""
    parts: list[str] = []
    depth, cur = 0, []  # type: tuple[int, list[str]]
    for ch in sentence:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == ";" and depth <= 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def remediation_blocks(text: str) -> list[dict[str, Any]]:
    """Remediation text as blocks: prose lists, labelled code examples (kept verbatim in <pre>)."""
    blocks: list[dict[str, Any]] = []
    for chunk in re.split(r"\n[ \t]*\n", text.strip()):
        lines = chunk.splitlines()
        if not lines:
            continue
        if len(lines) == 1:
            items = _split_list(lines[0])
            if len(items) > 1:
                blocks.append({"kind": "list", "items": [i[0].upper() + i[1:] for i in items]})
            else:
                blocks.append({"kind": "text", "text": lines[0]})
        elif lines[0].rstrip().endswith(":") and not lines[0].startswith((" ", "\t", "#")):
            blocks.append({"kind": "code", "label": lines[0].rstrip()[:-1], "code": "\n".join(lines[1:])})
        else:
            blocks.append({"kind": "code", "label": None, "code": chunk})
    return blocks


# ---------------------------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float, *, constrained: bool = True) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)  # the Agg canvas, explicitly: no GUI backend is ever selected
    return fig


def _svg_uri(fig: "Figure", title: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Title": title, "Date": None, "Creator": "privaudit"})
    svg = buf.getvalue().decode("utf-8")
    # Drop the DOCTYPE (it names a DTD on the web; nothing fetches it, but the file stays free of URLs).
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, count=1)
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _decade_below(v: float) -> float:
    return 10.0 ** math.floor(math.log10(v))


def roc_axis_floor(attacks: list[AttackReport], n_nonmembers: int) -> float:
    """Lower limit shared by every ROC plot (so they compare at a glance): a decade at or below both
    1e-3 and the smallest measurable FPR, lowered further if some TPR sits below it."""
    fprs = [f for a in attacks if a.roc for f in a.roc.fpr if f > 0]
    floor = 1.0 / n_nonmembers if n_nonmembers > 0 else min(fprs, default=1e-3)
    lo = _decade_below(min(1e-3, floor))
    tprs = [t for a in attacks if a.roc for f, t in zip(a.roc.fpr, a.roc.tpr) if f >= lo and t > 0]
    return min(lo, _decade_below(min(tprs, default=lo)))


# The rest of the Okabe-Ito palette, after blue (the strongest attack), with dash patterns so that
# curves stay apart in grey print too.
_CURVES = [("#D55E00", "--"), ("#009E73", "-."), ("#E69F00", ":"), ("#56B4E9", "--"), ("#CC79A7", "-."),
           ("#000000", ":"), ("#F0E442", "--")]


def _roc_plot(attacks: list[AttackReport], best: str | None, n_nonmembers: int, lo: float) -> Plot | None:
    """Every attack's ROC curve on one pair of log axes (the strongest drawn thickest, in blue)."""
    drawn = [a for a in attacks if a.roc is not None]
    if not drawn:
        return None
    from matplotlib.ticker import NullFormatter

    # Fixed margins: constrained layout would triple the drawing time.
    fig = _new_figure(7.0, 4.6, constrained=False)
    fig.subplots_adjust(left=0.1, right=0.63, bottom=0.12, top=0.93)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(NullFormatter())  # minor ticks stay, unlabelled (and cheap)
    if n_nonmembers > 0 and 1.0 / n_nonmembers > lo:
        ax.axvspan(lo, 1.0 / n_nonmembers, color="#e5e7eb", lw=0,
                   label=f"not measurable (FPR < 1/{n_nonmembers})")
    ax.plot([lo, 1.0], [lo, 1.0], ls="--", color=GREY, lw=1, label="chance (guessing)")
    others = iter(_CURVES * 2)
    flat = []
    for a in sorted(drawn, key=lambda a: a.name != best):  # the strongest first: it leads the legend
        assert a.roc is not None
        # Log axes: zero points cannot be drawn, and points left of the axis would only draw a flat line.
        pts = [(f, t) for f, t in zip(a.roc.fpr, a.roc.tpr) if f >= lo and t > 0]
        colour, dash = (BLUE, "-") if a.name == best else next(others)
        label = f"{_mpl_text(a.name, 24)} (AUC {a.auc:.3f})"
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, ls=dash, lw=2.2 if a.name == best else 1.4,
                    label=label)
        else:
            flat.append(a.name)
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.05)
    ax.set_xlabel("false positive rate (non-members wrongly flagged)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title("ROC curves of every attack")
    ax.grid(True, which="major", color="#f3f4f6", lw=0.8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    names = [a.name for a in drawn]
    parts = [f"{a.name} AUC {a.auc:.3f}, {_pct(a.tpr_at_fpr.get('0.01'))} of members at 1% false positives"
             for a in drawn]
    alt = "ROC curves on log-log axes, with the chance diagonal: " + "; ".join(parts) + "."
    if flat:
        alt += f" No members found at any measured false-positive rate by: {', '.join(flat)}."
    caption = ("One curve per attack" + (f"; {best} (the strongest) in solid blue" if best in names else "")
               + ". A curve above the dashed diagonal, especially at the left, means the attack beats guessing.")
    return Plot("roc", _svg_uri(fig, "ROC curves: " + ", ".join(names)), alt, caption, ",".join(names))



def _histogram_plot(a: AttackReport) -> Plot | None:
    from matplotlib.ticker import MaxNLocator

    h = a.histogram
    if h is None or len(h.bin_edges) != len(h.members) + 1 or len(h.members) != len(h.nonmembers):
        return None
    fig = _new_figure(6.4, 3.2)
    ax = fig.add_subplot()
    ax.stairs(h.nonmembers, h.bin_edges, fill=True, color=BLUE, alpha=0.45, label="non-members (holdout)")
    ax.stairs(h.members, h.bin_edges, fill=True, color=VERMILLION, alpha=0.45, label="members (training data)")
    ax.stairs(h.nonmembers, h.bin_edges, color=BLUE, lw=1.2)
    ax.stairs(h.members, h.bin_edges, color=VERMILLION, lw=1.2)
    ax.set_xlim(h.bin_edges[0], h.bin_edges[-1])
    ax.set_ylim(0, max([*h.members, *h.nonmembers, 1]) * 1.3)  # headroom for the legend
    ax.set_xlabel("attack score, as a rank (right = looks more like a training record)")
    ax.set_ylabel("records")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Scores of the strongest attack, {_mpl_text(a.name)}")
    ax.legend(loc="upper center")
    right = sum(m for m, lo in zip(h.members, h.bin_edges) if lo >= 0.5 * (h.bin_edges[0] + h.bin_edges[-1]))
    total = sum(h.members) or 1
    alt = (f"Histogram of {a.name} attack scores for members and non-members over {len(h.members)} bins; "
           f"{_pct(right / total)} of members score in the upper half.")
    caption = ("If the two shapes overlap, the attack cannot tell members from non-members; members piling up "
               "on the right means the model treats its training records differently.")
    return Plot("histogram", _svg_uri(fig, f"Score histogram: {a.name}"), alt, caption, a.name)


def _per_class_plot(a: AttackReport) -> tuple[Plot | None, int]:
    """Bars from 0.5 (chance) to each class's AUC; the most exposed classes first."""
    rows = sorted((s for s in a.per_class if s.auc is not None), key=lambda s: -float(s.auc or 0.0))
    skipped = len(a.per_class) - len(rows)
    if not rows:
        return None, skipped
    shown = rows[:MAX_CLASSES_PLOTTED]
    fig = _new_figure(6.4, 1.1 + 0.22 * len(shown))
    ax = fig.add_subplot()
    aucs = [float(s.auc or 0.5) for s in shown]
    ys = list(range(len(shown)))
    colours = [VERMILLION if v > 0.5 else BLUE for v in aucs]
    ax.barh(ys, [v - 0.5 for v in aucs], left=0.5, color=colours, height=0.7)
    ax.set_yticks(ys, labels=[_mpl_text(s.class_, 28) for s in shown])
    ax.invert_yaxis()
    low, high = min([*aucs, 0.5]), max([*aucs, 0.5])
    pad = max(0.02, 0.1 * (high - low))
    ax.set_xlim(max(0.0, low - pad), min(1.0, high + pad))
    ax.axvline(0.5, color=GREY, ls="--", lw=1)
    ax.set_xlabel("attack AUC within the class (0.5 = chance; further right = more exposed)")
    ax.set_ylabel("class")
    title = f"Per-class vulnerability, {_mpl_text(a.name)}"
    if len(rows) > len(shown):
        title += f" (top {len(shown)} of {len(rows)} classes)"
    ax.set_title(title)
    worst = shown[0]
    alt = (f"Bar chart of the {a.name} attack's AUC per class for {len(shown)} classes; the most exposed is "
           f"class {worst.class_} with AUC {float(worst.auc or 0.0):.3f}.")
    caption = "Classes with bars to the right of the dashed line leak more membership than chance."
    return Plot("per_class", _svg_uri(fig, f"Per-class vulnerability: {a.name}"), alt, caption, a.name), skipped


def build_plots(report: Report) -> dict[str, Any]:
    import matplotlib
    from matplotlib import style

    m = report.membership
    best = next((a for a in m.attacks if a.name == m.best), m.attacks[0] if m.attacks else None)
    out: dict[str, Any] = {"roc": [], "no_roc": [], "histogram": None, "per_class": None, "per_class_skipped": 0}
    lo = roc_axis_floor(m.attacks, report.data.holdout)
    with style.context("default"), matplotlib.rc_context(_RC):  # type: ignore[arg-type]  # ignore the user's matplotlibrc; restore after
        out["no_roc"] = [a.name for a in m.attacks if a.roc is None]
        roc = _roc_plot(list(m.attacks), m.best, report.data.holdout, lo)
        out["roc"] = [roc] if roc is not None else []
        if best is not None:
            out["histogram"] = _histogram_plot(best)
            out["per_class"], out["per_class_skipped"] = _per_class_plot(best)
    return out


# -------------------------------------------------------------------------------------------- verdict


def _worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), key=lambda s: s.rank, default=None)


def build_verdict(report: Report) -> dict[str, Any]:
    failed = [f for f in report.findings if f.failed]
    suppressed = [f for f in report.findings if f.status == "fail" and f.suppressed]
    unknown_checks = sum(c.status in (CheckStatus.UNKNOWN, CheckStatus.MANUAL) for f in report.findings for c in f.checks)
    rules = {f.rule_id for f in failed}
    if MEMBERSHIP_RULE in rules:
        headline = "An attacker can tell who was in the training data."
    elif INVERSION_RULE in rules:
        headline = "An attacker can recover sensitive details of the training data from the model's answers."
    elif failed:
        headline = f"The audit found a problem: {failed[0].title}."
    elif not report.findings:  # no rule judged the numbers: report them without a verdict
        headline = "The attacks ran, but no rule judged the results."
    else:
        headline = "No membership signal found."
    m = report.membership
    best = next((a for a in m.attacks if a.name == m.best), None)
    explain: list[str] = []
    v = m.verdict
    if best is not None and v is not None and v.status == "leak":
        explain.append(f"On {v.members + v.nonmembers:,} records kept aside from choosing it, the strongest attack "
                       f"({best.name}) picked out at least {_pct(v.tpr_lower)} of the training records while wrongly "
                       f"flagging at most {_pct(v.fpr_upper)} of records the model never saw "
                       f"({v.confidence:.0%} confidence). Guessing cannot pick out more than it wrongly flags.")
    elif v is not None and v.status == "unresolved":
        explain.append(f"Too few records to rule a leak out: {v.message}.")
    if best is not None:
        explain.append(f"Its AUC is {best.auc:.3f}, where 0.5 is a coin toss and 1.0 is a perfect attack.")
    if report.findings and not failed:
        explain.append(f"None of the {len(m.attacks)} attacks told training records apart well enough to fail "
                       "the policy.")
    if m.dp_claim is not None and m.dp_claim.contradicted:
        explain.append(f"The differential-privacy claim is contradicted: {m.dp_claim.message}")
    if not report.split_check.passed:
        explain.append("Caution: the training and holdout sets differ even without the model "
                       f"({report.split_check.message}), so the attack numbers may overstate the leak.")
    notes: list[str] = []
    if report.regressions:
        n = len(report.regressions)
        notes.append(f"{n} regression{'s' if n != 1 else ''} since the baseline, listed first below.")
    if suppressed:
        notes.append(f"{len(suppressed)} failing finding{'s are' if len(suppressed) != 1 else ' is'} suppressed "
                     "by policy and not counted here.")
    if unknown_checks:
        notes.append(f"{unknown_checks} check{'s' if unknown_checks != 1 else ''} could not be answered from this "
                     "audit alone; each says what would answer it.")
    worst = _worst(failed)
    return {
        "headline": headline,
        "failed": bool(failed),
        "severity": worst.value if worst else None,
        "explain": explain,
        "notes": notes,
        "best": best,
    }


# ------------------------------------------------------------------------------------------- findings


# Model formats (the adapter that loaded the model) by family; others (http, callable) are black boxes.
_FAMILIES = {"sklearn": "sklearn", "skops": "sklearn", "pickle": "sklearn", "torch": "torch"}


def remedies_for_family(blocks: list[dict[str, Any]], model_format: str) -> list[dict[str, Any]]:
    """Keep the code examples that fit the model's family: a scikit-learn model gets a scikit-learn
    remedy in place of PyTorch's DP-SGD. For a black box every example stays."""

    family = _FAMILIES.get(model_format)
    if family is None:
        extra = [{"kind": "code", "label": label, "code": code} for label, code in FAMILY_EXAMPLES.values()]
    else:
        extra = [{"kind": "code", "label": label, "code": code} for label, code in [FAMILY_EXAMPLES[family]]] \
            if family in FAMILY_EXAMPLES else []
    out: list[dict[str, Any]] = []
    for b in blocks:
        owner = DP_TRAINING_EXAMPLES.get(b.get("label") or "") if b["kind"] == "code" else None
        if owner is not None and family is not None and owner != family:
            out += extra  # the family's own example, where the other family's stood
            extra = []
            continue
        out.append(b)
        if owner is not None and family is None:
            out += extra  # a black box: every family's example, side by side
            extra = []
    return out


def _finding_view(f: Finding, model_format: str = "") -> dict[str, Any]:
    order = {CheckStatus.FAIL: 0, CheckStatus.UNKNOWN: 1, CheckStatus.MANUAL: 2, CheckStatus.PASS: 3}
    return {
        "f": f,
        "anchor": "finding-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f.rule_id).strip("-"),
        "checks": sorted(f.checks, key=lambda c: order.get(c.status, 9)),
        "counts": {s.value: sum(c.status == s for c in f.checks) for s in CheckStatus},
        "remediation": remedies_for_family(remediation_blocks(f.remediation), model_format),
    }


def _fmt_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return str(v)


def build_context(report: Report, options: WriteOptions) -> dict[str, Any]:
    # options.include_records asks for raw record values; the report carries only index and hash, so
    # there is nothing more to show (and nothing sensitive can leak into the page).
    m = report.membership
    findings = sorted(report.findings, key=lambda f: (not f.failed, -f.severity.rank, f.rule_id))
    records = m.records_at_risk
    return {
        "r": report,
        "title": report.model_name or report.model.path or "model",
        "verdict": build_verdict(report),
        "findings": [_finding_view(f, report.model.format) for f in findings],
        "plots": build_plots(report),
        "fpr_keys": [k for k in ("0.01", "0.001", "0.0001") if any(k in a.tpr_at_fpr for a in m.attacks)],
        "records_head": records[:VISIBLE_RECORDS],
        "records_tail": records[VISIBLE_RECORDS:],
        "command_line": shlex.join(report.provenance.command_line) if report.provenance.command_line else "",
        "inversion": inversion_view(report),
    }


# ------------------------------------------------------------------------------------------- template


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("privaudit.report", "templates"),
        autoescape=True,  # every value is escaped unless a template marks it safe (none does)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=_pct, num=_num, fpr=_fpr_label, value=_fmt_value)
    return env


@register_writer("html", ".html", ".htm")
def render(report: Report, options: WriteOptions) -> str:
    """The report as one self-contained HTML page."""
    return _environment().get_template("report.html.j2").render(**build_context(report, options))
