#!/usr/bin/env python
"""Does the verdict pass private models and fail leaky ones, and what does the stricter test cost?

1. Models whose leakage is known to be nil or bounded, audited with the default attacks and four
   reference models: models that never saw the audited records (five families) and differentially
   private logistic regressions (output perturbation, epsilon 0.5 to 8), at 500 and 3,000 records per
   side. Counted: attack_power FAIL under the held-out test, and under the rule it replaced (the best of
   the attacks' point estimates: TPR/FPR above 2 at 0.1 % -- or 1 % when 0.1 % is unresolvable --, AUC
   above 0.55, an epsilon lower bound above 0, or a train-holdout gap above 0.05).
2. Overfit targets that must still FAIL: a Purchase-like MLP, the demo's hospital MLP, the breast-cancer
   MLP of bench/membership.py (3 seeds each).
3. The price: the smallest leak (TPR/FPR) the test can prove at each sample size and FPR, from the
   bounds alone; and, on synthetic scores with a planted leak, the smallest TPR at 0.1 % FPR it FAILs
   4 times in 5, against how often picking the best of seven attacks on all records fails with no leak.

    python bench/verdicts.py            # about 10 minutes on 2 quiet cores
    python bench/verdicts.py --quick    # a smoke run

Writes bench/results/verdicts.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, header, now_utc, table  # noqa: E402

import privaudit  # noqa: E402
from privaudit import datasets, metrics, verdict  # noqa: E402
from privaudit.findings import CheckStatus  # noqa: E402
from privaudit.private_models import OutputPerturbedLogisticRegression  # noqa: E402

BENCH = Path(__file__).resolve().parent
FAMILIES = ("logistic", "forest", "tree", "naive_bayes", "knn")


def _task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    return make_classification(n_samples=3 * n, n_features=20, n_informative=10, n_redundant=4, flip_y=0.05,
                               random_state=seed)


def _model(family: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    return {"logistic": LogisticRegression(max_iter=2000), "forest": RandomForestClassifier(30, random_state=seed),
            "tree": DecisionTreeClassifier(random_state=seed), "naive_bayes": GaussianNB(),
            "knn": KNeighborsClassifier(15)}[family]


def old_rule_fails(report: privaudit.Report) -> bool:
    """The decision rule before the held-out test, from the report's point estimates."""
    m = report.membership
    for a in m.attacks:
        t = a.tpr_at_fpr.get("0.001")
        key = "0.001" if t is not None else "0.01"
        t = a.tpr_at_fpr.get(key)
        if (t is not None and t / float(key) > 2.0) or a.auc > 0.55 or a.epsilon_lower_bound > 0:
            return True
    return m.generalization_gap > 0.05


def judged(report: privaudit.Report) -> dict[str, Any]:
    f = next(x for x in report.findings if x.rule_id == "ATLAS-EXF-003")
    power = next(c for c in f.checks if c.check == "attack_power")
    v = report.membership.verdict
    assert v is not None
    return {"status": power.status.value, "old_fail": old_rule_fails(report), "severity": f.severity.value,
            "finding": f.status, "ratio": v.ratio_lower, "attack": v.attack, "fpr": v.fpr,
            "at_risk": len(report.membership.records_at_risk), "evidence": power.evidence}


def _audit(model: Any, tr: Any, ho: Any, seed: int, **kw: Any) -> privaudit.Report:
    return privaudit.audit(model, tr, ho, reference_models=4, seed=seed, cache_dir=False, what_if=False,
                           n_bootstrap=0, **kw)


def private_cases(sizes: tuple[int, ...], seeds: tuple[int, ...], eps: tuple[float, ...]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        for seed in seeds:
            X, y = _task(n, seed)
            for family in FAMILIES:
                model = _model(family, seed).fit(X[2 * n:], y[2 * n:])
                rows.append({"kind": "never saw the records", "model": family, "n": n, "seed": seed,
                             **judged(_audit(model, (X[:n], y[:n]), (X[n:2 * n], y[n:2 * n]), seed))})
            for e in eps:
                model = OutputPerturbedLogisticRegression(epsilon=e, random_state=seed).fit(X[:n], y[:n])
                rows.append({"kind": "DP (output perturbation)", "model": f"epsilon {e:g}", "n": n, "seed": seed,
                             **judged(_audit(model, (X[:n], y[:n]), (X[n:2 * n], y[n:2 * n]), seed))})
    return rows


def overfit_cases(seeds: tuple[int, ...], purchase_records: int) -> list[dict[str, Any]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    rows = []
    for seed in seeds:
        targets = {
            "Purchase-like MLP": (datasets.purchase_like(purchase_records, n_features=600, n_classes=100, flip=0.42,
                                                         seed=seed),
                                  MLPClassifier(hidden_layer_sizes=(128,), max_iter=200, random_state=seed)),
            "hospital MLP (demo)": (datasets.readmission_like(4000, seed=seed), datasets.overfit_model(seed)),
            "breast-cancer MLP": (datasets.breast_cancer(seed), datasets.overfit_model(seed)),
        }
        for name, (s, model) in targets.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(s.X_train, s.y_train)
            rows.append({"kind": "overfit", "model": name, "n": len(s.X_train), "seed": seed,
                         **judged(_audit(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), seed))})
    return rows


def price_table(sizes: tuple[int, ...]) -> list[list[Any]]:
    rows = []
    for n in sizes:
        cells: list[Any] = [f"{n:,}", f"{n // 2:,}"]
        for f in (0.001, 0.01, 0.1):
            r = verdict.detectable_ratio(f, n // 2, n // 2)
            cells.append("not resolvable" if not np.isfinite(r) else f"{r:.1f}x (TPR {min(r * f, 1):.2%})")
        rows.append(cells)
    return rows


def planted(n: int, trials: int, shifts: np.ndarray) -> tuple[float | None, float]:
    """Smallest planted TPR at 0.1 % FPR failed in >= 80 % of trials; naive false-FAIL rate with no leak."""
    from scipy import stats

    found = None
    for shift in shifts:
        hits = 0
        for t in range(trials):
            rng = np.random.default_rng(1000 * t + int(shift * 100))
            m = np.r_[np.ones(n, bool), np.zeros(n, bool)]
            scores = {f"a{j}": rng.normal(size=2 * n) for j in range(7)}
            scores["a0"][m] += shift
            hits += verdict.held_out_test(scores, m, delta=1e-5, seed=t).rejected
        if hits >= 0.8 * trials:
            found = float(stats.norm.sf(stats.norm.isf(0.001) - shift))  # the planted attack's TPR at 0.1 % FPR
            break
    naive = 0
    for t in range(trials):
        rng = np.random.default_rng(5000 + t)
        m = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        best = 0.0
        for _ in range(7):
            s = rng.normal(size=2 * n)
            p = metrics.tpr_at_fpr(s, m, 0.001 if n >= 1000 else 0.01)
            best = max(best, 0.0 if p is None else p.tpr / (0.001 if n >= 1000 else 0.01))
        naive += best > 2.0
    return found, naive / trials


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "verdicts.md")
    args = ap.parse_args(argv)
    seeds = (0,) if args.quick else (0, 1, 2, 3)
    started, t0 = now_utc(), time.time()
    with LoadSampler() as load:
        private = private_cases((500, 3000), seeds[:2] if not args.quick else seeds,
                                (0.5, 1.0, 2.0, 4.0, 8.0, 8.0) if not args.quick else (1.0, 8.0))
        if not args.quick:
            private += private_cases((500, 3000), seeds[2:], ())
        overfit = overfit_cases((0,) if args.quick else (0, 1, 2), 4000 if args.quick else 8_000)
        sizes = (500, 1000, 2000, 6000, 20_000)
        price = price_table(sizes)
        planted_rows = []
        for n in (1000, 3000, 10_000):
            tpr, naive = planted(n, 5 if args.quick else 20, np.arange(0.5, 6.01, 0.25))
            planted_rows.append([f"{n:,}", "n/a" if tpr is None else f"{tpr:.2%}", f"{naive:.0%}"])
    lines = header("Verdicts: private models pass, leaky ones fail", seeds, started, time.time() - t0,
                   load=load.summary())
    lines += ["## 1. Models that leak nothing, or little by proof", "",
              "Default attacks (7), 4 reference models; `attack_power` as the held-out test decides it, and what "
              "the rule it replaced would have said on the same report.", ""]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in private:
        groups.setdefault((r["kind"], r["n"]), []).append(r)
    summary = []
    for (kind, n), rs in groups.items():
        summary.append([kind, f"{n:,}", len(rs), sum(r["status"] == "FAIL" for r in rs),
                        sum(r["status"] == "PASS" for r in rs), sum(r["status"] == "UNKNOWN" for r in rs),
                        sum(r["old_fail"] for r in rs), sum(r["finding"] == "fail" for r in rs),
                        sum(r["at_risk"] for r in rs)])
    lines += table(["models", "records per side", "audits", "FAIL (new)", "PASS", "UNKNOWN", "FAIL (old rule)",
                    "failing findings (--fail-on low exits 1)", "records listed at risk"], summary)
    total = len(private)
    lines += [f"In all: **{sum(r['status'] == 'FAIL' for r in private)} attack_power FAIL in {total} audits** "
              f"(the old rule: {sum(r['old_fail'] for r in private)}).", ""]
    lines += ["Every audit:", ""]
    lines += table(["models", "model", "n", "seed", "attack_power", "TPR/FPR lower bound", "chosen", "old rule"],
                   [[r["kind"], r["model"], r["n"], r["seed"], r["status"],
                     "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}", f"{r['attack']} @ {r['fpr']}",
                     "FAIL" if r["old_fail"] else "pass"] for r in private])
    lines += ["## 2. Overfit targets", ""]
    lines += table(["target", "train records", "seed", "attack_power", "severity (internal data)", "evidence"],
                   [[r["model"], r["n"], r["seed"], r["status"], r["severity"], r["evidence"]] for r in overfit])
    lines += ["The breast-cancer MLP (284 records a side, 142 judged) is UNKNOWN, not FAIL: at that size the test can "
              "prove only a leak of about 13 times the FPR at 1 % FPR, and the attacks reach about 5 times (TPR at 1 % "
              "FPR 0.5-5 % in bench/results/membership.md). Its earlier FAIL came from a point estimate; the check "
              "now says how many holdout records would decide it.", ""]
    lines += ["## 3. The price of the stricter test", "",
              "Smallest TPR/FPR the held-out test can prove (margin 2, 95 %), from the bounds alone; the test judges "
              "on half of the records (the other half chooses the attack and threshold). The first column is the "
              "holdout size, with as many training records.", ""]
    lines += table(["holdout records", "judged per group", "at 0.1 % FPR", "at 1 % FPR", "at 10 % FPR"], price)
    lines += ["Planted leak in one of seven synthetic attacks (members' scores shifted; the other six noise): the "
              "smallest TPR at 0.1 % FPR that FAILs in at least 80 % of trials, and how often picking the best "
              "attack's point estimate on all records (the old way) called a model with no leak a leak.", ""]
    lines += table(["records per side", "smallest TPR @ 0.1 % FPR failed 4 in 5", "old way: false FAIL with no leak"],
                   planted_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
