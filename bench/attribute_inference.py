#!/usr/bin/env python
"""Attribute-inference benchmark: privaudit's MAP-with-model attack next to ART's black-box attack.

On the synthetic warfarin-like table (the genotype ``vkorc1`` is the sensitive column), the same
random-forest targets are attacked by ``privaudit.attacks.inversion.attribute.attribute_inference``
and by ART 1.20.1's ``AttributeInferenceBlackBox``; every method is scored on the same training
and holdout records against the same model-free baseline, and bench/results/attribute_inference.md
(plus a JSON dump) is written from the run.

    python bench/attribute_inference.py            # 3 seeds, 4000 records, ART nn/rf/gb (~4 min idle, 2 cores)
    python bench/attribute_inference.py --quick    # 1 seed, 2000 records, no ART nn (<1 min)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, fmt, header, now_utc, table  # noqa: E402

from privaudit import datasets  # noqa: E402
from privaudit.attacks.inversion import attribute  # noqa: E402
from privaudit.attacks.inversion.attribute import METHOD_NAMES, attribute_inference, g_mean, mcc  # noqa: E402
from privaudit.models.pycallable import CallableTarget  # noqa: E402

BENCH = Path(__file__).resolve().parent
SCENARIOS = {
    "overfit": "label depends on the genotype; forest trained on the real table",
    "no-relationship": "label independent of the genotype; forest trained on the real table (genotype column included)",
    "no-genotype": "label independent of the genotype; forest trained with the genotype column shuffled",
}
CONFIGS = {"full": {"n_records": 4000, "seeds": (0, 1, 2), "art_models": ("nn", "rf", "gb")},
           "quick": {"n_records": 2000, "seeds": (0,), "art_models": ("rf", "gb")}}


def forest(seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    # No bootstrap: every tree fits every training record, the strongest memoriser of its family.
    return RandomForestClassifier(n_estimators=100, bootstrap=False, random_state=seed)


def build(scenario: str, n: int, seed: int) -> dict[str, Any]:
    X, y, names, col = datasets.warfarin_like(n, seed=seed, label_depends_on_sensitive=scenario == "overfit")
    h = n // 2
    fit_X = X[:h].copy()
    if scenario == "no-genotype":
        fit_X[:, col] = np.random.default_rng(seed + 1000).permutation(fit_X[:, col])
    model = forest(seed).fit(fit_X, y[:h])
    return {"X_tr": X[:h], "y_tr": y[:h], "X_ho": X[h:], "y_ho": y[h:], "col": col, "name": names[col], "model": model}


def set_metrics(truth: np.ndarray, guess: np.ndarray, base_acc: float) -> dict[str, float]:
    acc = float(np.mean(truth == guess))
    return {"accuracy": acc, "advantage": acc - base_acc, "mcc": mcc(truth, guess), "g_mean": g_mean(truth, guess)}


def score(truth_tr: np.ndarray, guess_tr: np.ndarray, truth_ho: np.ndarray, guess_ho: np.ndarray,
          base: tuple[float, float], seconds: float, queries: int) -> dict[str, Any]:
    tr, ho = set_metrics(truth_tr, guess_tr, base[0]), set_metrics(truth_ho, guess_ho, base[1])
    return {"train": tr, "holdout": ho, "leakage": tr["advantage"] - ho["advantage"], "seconds": seconds,
            "queries": queries}


def run_art(case: dict[str, Any], kind: str, folds: list[tuple[np.ndarray, np.ndarray]], cand: np.ndarray,
            seed: int, baseline: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """ART's documented usage: fit on records with known feature (here: the attacker's holdout
    sample), infer from the other features plus the model's predicted labels (and true labels).
    Training records: fitted on all holdout records. Holdout records: fitted on the other folds."""
    import torch
    from art.attacks.inference.attribute_inference import (AttributeInferenceBaselineTrueLabel,
                                                           AttributeInferenceBlackBox)
    from art.estimators.classification import SklearnClassifier

    col, X_tr, y_tr, X_ho, y_ho = case["col"], case["X_tr"], case["y_tr"], case["X_ho"], case["y_ho"]
    clf = SklearnClassifier(model=case["model"])
    queries = 0

    def pred(Z: np.ndarray) -> np.ndarray:
        nonlocal queries
        queries += len(Z)
        # The format ART's fit() builds internally: the predicted class index as one column.
        return np.argmax(clf.predict(Z), axis=1).reshape(-1, 1)

    def attack(X_fit: np.ndarray, y_fit: np.ndarray, X_inf: np.ndarray, y_inf: np.ndarray) -> np.ndarray:
        nonlocal queries
        # ART builds its attack models without a random_state; seed the global generators instead.
        np.random.seed(seed)
        torch.manual_seed(seed)
        values = cand.tolist()
        if baseline:
            a = AttributeInferenceBaselineTrueLabel(attack_model_type=kind, attack_feature=col)
            a.fit(X_fit, y_fit)
            return np.asarray(a.infer(np.delete(X_inf, col, 1), y_inf, values=values)).ravel()
        b = AttributeInferenceBlackBox(clf, attack_model_type=kind, attack_feature=col)
        b.fit(X_fit, y_fit)
        queries += len(X_fit)  # fit() queries the model on every fitting record
        return np.asarray(b.infer(np.delete(X_inf, col, 1), y_inf, pred=pred(X_inf), values=values)).ravel()

    g_tr = attack(X_ho, y_ho, X_tr, y_tr)
    g_ho = np.empty(len(X_ho))
    for fit_idx, score_idx in folds:
        g_ho[score_idx] = attack(X_ho[fit_idx], y_ho[fit_idx], X_ho[score_idx], y_ho[score_idx])
    to_idx = {v: i for i, v in enumerate(cand.tolist())}
    return (np.array([to_idx[v] for v in g_tr.tolist()]), np.array([to_idx[v] for v in g_ho.tolist()]), queries)


def run_case(scenario: str, n: int, seed: int, art_models: tuple[str, ...]) -> dict[str, Any]:
    case = build(scenario, n, seed)
    col, X_tr, y_tr, X_ho, y_ho, model = (case[k] for k in ("col", "X_tr", "y_tr", "X_ho", "y_ho", "model"))
    out: dict[str, Any] = {"scenario": scenario, "seed": seed,
                           "model_train_accuracy": float(model.score(X_tr, y_tr)),
                           "model_holdout_accuracy": float(model.score(X_ho, y_ho))}
    t0 = time.perf_counter()
    r = attribute_inference(model, X_tr, y_tr, X_ho, y_ho, column=col, column_name=case["name"], seed=seed)
    t_tr, t_ho = r.train_truth, r.holdout_truth
    base = (r.train.baseline_accuracy, r.holdout.baseline_accuracy)
    out["baseline"] = {"train": base[0], "holdout": base[1], "train_name": r.train.baseline,
                       "holdout_name": r.holdout.baseline}
    out["variants"] = r.variants
    methods: dict[str, Any] = {}
    # Row names must not depend on the seed: the variant `auto` picked is recorded separately.
    out["auto_choice"] = r.method
    methods["privaudit (auto)"] = score(t_tr, r.train_guess, t_ho, r.holdout_guess, base, r.seconds, r.queries)
    # Majority value, for context (the holdout value is cross-fitted by the same folds as privaudit).
    cand = np.asarray(r.candidates)
    other_ho = np.delete(X_ho, col, 1)
    folds = attribute._folds(other_ho, np.searchsorted(model.classes_, y_ho), t_ho, seed)
    maj_ho = np.empty(len(t_ho), dtype=np.int64)
    for fit_idx, score_idx in folds:
        maj_ho[score_idx] = np.bincount(t_ho[fit_idx], minlength=len(cand)).argmax()
    maj_tr = np.full(len(t_tr), np.bincount(t_ho, minlength=len(cand)).argmax())
    methods["majority value (no model)"] = score(t_tr, maj_tr, t_ho, maj_ho, base, 0.0, 0)
    for variant in ("marginal", "imputed"):
        rv = attribute_inference(model, X_tr, y_tr, X_ho, y_ho, column=col, column_name=case["name"], seed=seed,
                                 method=variant)  # type: ignore[arg-type]
        methods[f"privaudit {METHOD_NAMES[variant]}"] = score(t_tr, rv.train_guess, t_ho, rv.holdout_guess, base, rv.seconds,
                                                  rv.queries)
    labels = CallableTarget(lambda Z: model.predict(Z), classes=model.classes_)
    rl = attribute_inference(labels, X_tr, y_tr, X_ho, y_ho, column=col, column_name=case["name"], seed=seed)
    out["auto_choice_label_only"] = rl.method
    methods["privaudit, label-only outputs (auto)"] = score(t_tr, rl.train_guess, t_ho, rl.holdout_guess, base,
                                                            rl.seconds, rl.queries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ART's torch model warns about an implicit softmax dimension
        for kind in art_models:
            t = time.perf_counter()
            g_tr, g_ho, q = run_art(case, kind, folds, cand, seed, baseline=False)
            methods[f"ART AttributeInferenceBlackBox ({kind})"] = score(t_tr, g_tr, t_ho, g_ho, base,
                                                                        time.perf_counter() - t, q)
        for kind in ("rf", "gb"):
            t = time.perf_counter()
            g_tr, g_ho, q = run_art(case, kind, folds, cand, seed, baseline=True)
            methods[f"ART AttributeInferenceBaselineTrueLabel ({kind}, no model)"] = score(
                t_tr, g_tr, t_ho, g_ho, base, time.perf_counter() - t, q)
    out["methods"] = methods
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def mean_sd(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(float(np.mean(values)), digits)} ± {fmt(float(np.std(values, ddof=1)), digits)}"


def choices(names: list[str]) -> str:
    return ", ".join(f"{name} ({names.count(name)}/{len(names)} seeds)" for name in sorted(set(names)))


def findings(runs: list[dict[str, Any]]) -> list[str]:
    """Summary rows computed from the runs: privaudit (auto) against the best ART black-box row."""
    rows = []
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario]
        arts = [name for name in rs[0]["methods"] if name.startswith("ART AttributeInferenceBlackBox")]
        best_art = max(arts, key=lambda a: float(np.mean([r["methods"][a]["train"]["advantage"] for r in rs])))
        for name in ("privaudit (auto)", best_art):
            ms = [r["methods"][name] for r in rs]
            rows.append([scenario, name, mean_sd([m["train"]["advantage"] for m in ms]),
                         mean_sd([m["holdout"]["advantage"] for m in ms]), mean_sd([m["leakage"] for m in ms])])
    return ["## Summary", "",
            "privaudit's attack (auto) next to the ART black-box model with the highest mean train advantage:", "",
            *table(["scenario", "method", "train advantage", "holdout advantage", "leakage"], rows),
            "How to read it: a positive *train* advantage with a holdout advantage near 0 is what the model gives "
            "away about its own training records (leakage). ART's black-box attack is given the model's "
            "prediction for the complete record, true genotype included; on a model that generalises, that "
            "prediction reveals the genotype of any record, member or not (positive holdout advantage), while "
            "for a memorised training record it only repeats the true label the attacker already has. "
            "privaudit's attack never needs the model's answer for the real record, only for candidate "
            "substitutions, and so measures memorisation instead.", ""]


def write_report(path: Path, runs: list[dict[str, Any]], cfg: dict[str, Any], started: str, wall: float,
                 load: str, quick: bool) -> None:
    title = "Attribute inference: privaudit vs ART" + (" (quick smoke run)" if quick else "")
    lines = header(title, cfg["seeds"], started, wall, ("art", "torch"), load)
    n = cfg["n_records"]
    lines += ["## Setup", "",
              f"- Data: `privaudit.datasets.warfarin_like({n}, seed=s, label_depends_on_sensitive=...)`; the first "
              f"{n // 2} records train the target (members), the other {n // 2} are holdout. Sensitive column: "
              "`vkorc1` (index 4), a genotype with values 0 (~50 %), 1 (~37 %), 2 (~13 %).",
              "- Target: `RandomForestClassifier(n_estimators=100, bootstrap=False, random_state=s)`.",
              "- Scenarios: " + "; ".join(f"**{k}**: {v}" for k, v in SCENARIOS.items()) + ".",
              "- Attacker knowledge, identical for every method: the holdout records with their genotype (the "
              "population sample), and for every attacked record its other features and true label. Training "
              "records are attacked with everything fitted on all holdout records; holdout records with "
              "everything fitted on the other 4 of 5 folds (privaudit's own folds, reused for ART), so no "
              "method is ever scored on a record it was fitted on.",
              "- privaudit: `attribute_inference(model, X_train, y_train, X_holdout, y_holdout, column=4, seed=s)` "
              "(method `auto`), and the same forced to each prior (`method='marginal'`, `'imputed'`), and against "
              "a label-only view of the model (`CallableTarget(model.predict)`).",
              "- ART 1.20.1: `AttributeInferenceBlackBox(SklearnClassifier(model), attack_model_type=k, "
              "attack_feature=4)`, `fit(x, y)` on the attacker's records (ART queries the model on them), "
              "`infer(x_without_feature, y, pred=argmax(model output), values=[0, 1, 2])`. Note that ART's "
              "attack needs the model's prediction for the *complete* record (true genotype included); "
              "privaudit's only queries the record with candidate genotypes substituted. "
              "`AttributeInferenceBaselineTrueLabel` is ART's model-free baseline (no queries). ART's attack "
              "models have no `random_state`; `np.random` and `torch` are seeded with s before each fit.",
              "- Advantage = accuracy − the best model-free baseline on the same records (privaudit's: majority "
              "value or an imputation model from the other features and the label, cross-fitted); the same "
              "reference for every row. Leakage = train advantage − holdout advantage.",
              "- Mean ± sample standard deviation over the seeds; per-seed numbers are in the JSON file.", ""]
    lines += findings(runs)
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario]
        if not rs:
            continue
        lines += [f"## {scenario}: {SCENARIOS[scenario]}", "",
                  f"Target accuracy: train {mean_sd([r['model_train_accuracy'] for r in rs])}, holdout "
                  f"{mean_sd([r['model_holdout_accuracy'] for r in rs])}. Best model-free baseline accuracy: train "
                  f"{mean_sd([r['baseline']['train'] for r in rs])} ({', '.join(sorted({r['baseline']['train_name'] for r in rs}))}), "
                  f"holdout {mean_sd([r['baseline']['holdout'] for r in rs])} "
                  f"({', '.join(sorted({r['baseline']['holdout_name'] for r in rs}))}). `auto` picked: "
                  f"{choices([r['auto_choice'] for r in rs])}; with label-only outputs: "
                  f"{choices([r['auto_choice_label_only'] for r in rs])}.", ""]
        rows = []
        for name in rs[0]["methods"]:
            ms = [r["methods"][name] for r in rs]
            rows.append([name, mean_sd([m["train"]["accuracy"] for m in ms]),
                         mean_sd([m["holdout"]["accuracy"] for m in ms]),
                         mean_sd([m["train"]["advantage"] for m in ms]),
                         mean_sd([m["holdout"]["advantage"] for m in ms]), mean_sd([m["leakage"] for m in ms]),
                         mean_sd([m["train"]["g_mean"] for m in ms]), mean_sd([m["train"]["mcc"] for m in ms]),
                         f"{int(np.mean([m['queries'] for m in ms]))}", fmt(float(np.mean([m["seconds"] for m in ms])), 1)])
        lines += table(["method", "train acc", "holdout acc", "train adv", "holdout adv", "leakage", "train g-mean",
                        "train MCC", "queries", "s"], rows)
    lines += ["## Which prior is stronger", "",
              "privaudit's two variants (accuracy, mean over seeds; `auto` picks by holdout accuracy):", ""]
    rows = []
    for scenario in SCENARIOS:
        rs = [r for r in runs if r["scenario"] == scenario]
        for v in ("map-marginal-prior", "map-imputed-prior"):
            rows.append([scenario, v, mean_sd([r["variants"][v]["train_accuracy"] for r in rs]),
                         mean_sd([r["variants"][v]["holdout_accuracy"] for r in rs])])
    lines += table(["scenario", "variant", "train acc", "holdout acc"], rows)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 2000 records, ART without its nn model")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cfg = CONFIGS["quick" if args.quick else "full"]
    out = args.out or BENCH / "results" / ("attribute_inference-quick.md" if args.quick else "attribute_inference.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    started, t0 = now_utc(), time.perf_counter()
    runs = []
    with LoadSampler() as sampler:
        for seed in cfg["seeds"]:
            for scenario in SCENARIOS:
                print(f"seed {seed} {scenario} ...", flush=True)
                runs.append(run_case(scenario, cfg["n_records"], seed, cfg["art_models"]))
                for name, m in runs[-1]["methods"].items():
                    print(f"  {name:60s} train {m['train']['accuracy']:.3f} holdout {m['holdout']['accuracy']:.3f} "
                          f"leakage {m['leakage']:+.3f}", flush=True)
    wall = time.perf_counter() - t0
    write_report(out, runs, cfg, started, wall, sampler.summary(), args.quick)
    out.with_suffix(".json").write_text(json.dumps({"config": {**cfg, "seeds": list(cfg["seeds"])}, "runs": runs,
                                                    "wall_seconds": wall}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
