"""How often does `--baseline` call a re-audit of an unchanged, private model a regression? And does it
still catch a model that became leaky?

A CI pipeline retrains and re-audits its model as data arrives, comparing each report with the last one.
Here each run draws a fresh sample of the same population (datasets.readmission_like with a new seed),
trains the same recipe on its train half and audits it against the previous run's report. The recipes
generalise (a regularised logistic regression, a small MLP with strong weight decay: train-holdout gaps
of about 0.01 on this table), so any regression they raise is noise. The last run of each sequence swaps in an MLP that memorises (no weight decay, 200 units); that
regression should be caught. Each comparison is judged by privaudit's rule (privaudit.ci.baseline.compare,
a test at 95 %) and by the rule it replaced (point estimates: the TPR above the baseline's bootstrap upper
bound, the AUC up by more than 0.02 without one, the gap wider by more than 0.01), on the same reports.

    python bench/regressions.py            # writes bench/results/regressions.md
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import privaudit
from privaudit import datasets
from privaudit.ci.baseline import compare, finding_regressions
from privaudit.report.schema import Report

from _common import header, now_utc  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parent


def recipe(kind: str, seed: int) -> Any:
    if kind == "lr":
        est: Any = LogisticRegression(C=0.1, max_iter=1000)
    elif kind == "mlp":
        est = MLPClassifier((16,), alpha=10.0, max_iter=300, random_state=seed)  # gap about 0.01 here
    else:  # memorises: the demo's overfit recipe
        est = MLPClassifier((200,), alpha=1e-6, max_iter=300, random_state=seed)
    return make_pipeline(StandardScaler(), est)


def old_rule(current: Report, baseline: Report) -> list[str]:
    """The point-estimate comparison this release replaced, kept here to measure it."""
    kinds = [r.kind for r in finding_regressions(current.findings, baseline.findings)]
    now = next(a for a in current.membership.attacks if a.name == current.membership.best)
    before = next(a for a in baseline.membership.attacks if a.name == baseline.membership.best)
    key = next((k for k in ("0.001", "0.01") if before.tpr_at_fpr.get(k) is not None), None)
    detail = before.tpr_at_fpr_detail.get(key) if key else None
    if key and detail is not None and detail.ci_high is not None and now.tpr_at_fpr.get(key) is not None:
        if now.tpr_at_fpr[key] > detail.ci_high:  # type: ignore[operator]
            kinds.append("attack_power")
    elif now.auc > before.auc + 0.02:
        kinds.append("attack_power")
    if current.membership.generalization_gap > baseline.membership.generalization_gap + 0.01:
        kinds.append("generalization_gap")
    return kinds


def sequence(kind: str, runs: int, n_records: int, k: int) -> list[dict[str, Any]]:
    rows, previous = [], None
    for i in range(runs + 1):
        model_kind = "memorising" if i == runs else kind
        data = datasets.readmission_like(n_records, seed=1000 + i)
        model = recipe(model_kind, i).fit(data.X_train, data.y_train)
        start = time.perf_counter()
        report = privaudit.audit(model, (data.X_train, data.y_train), (data.X_holdout, data.y_holdout),
                                 reference_models=k, seed=i, cache_dir=False, jobs=2, model_name="model",
                                 what_if=False, command_line=["bench/regressions.py"])
        seconds = time.perf_counter() - start
        if previous is not None:
            rows.append({"run": i, "model": model_kind, "gap": report.membership.generalization_gap,
                         "best": report.membership.best, "new": sorted({r.kind for r in compare(report, previous)}),
                         "old": sorted(set(old_rule(report, previous))), "seconds": seconds})
            print(kind, rows[-1], flush=True)
        previous = report
    return rows


def markdown(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace, started: str, wall: float) -> str:
    lines = [*header("Baseline regressions: noise or a real change?", list(range(args.runs + 1)), started, wall),
             "## Protocol", "",
             (f"Each sequence retrains one recipe on a fresh sample of the bundled hospital table "
              f"({args.records} records per run, half train, half holdout; `datasets.readmission_like(seed=1000 + i)`) "
              f"and audits it (`reference_models={args.k}`, default attacks, seed i) against the previous run's "
              "report. The first runs use a recipe that generalises (train-holdout gaps near 0.01 on this table), "
              "so every regression they raise is noise; the last run swaps in an MLP that memorises (200 units, no weight decay), a real change. "
              "*New rule*: `privaudit.ci.baseline.compare` (an increase must be beyond chance, the two measurement "
              "comparisons together at 95 %, and above the tolerance; a finding that newly fails is a regression "
              "as before, and findings fail on held-out lower bounds). *Old rule*: the point-estimate comparison it replaced (see the script)."), "",
             "| recipe | re-audits of the private recipe | with a regression, old rule | with a regression, new rule | memorising model caught, old rule | memorising model caught, new rule |",
             "|---|---|---|---|---|---|"]
    for kind, rows in results.items():
        private, last = rows[:-1], rows[-1]
        old = sum(bool(r["old"]) for r in private)
        new = sum(bool(r["new"]) for r in private)
        lines.append(f"| {kind} | {len(private)} | {old} ({old / len(private):.0%}) | {new} ({new / len(private):.0%}) "
                     f"| {'yes' if last['old'] else 'no'} ({', '.join(last['old']) or '-'}) "
                     f"| {'yes' if last['new'] else 'no'} ({', '.join(last['new']) or '-'}) |")
    lines += ["", "## Every comparison", "", "| recipe | run | model | gap | best attack | old rule | new rule |",
              "|---|---|---|---|---|---|---|"]
    for kind, rows in results.items():
        lines += [f"| {kind} | {r['run']} | {r['model']} | {r['gap']:+.3f} | {r['best']} | "
                  f"{', '.join(r['old']) or '-'} | {', '.join(r['new']) or '-'} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="re-audits of each private recipe")
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("-k", type=int, default=2, help="reference models per audit")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "regressions.md")
    args = p.parse_args()
    started, start = now_utc(), time.perf_counter()
    results = {kind: sequence(kind, args.runs, args.records, args.k) for kind in ("lr", "mlp")}
    args.out.write_text(markdown(results, args, started, time.perf_counter() - start), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
