"""`privaudit demo`: one story on bundled data -- an overfit model that leaks, then a regularised one that passes.

Both models are trained on the same synthetic hospital table (datasets.readmission_like): 2,000
patients as members, 2,000 held out, enough for the verdict to resolve a 0.1 % false-positive rate.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

import privaudit
from privaudit import datasets
from privaudit.findings import CheckStatus
from privaudit.progress import Reporter
from privaudit.report.schema import Report
from privaudit.rules import Policy

RECORDS = 4000
POLICY = Policy(data_sensitivity="health")


def _fit(model: Any, split: datasets.Split) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # The overfit MLP is meant to run to its iteration limit: that is how it memorises.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(split.X_train, split.y_train)


def _audit(model: Any, split: datasets.Split, name: str, *, jobs: int | None, reporter: Reporter,
           what_if: bool) -> Report:
    return privaudit.audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout),
                           reference_models=4, seed=0, jobs=jobs, reporter=reporter, cache_dir=False,
                           model_name=name, policy=POLICY, what_if=what_if)


def _verdict_line(report: Report) -> str:
    finding = next(f for f in report.findings if f.rule_id == "ATLAS-EXF-003")
    power = next(c for c in finding.checks if c.check == "attack_power")
    gap = next(c for c in finding.checks if c.check == "overfitting")
    return (f"ATLAS-EXF-003 {finding.status.upper()} ({finding.severity.value}); attack_power {power.status.value}: "
            f"{power.evidence}; overfitting {gap.status.value}: {gap.evidence}")


def run_demo(console: Console, reporter: Callable[[], Any], *, jobs: int | None = None,
             show: Callable[[Report], None], write: Callable[[Report], None]) -> tuple[Report, Report]:
    """Audit the overfit model (full report: ``show`` and ``write``), then the regularised one (one line)."""
    split = datasets.readmission_like(RECORDS, seed=0)
    n = len(split.X_train)
    console.print(f"[bold]Part 1[/bold]: a wide MLP with no weight decay, trained to fit {n:,} synthetic patients "
                  f"exactly (30-day readmission, {len(split.feature_names)} measurements); {len(split.X_holdout):,} "
                  "similar patients are held out.", highlight=False)
    leaky = _fit(datasets.overfit_model(seed=0), split)
    with reporter() as ui:
        first = _audit(leaky, split, "demo-readmission-mlp", jobs=jobs, reporter=ui, what_if=True)
    show(first)
    write(first)
    console.print("\n[bold]Part 2[/bold]: the same patients, a logistic regression with strong regularisation.",
                  highlight=False)
    private = _fit(datasets.regularised_model(seed=0), split)
    with reporter() as ui:
        second = _audit(private, split, "demo-readmission-logreg", jobs=jobs, reporter=ui, what_if=False)
    for report in (first, second):
        style = "red" if any(c.status == CheckStatus.FAIL for f in report.findings for c in f.checks) else "green"
        console.print(f"[{style}]{escape(report.model_name or '')}[/{style}]: {escape(_verdict_line(report))}",
                      highlight=False)
    return first, second

