"""Terminal output: progress bars while working, a summary table at the end."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from privaudit.report.schema import Report


class RichReporter:
    """A :class:`privaudit.progress.Reporter` drawing rich progress bars on stderr."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "RichReporter":
        # Started at the first progress update: a run that fails while checking its inputs prints its
        # one-line error and nothing else.
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=self.console, transient=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None and self._tasks:
            if exc and exc[0] is not None:
                # A failing run ends with its one-line error only, not with the bars drawn so far.
                self._progress.live.transient = True
            self._progress.stop()

    def info(self, message: str) -> None:
        self.console.print(f"[dim]{escape(message)}[/dim]", highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[bold yellow]warning:[/bold yellow] {escape(message)}", highlight=False)

    def progress(self, task: str, completed: int, total: int) -> None:
        if self._progress is None:
            return
        if not self._tasks:
            self._progress.start()
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=completed, total=total)


def _table_width(console: Console, table: Table) -> int | None:
    """On a terminal, its width. Elsewhere (a CI log) rich would assume 80 columns and squeeze the table;
    draw it as wide as it needs instead, unless COLUMNS says otherwise."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        return None
    return max(console.width, console.measure(table, options=console.options.update_width(1_000)).maximum)


LEGEND = ("[dim]TPR@x%FPR: share of training records an attack flags while wrongly flagging x% of holdout records; "
          "n/a: too few holdout records to measure that FPR.\n"
          "eps lower bound / max: the DP epsilon each attack alone proves at 95% confidence, either error "
          "direction / the most this sample could prove.  * the attack the verdict chose on half the records and judged on the other half.[/dim]")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def render_summary(report: Report, console: Console) -> None:
    m = report.membership
    mode = report.model.output_mode + (f", rounded {report.model.rounding}" if report.model.rounding is not None else "")
    console.print(f"[bold]Membership inference audit[/bold] - {report.data.train} train / {report.data.holdout} holdout "
                  f"records, output mode: {escape(mode)}")
    table = Table(show_header=True, header_style="bold")
    longest = max([len("attack"), *(len(a.name) + 2 for a in m.attacks)])
    for col in ("attack", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "TPR@0.01%FPR", "eps lower bound", "queries", "seconds"):
        if col == "attack":  # an attack's name is never cut or wrapped: it is what the reader looks up
            table.add_column(col, no_wrap=True, min_width=longest)
        else:
            table.add_column(col, justify="right")
    for a in m.attacks:
        name = f"[bold]{escape(a.name)} *[/bold]" if a.name == m.best else escape(a.name)
        table.add_row(name, f"{a.auc:.3f}", _pct(a.tpr_at_fpr["0.01"]), _pct(a.tpr_at_fpr["0.001"]),
                      _pct(a.tpr_at_fpr["0.0001"]), f"{a.epsilon_lower_bound:.2f} / {a.epsilon_max_measurable:.2f}",
                      str(a.queries), f"{a.seconds:.2f}")
    wide = _table_width(console, table)
    if wide is None:
        console.print(table)
    else:
        before = console.width
        console.width = wide  # print's own width= cannot exceed the console's
        try:
            console.print(table)
        finally:
            console.width = before
    console.print(LEGEND, highlight=False)
    if m.verdict is not None:
        colour = {"leak": "red", "no_leak": "green", "unresolved": "yellow"}[m.verdict.status]
        label = {"leak": "leakage shown", "no_leak": "no leakage shown", "unresolved": "undecided"}[m.verdict.status]
        console.print(f"[{colour}]Verdict: {label}[/{colour}] -- {escape(m.verdict.message)}", highlight=False)
    console.print(f"* strongest attack: {m.best}.  Train accuracy {m.train_accuracy:.3f}, holdout {m.holdout_accuracy:.3f}, "
                  f"gap {m.generalization_gap:+.3f}.  Split check: {'passed' if report.split_check.passed else 'FAILED'} "
                  f"({escape(report.split_check.message)}).", highlight=False)
    for s in m.skipped:
        console.print(f"[dim]skipped {escape(s.name)}: {escape(s.reason)}[/dim]", highlight=False)
    if m.records_at_risk:
        top = ", ".join(f"#{r.index} ({r.risk:.3f})" for r in m.records_at_risk[:5])
        console.print(f"Most exposed training rows (0-based; risk = lower bound of the chance a record flagged at "
                      f"that score is a member): {top}", highlight=False)
    if m.dp_claim is not None:
        colour = "red" if m.dp_claim.verdict != "consistent" else "green"
        console.print(f"[{colour}]DP claim {m.dp_claim.verdict}:[/{colour}] {escape(m.dp_claim.message)}", highlight=False)
