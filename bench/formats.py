#!/usr/bin/env python
"""Model formats benchmark: how much the reference-model recipe matters, privaudit vs ART, audit time per format.

On a Purchase-like task (privaudit.datasets.purchase_like; smaller than bench/membership.py's so the
whole run fits in about 15 minutes on 2 cores) it

1. trains a torch MLP target and audits it with privaudit's default attacks and K reference models from
   (a) the built-in torch loop (defaults: early stopping on held-out records), (a') the same loop without
   early stopping, (b) the default surrogate (the target exported to ONNX, whose default recipe is the
   surrogate; its outputs equal the module's to 1e-5), (c) a user trainer (``--trainer``: the target's own
   recipe), next to ART 1.20.1's black-box attacks on the same target (``PyTorchClassifier``);
2. does the same for an XGBoost target (``.ubj`` with its ``booster.save_config()`` beside it) against ART's
   ``XGBoostClassifier``;
3. times a default audit of the same MLP in memory, as TorchScript, as ``torch.export`` and as ONNX, and of
   the XGBoost and a LightGBM target from their files.

Every method is scored on the same evaluation records: train and holdout are each cut into random halves;
ART fits its attack models on the first halves, everything is scored on the second halves.

    python bench/formats.py            # writes bench/results/formats.md (+ .json)
    python bench/formats.py --quick    # small smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from _common import LoadSampler, fmt, header, now_utc, pct, roc_summary, stopwatch, table  # noqa: E402
from membership import capture_scores, halves  # noqa: E402

CONFIGS = {
    "full": {"n_records": 8_000, "n_features": 300, "n_classes": 50, "flip": 0.4, "hidden": 256, "epochs": 30,
             "xgb_rounds": 30, "k": 4},
    "quick": {"n_records": 2_000, "n_features": 100, "n_classes": 10, "flip": 0.4, "hidden": 64, "epochs": 20,
              "xgb_rounds": 10, "k": 2},
}
# Chosen through the environment so that joblib workers importing target_trainer see the same one.
CFG: dict[str, Any] = dict(CONFIGS[os.environ.get("PRIVAUDIT_BENCH_FORMATS", "full")])
XGB_PARAMS = {"objective": "multi:softprob", "max_depth": 6, "eta": 0.3, "tree_method": "hist"}
# A regularised booster whose membership signal does not saturate every attack (run with --xgb-mild).
XGB_MILD = {"objective": "multi:softprob", "max_depth": 3, "eta": 0.1, "subsample": 0.8, "min_child_weight": 5,
            "tree_method": "hist"}
LGB_PARAMS = {"objective": "multiclass", "num_leaves": 31, "learning_rate": 0.1, "verbosity": -1, "deterministic": True,
              "num_threads": 1}


def evaluation_split(seed: int) -> tuple[Any, ...]:
    """The benchmark task and its halves: ART fits on the first halves, every method is scored on the second."""
    from privaudit.datasets import purchase_like

    split = purchase_like(CFG["n_records"], n_features=CFG["n_features"], n_classes=CFG["n_classes"], flip=CFG["flip"],
                          seed=seed)
    n_tr, n_ho = len(split.y_train), len(split.y_holdout)
    rng = np.random.default_rng([seed, 2024])
    fit_tr, ev_tr = halves(n_tr, rng)
    fit_ho, ev_ho = halves(n_ho, rng)
    eval_idx = np.r_[ev_tr, n_tr + ev_ho]
    eval_member = np.r_[np.ones(len(ev_tr), bool), np.zeros(len(ev_ho), bool)]
    X_eval = np.vstack([split.X_train[ev_tr], split.X_holdout[ev_ho]])
    y_eval = np.r_[split.y_train[ev_tr], split.y_holdout[ev_ho]]
    return split, n_tr, n_ho, fit_tr, ev_tr, fit_ho, ev_ho, eval_idx, eval_member, X_eval, y_eval


def _mlp(n_features: int, n_classes: int, hidden: int) -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_classes))


def target_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """The target's own recipe as a ``--trainer``: Adam 1e-3, batch 128, a fixed number of epochs, no early stop."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = _mlp(X.shape[1], CFG["n_classes"], CFG["hidden"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(CFG["epochs"]):
        order = torch.randperm(len(Xt), generator=gen)
        for start in range(0, len(order), 128):
            b = order[start:start + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[b]), yt[b]).backward()
            opt.step()
    return model.eval()


def _eval(scores: np.ndarray, eval_idx: np.ndarray, eval_member: np.ndarray, seed: int) -> dict[str, Any]:
    return roc_summary(np.asarray(scores)[eval_idx], eval_member, seed=seed, n_bootstrap=200)


def run_art(classifier: Any, split: Any, fit_tr: np.ndarray, fit_ho: np.ndarray, X_eval: np.ndarray,
            y_eval: np.ndarray, eval_member: np.ndarray, seed: int) -> dict[str, dict[str, Any]]:
    import torch
    from art.attacks.inference.membership_inference import (MembershipInferenceBlackBox,
                                                            MembershipInferenceBlackBoxRuleBased)

    x_in, y_in = split.X_train[fit_tr].astype(np.float32), split.y_train[fit_tr]
    x_out, y_out = split.X_holdout[fit_ho].astype(np.float32), split.y_holdout[fit_ho]
    xe = X_eval.astype(np.float32)
    out = {}
    for kind in ("nn", "rf", "gb", "rule"):
        np.random.seed(seed)
        torch.manual_seed(seed)
        with stopwatch() as t:
            if kind == "rule":
                scores = np.asarray(MembershipInferenceBlackBoxRuleBased(classifier).infer(xe, y_eval), dtype=float).ravel()
            else:
                attack = MembershipInferenceBlackBox(classifier, attack_model_type=kind)
                attack.fit(x_in, y_in, x_out, y_out)
                scores = np.asarray(attack.infer(xe, y_eval, probabilities=True), dtype=np.float64)
                scores = scores[:, -1] if scores.ndim == 2 else scores.ravel()
        out[kind] = {"seconds": t[0], **roc_summary(scores, eval_member, seed=seed, n_bootstrap=200)}
        print(f"  ART {kind}: TPR@0.1% {fmt(out[kind]['0.001'])} ({t[0]:.0f}s)", flush=True)
    return out


def audited(model: Any, split: Any, seed: int, cache: Path, eval_idx: np.ndarray, eval_member: np.ndarray,
            **kw: Any) -> dict[str, Any]:
    """One default privaudit audit: wall time, recipe, and every default attack scored on the eval records."""
    from privaudit import audit

    with capture_scores() as got, stopwatch() as t:
        rep = audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout), reference_models=CFG["k"],
                    seed=seed, cache_dir=cache, what_if=False, jobs=2, command_line=sys.argv, **kw)
    attacks = {name: _eval(r["scores"], eval_idx, eval_member, seed) for name, r in got.items()}
    full = {a.name: a.tpr_at_fpr.get("0.001") for a in rep.membership.attacks}
    best = max(attacks, key=lambda n: (attacks[n]["0.001"] or 0.0, attacks[n]["auc"]))
    out = {"seconds": t[0], "recipe": rep.membership.reference_recipe, "format": rep.model.format,
           "attacks": attacks, "full_pool_tpr": full, "report_best": rep.membership.best, "eval_best": best,
           "warnings": list(rep.warnings), "train_acc": rep.membership.train_accuracy,
           "holdout_acc": rep.membership.holdout_accuracy}
    print(f"  {rep.model.format} [{rep.membership.reference_recipe}]: {t[0]:.0f}s, ensemble_online TPR@0.1% "
          f"{fmt(attacks['ensemble_online']['0.001'])}, best {best} {fmt(attacks[best]['0.001'])}", flush=True)
    return out


def query_seconds(spec: Any, split: Any, **opts: Any) -> float:
    from privaudit.models import LoadOptions, ModelOptions, as_target, load_model

    with stopwatch() as t:
        loaded = as_target(spec) if not isinstance(spec, (str, Path)) else load_model(
            str(spec), LoadOptions(model=ModelOptions(**opts)))
        for X in (split.X_train, split.X_holdout):
            for start in range(0, len(X), 4096):
                loaded.target.predict(X[start:start + 4096])
    return t[0]


def run(seed: int, work: Path) -> dict[str, Any]:
    import lightgbm as lgb
    import torch
    import xgboost as xgb
    from art.estimators.classification import PyTorchClassifier, XGBoostClassifier

    torch.set_num_threads(1)
    split, n_tr, n_ho, fit_tr, ev_tr, fit_ho, ev_ho, eval_idx, eval_member, X_eval, y_eval = evaluation_split(seed)
    res: dict[str, Any] = {"seed": seed, "n_train": n_tr, "n_holdout": n_ho, "n_eval": [len(ev_tr), len(ev_ho)]}

    # 1. The torch MLP target and its files.
    with stopwatch() as t:
        model = target_trainer(split.X_train, split.y_train, seed)
    res["torch_fit_seconds"] = t[0]
    example = torch.as_tensor(split.X_train[:4], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(work / "mlp.pt"))
        torch.onnx.export(model, (example,), str(work / "mlp.onnx"), input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}}, dynamo=False)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(work / "mlp.pt2"))
    print(f"[seed {seed}] torch MLP fitted in {t[0]:.0f}s", flush=True)
    recipes: dict[str, dict[str, Any]] = {}
    recipes["a"] = audited(model, split, seed, work / "cache-a", eval_idx, eval_member)
    recipes["a_no_stop"] = audited(model, split, seed, work / "cache-a2", eval_idx, eval_member,
                                   model_options={"ref_patience": 10 ** 6})
    recipes["b"] = audited(work / "mlp.onnx", split, seed, work / "cache-b", eval_idx, eval_member)
    recipes["c"] = audited(model, split, seed, work / "cache-c", eval_idx, eval_member, trainer="formats:target_trainer")
    recipes["script"] = audited(work / "mlp.pt", split, seed, work / "cache-s", eval_idx, eval_member)
    recipes["export"] = audited(work / "mlp.pt2", split, seed, work / "cache-e", eval_idx, eval_member)
    res["torch"] = recipes
    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(CFG["n_features"],),
                                   nb_classes=CFG["n_classes"])
    res["torch_art"] = run_art(classifier, split, fit_tr, fit_ho, X_eval, y_eval, eval_member, seed)

    # 2. XGBoost target from its native file (+ the config that holds its training parameters).
    with stopwatch() as t:
        booster = xgb.train({**XGB_PARAMS, "num_class": CFG["n_classes"], "seed": seed, "nthread": 1},
                            xgb.DMatrix(split.X_train, label=split.y_train), num_boost_round=CFG["xgb_rounds"])
    res["xgb_fit_seconds"] = t[0]
    booster.save_model(str(work / "model.ubj"))
    (work / "model.config.json").write_text(booster.save_config())
    print(f"[seed {seed}] XGBoost fitted in {t[0]:.0f}s", flush=True)
    res["xgb"] = audited(work / "model.ubj", split, seed, work / "cache-x", eval_idx, eval_member)
    xclf = XGBoostClassifier(model=booster, nb_features=CFG["n_features"], nb_classes=CFG["n_classes"])
    res["xgb_art"] = run_art(xclf, split, fit_tr, fit_ho, X_eval, y_eval, eval_member, seed)

    # 3. A LightGBM target for the timing table.
    lgbm = lgb.train({**LGB_PARAMS, "num_class": CFG["n_classes"], "seed": seed},
                     lgb.Dataset(split.X_train, label=split.y_train), num_boost_round=CFG["xgb_rounds"])
    lgbm.save_model(str(work / "model.txt"))
    res["lgb"] = audited(work / "model.txt", split, seed, work / "cache-l", eval_idx, eval_member)

    res["query_seconds"] = {"torch (in memory)": query_seconds(model, split),
                            "TorchScript .pt": query_seconds(work / "mlp.pt", split),
                            "torch.export .pt2": query_seconds(work / "mlp.pt2", split),
                            "ONNX": query_seconds(work / "mlp.onnx", split),
                            "XGBoost .ubj": query_seconds(work / "model.ubj", split),
                            "LightGBM .txt": query_seconds(work / "model.txt", split)}
    return res


def run_xgb_mild(seed: int, work: Path) -> dict[str, Any]:
    """Only the XGBoost comparison, on the regularised booster XGB_MILD (same data and halves as run())."""
    import xgboost as xgb
    from art.estimators.classification import XGBoostClassifier

    split, n_tr, n_ho, fit_tr, ev_tr, fit_ho, ev_ho, eval_idx, eval_member, X_eval, y_eval = evaluation_split(seed)
    booster = xgb.train({**XGB_MILD, "num_class": CFG["n_classes"], "seed": seed, "nthread": 1},
                        xgb.DMatrix(split.X_train, label=split.y_train), num_boost_round=CFG["xgb_rounds"])
    booster.save_model(str(work / "mild.ubj"))
    (work / "mild.config.json").write_text(booster.save_config())
    out = {"seed": seed, "xgb": audited(work / "mild.ubj", split, seed, work / "cache-m", eval_idx, eval_member)}
    xclf = XGBoostClassifier(model=booster, nb_features=CFG["n_features"], nb_classes=CFG["n_classes"])
    out["xgb_art"] = run_art(xclf, split, fit_tr, fit_ho, X_eval, y_eval, eval_member, seed)
    return out


def mild_lines(mild: list[dict[str, Any]]) -> list[str]:
    c = CFG
    lines = ["## Regularised XGBoost target", "",
             f"`multi:softprob`, max_depth 3, eta 0.1, subsample 0.8, min_child_weight 5, {c['xgb_rounds']} rounds, "
             "from `mild.ubj` with its `mild.config.json`; same data and evaluation halves as above "
             "(`python bench/formats.py --xgb-mild`, run right after the main run; its load was not sampled but the "
             "machine was as busy: ART's nn attack model took up to half an hour here).", ""]
    rows = []
    for r in mild:
        x, xa = r["xgb"], r["xgb_art"]
        xb = _art_best(xa)
        rows.append([str(r["seed"]), f"{x['train_acc']:.3f} / {x['holdout_acc']:.3f}",
                     pct(x["attacks"]["ensemble_online"]["0.001"]), fmt(x["attacks"]["ensemble_online"]["auc"], 3),
                     f"{pct(x['attacks'][x['eval_best']]['0.001'])} ({x['eval_best']})",
                     f"{pct(xa[xb]['0.001'])} ({xb})", fmt(xa[xb]["auc"], 3), f"{x['seconds']:.0f}"])
    lines += table(["seed", "train / holdout accuracy", "privaudit default (ensemble_online) TPR @ 0.1 %", "AUC",
                    "privaudit best", "ART best TPR @ 0.1 %", "ART best AUC", "audit s"], rows)
    lines += ["", "ART per method:", ""]
    lines += table(["seed", "ART method", "TPR @ 1 %", "TPR @ 0.1 %", "AUC", "s"],
                   [[str(r["seed"]), k, pct(v["0.01"]), pct(v["0.001"]), fmt(v["auc"], 3), f"{v['seconds']:.0f}"]
                    for r in mild for k, v in r["xgb_art"].items()])
    return lines


def _art_best(art: dict[str, dict[str, Any]]) -> str:
    return max(art, key=lambda k: (art[k]["0.001"] or 0.0, art[k]["auc"]))


RECIPES = {"a": "(a) built-in torch loop (default: early stopping on held-out records)",
           "a_no_stop": "(a') built-in torch loop without early stopping (`ref_patience` = 10^6)",
           "b": "(b) default surrogate (the ONNX export of the same MLP, default recipe)",
           "c": "(c) user trainer (`--trainer formats:target_trainer`, the target's own recipe)"}


def markdown(results: list[dict[str, Any]], started: str, wall: float, load: str, quick: bool) -> list[str]:
    seeds = [r["seed"] for r in results]
    lines = header("Model formats: reference recipes, privaudit vs ART, audit time per format"
                   + (" (quick smoke run)" if quick else ""), seeds, started, wall,
                   extra_libs=("torch", "onnxruntime", "xgboost", "lightgbm", "art"), load=load)
    c, res = CFG, results[0]
    lines += [f"Data: `purchase_like({c['n_records']}, n_features={c['n_features']}, n_classes={c['n_classes']}, "
              f"flip={c['flip']})` -- smaller than bench/membership.py's 40,000 x 600 x 100 so the run fits the time "
              f"we had on 2 shared cores; {res['n_train']} members (train) and {res['n_holdout']} non-members (holdout). "
              f"Every TPR below is measured on the evaluation halves ({res['n_eval'][0]} members, {res['n_eval'][1]} "
              f"non-members); ART's attack models are fitted on the other halves. K = {c['k']} reference models; "
              f"seeds {', '.join(map(str, seeds))} (each seed draws new data, a new target and new reference models).", "",
              "## Summary: TPR at 0.1 % FPR on the torch MLP and XGBoost targets", ""]
    head = ["target / method", *[f"seed {s}" for s in seeds]]
    rows = []
    for key, label in RECIPES.items():
        rows.append([f"torch, default attack (ensemble_online), {label}",
                     *[pct(r["torch"][key]["attacks"]["ensemble_online"]["0.001"]) for r in results]])
    rows.append(["torch, best privaudit attack with (a)",
                 *[f"{pct(r['torch']['a']['attacks'][r['torch']['a']['eval_best']]['0.001'])} ({r['torch']['a']['eval_best']})"
                   for r in results]])
    rows.append(["torch, ART best of nn/rf/gb/rule",
                 *[f"{pct(r['torch_art'][_art_best(r['torch_art'])]['0.001'])} ({_art_best(r['torch_art'])})" for r in results]])
    rows.append(["XGBoost, default attack (ensemble_online), booster parameters from model.config.json",
                 *[pct(r["xgb"]["attacks"]["ensemble_online"]["0.001"]) for r in results]])
    rows.append(["XGBoost, ART best of nn/rf/gb/rule",
                 *[f"{pct(r['xgb_art'][_art_best(r['xgb_art'])]['0.001'])} ({_art_best(r['xgb_art'])})" for r in results]])
    lines += table(head, rows)
    lines.append("")
    mild_path = BENCH / "results" / "formats-xgb-mild.json"
    if not quick and mild_path.is_file():
        lines += mild_lines(json.loads(mild_path.read_text())["seeds"])
        lines.append("")
    for r in results:
        lines += [f"## Seed {r['seed']}", ""]
        lines += seed_section(r)
        lines.append("")
    return lines


def seed_section(res: dict[str, Any]) -> list[str]:
    c = CFG
    lines = [f"Torch target: MLP {c['n_features']}-{c['hidden']}-tanh-{c['n_classes']}, Adam 1e-3, batch 128, "
              f"{c['epochs']} epochs, no early stopping (train accuracy {res['torch']['a']['train_acc']:.3f}, holdout "
              f"{res['torch']['a']['holdout_acc']:.3f}).", ""]
    names = RECIPES
    t = res["torch"]
    rows = []
    for key, label in names.items():
        r = t[key]
        ens = r["attacks"]["ensemble_online"]
        best = r["eval_best"]
        rows.append([label, pct(ens["0.001"]), f"{fmt(ens['auc'], 3)}", f"{best}: {pct(r['attacks'][best]['0.001'])}",
                     f"{r['seconds']:.0f}"])
    art = res["torch_art"]
    ab = _art_best(art)
    rows.append([f"ART best of nn/rf/gb/rule ({ab})", pct(art[ab]["0.001"]), fmt(art[ab]["auc"], 3), "", f"{art[ab]['seconds']:.0f}"])
    lines += ["### Torch MLP target: TPR at 0.1 % FPR by reference recipe", ""]
    lines += table(["reference models", "default attack (ensemble_online) TPR @ 0.1 %", "AUC",
                    "best privaudit attack, TPR @ 0.1 %", "audit s"], rows)
    surrogate_gap = (t["c"]["attacks"]["ensemble_online"]["0.001"] or 0) - (t["b"]["attacks"]["ensemble_online"]["0.001"] or 0)
    lines += ["", f"Surrogate vs the target's own recipe: {pct(t['b']['attacks']['ensemble_online']['0.001'])} vs "
              f"{pct(t['c']['attacks']['ensemble_online']['0.001'])} TPR at 0.1 % FPR for the default attack "
              f"(difference {pct(surrogate_gap)}). Recipes as the reports name them:", ""]
    lines += [f"- {k}: {t[k]['recipe']}" for k in names]
    lines += ["", "ART on the torch target (`PyTorchClassifier`), every method:", ""]
    lines += table(["ART method", "TPR @ 1 %", "TPR @ 0.1 %", "AUC", "s"],
                   [[k, pct(v["0.01"]), pct(v["0.001"]), fmt(v["auc"], 3), f"{v['seconds']:.0f}"] for k, v in art.items()])
    same = all(abs((t[k]["attacks"][n]["0.001"] or 0) - (t["a"]["attacks"][n]["0.001"] or 0)) < 1e-12
               and abs(t[k]["attacks"][n]["auc"] - t["a"]["attacks"][n]["auc"]) < 1e-9
               for k in ("script", "export") for n in t["a"]["attacks"])
    lines += ["", f"The same MLP audited as TorchScript and as `torch.export` (built-in loop) gives "
              f"{'exactly the same' if same else 'DIFFERENT'} attack numbers as in memory (every attack, AUC and TPR)."]

    x, xa = res["xgb"], res["xgb_art"]
    xb = _art_best(xa)
    lines += ["", "### XGBoost target", "",
              f"`multi:softprob`, max_depth 6, eta 0.3, {c['xgb_rounds']} rounds (train accuracy {x['train_acc']:.3f}, "
              f"holdout {x['holdout_acc']:.3f}); audited from `model.ubj` with `model.config.json` beside it. "
              f"Recipe: {x['recipe']}.", ""]
    rows = [["privaudit default attack (ensemble_online)", pct(x["attacks"]["ensemble_online"]["0.001"]),
             fmt(x["attacks"]["ensemble_online"]["auc"], 3), f"{x['seconds']:.0f}"],
            [f"privaudit best ({x['eval_best']})", pct(x["attacks"][x["eval_best"]]["0.001"]),
             fmt(x["attacks"][x["eval_best"]]["auc"], 3), ""]]
    rows += [[f"ART {k}" + (" (best)" if k == xb else ""), pct(v["0.001"]), fmt(v["auc"], 3), f"{v['seconds']:.0f}"]
             for k, v in xa.items()]
    lines += table(["method", "TPR @ 0.1 %", "AUC", "s"], rows)

    lines += ["", "### Audit time per format", "",
              f"A default audit (K = {c['k']}, default attacks, no what-if table, `--jobs 2`, empty cache) of each "
              "target; 'query s' is loading the model and computing its outputs on every record.", ""]
    per = [("torch (in memory)", t["a"]), ("TorchScript .pt", t["script"]), ("torch.export .pt2", t["export"]),
           ("ONNX", t["b"]), ("XGBoost .ubj", x), ("LightGBM .txt", res["lgb"])]
    lines += table(["format", "reference recipe", "query s", "audit s"],
                   [[name, r["recipe"], f"{res['query_seconds'][name]:.2f}", f"{r['seconds']:.0f}"] for name, r in per])
    lines += ["", "Audit time is dominated by training the reference models (ONNX: the surrogate; the others: their "
              "own recipe), not by the format. Wall times are inflated by the machine's load (see the top of the file); "
              "the first audit of a run (the in-memory torch audit of the first seed) also starts the joblib worker "
              "processes, each importing torch."]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--from-json", type=Path, default=None, help="only re-render the markdown from an earlier run's JSON")
    p.add_argument("--xgb-mild", action="store_true", help="only the regularised XGBoost target; written to "
                   "results/formats-xgb-mild.json and shown in formats.md when that is re-rendered")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ["PRIVAUDIT_BENCH_FORMATS"] = "quick" if args.quick else "full"
    CFG.update(CONFIGS[os.environ["PRIVAUDIT_BENCH_FORMATS"]])
    out = args.out or BENCH / "results" / ("formats-quick.md" if args.quick else "formats.md")
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    started, t0 = now_utc(), time.perf_counter()
    load = LoadSampler()
    if args.xgb_mild:
        mild = []
        for seed in (int(x) for x in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="privaudit-formats-") as tmp:
                mild.append(run_xgb_mild(seed, Path(tmp)))
        (BENCH / "results" / "formats-xgb-mild.json").write_text(
            json.dumps({"config": CFG, "params": XGB_MILD, "seeds": mild, "started": started,
                        "wall": time.perf_counter() - t0}, indent=1, default=str))
        print("wrote results/formats-xgb-mild.json; re-render formats.md with --from-json results/formats.json")
        return 0
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        CFG.update(saved["config"])
        # The header names the run that measured the numbers; this call only re-renders them.
        sys.argv = saved.get("argv", ["bench/formats.py", "--seeds", "0,1"])
        out.write_text("\n".join(markdown(saved["seeds"], saved["started"], saved["wall"], saved["load"], args.quick)) + "\n")
        print(f"wrote {out}")
        return 0
    results = []
    with load:
        for seed in (int(x) for x in args.seeds.split(",")):
            with tempfile.TemporaryDirectory(prefix="privaudit-formats-") as tmp:
                results.append(run(seed, Path(tmp)))
    wall = time.perf_counter() - t0
    out.with_suffix(".json").write_text(json.dumps({"config": CFG, "seeds": results, "started": started, "wall": wall, "argv": sys.argv,
                                                    "load": load.summary()}, indent=1, default=str))
    out.write_text("\n".join(markdown(results, started, wall, load.summary(), args.quick)) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
