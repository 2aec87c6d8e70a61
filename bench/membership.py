#!/usr/bin/env python
"""Membership-inference benchmark: privaudit's attacks next to ART's black-box attacks.

One run builds each target, audits it with privaudit (through ``privaudit.audit`` and, for per-record
scores, through the same internal pieces ``audit`` uses), attacks it with ART 1.20.1, scores every
method on the same evaluation records, and writes bench/results/membership.md (plus a JSON dump).

    python bench/membership.py            # full run, about 21 minutes on 2 cores
    python bench/membership.py --quick    # small smoke run, about 2 minutes

See bench/README.md for the protocol.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (FPR_LABELS, MEMORY_METHOD, LoadSampler, PeakMemory, fmt, header, now_utc, pct,  # noqa: E402
                     roc_summary, stopwatch, table)

BENCH = Path(__file__).resolve().parent
ALL_ATTACKS = ("loss", "shadow", "lira_offline", "lira_online", "rmia_offline", "rmia_online", "ensemble_online",
               "label_only")
REFERENCE_ATTACKS = ("shadow", "lira_offline", "lira_online", "rmia_offline", "rmia_online", "ensemble_online")
ART_METHODS = ("nn", "rf", "gb", "rule")
RMIA_SWEEP = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {
        "purchase": {"n_records": 40_000, "n_features": 600, "n_classes": 100, "flip": 0.42, "hidden": 128,
                     "max_iter": 200},
        "purchase_seeds": (0, 1, 2),
        "bc_seeds": (0, 1, 2),
    },
    "quick": {
        "purchase": {"n_records": 6_000, "n_features": 200, "n_classes": 20, "flip": 0.40, "hidden": 64,
                     "max_iter": 100},
        "purchase_seeds": (0,),
        "bc_seeds": (0,),
    },
}


# ---------------------------------------------------------------------------------------------
# Targets


def _fit_quietly(model: Any, X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        with stopwatch() as t:
            model.fit(X, y)
    return t[0]


def make_target(kind: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from privaudit.datasets import breast_cancer, overfit_model, purchase_like
    from sklearn.neural_network import MLPClassifier

    if kind == "purchase":
        c = cfg["purchase"]
        split = purchase_like(c["n_records"], n_features=c["n_features"], n_classes=c["n_classes"], flip=c["flip"],
                              seed=seed)
        model = MLPClassifier(hidden_layer_sizes=(c["hidden"],), max_iter=c["max_iter"], random_state=seed)
        desc = (f"purchase_like(n_records={c['n_records']}, n_features={c['n_features']}, n_classes={c['n_classes']}, "
                f"flip={c['flip']}, seed=s); MLPClassifier(hidden_layer_sizes=({c['hidden']},), "
                f"max_iter={c['max_iter']}, random_state=s)")
    else:
        split = breast_cancer(seed)
        model = overfit_model(seed)
        desc = "breast_cancer(seed=s); overfit_model(seed=s) (StandardScaler + MLPClassifier(256), alpha=1e-6)"
    fit_s = _fit_quietly(model, split.X_train, split.y_train)
    return {"kind": kind, "seed": seed, "split": split, "model": model, "fit_seconds": fit_s, "description": desc,
            "train_acc": float(model.score(split.X_train, split.y_train)),
            "holdout_acc": float(model.score(split.X_holdout, split.y_holdout)),
            "n_iter": int(getattr(model[-1] if hasattr(model, "steps") else model, "n_iter_", 0))}


def halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


# ---------------------------------------------------------------------------------------------
# privaudit: the public audit() and the same pipeline rebuilt for per-record scores


_REF_LOG: list[dict[str, float]] = []


def _install_reference_timer() -> None:
    """Record the wall time and trained count of every reference-training call audit() makes."""
    A = importlib.import_module("privaudit.audit.stages.references")
    if getattr(A.train_reference_models, "_bench_wrapped", False):
        return
    inner = A.train_reference_models

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = inner(*args, **kwargs)
        _REF_LOG.append({"seconds": time.perf_counter() - start, "trained": out.trained, "k": args[4]})
        return out

    timed._bench_wrapped = True  # type: ignore[attr-defined]
    A.train_reference_models = timed


@contextmanager
def capture_scores() -> Iterator[dict[str, dict[str, Any]]]:
    """Keep the per-record scores (and peak memory) of every attack audit() runs in its main loop.

    audit()'s attack stage calls ``run_attack`` through its module global; wrapping that name catches exactly the
    attacks of the report (not the what-if re-scoring, which imports run_attack itself). Scores that
    come from the analysis cache are not seen, so every audit here starts from its own empty cache
    directory or changes K.
    """
    A = importlib.import_module("privaudit.audit.stages.attacks")
    threads = importlib.import_module("privaudit.threads")
    inner, inner_workers = A.run_attack, threads.workers
    box: dict[str, dict[str, Any]] = {}

    def capturing(spec: Any, ctx: Any) -> Any:
        with PeakMemory() as mem:
            result = inner(spec, ctx)
        box[result.name] = {"scores": np.array(result.scores), "seconds": result.seconds, "memory_mib": mem.mib,
                            "params": dict(result.params)}
        return result

    A.run_attack = capturing
    # One attack at a time (audit() would run them in threads): each attack's seconds and peak
    # memory are then its own, comparable with ART's.
    threads.workers = lambda jobs: 1
    try:
        yield box
    finally:
        A.run_attack, threads.workers = inner, inner_workers


def _audit_options() -> dict[str, Any]:
    """Skip the what-if table: it re-scores attacks and changes no number here."""
    return {"what_if": False}


def build_context(model: Any, split: Any, k: int, seed: int, cache_dir: Path, jobs: int | None = None) -> Any:
    """What audit() builds before running attacks (same recipe, masks, cache keys and output handling)."""
    from privaudit.attacks.membership import AttackContext
    from privaudit.attacks.membership.signals import probability_floor
    from privaudit.audit.stages.references import reference_recipe
    from privaudit.models import as_target
    from privaudit.audit.reference import ScoreCache, train_reference_models
    from privaudit.target import OutputMode, apply_output_mode, detect_output_mode, to_probabilities

    loaded = as_target(model)
    X = np.vstack([split.X_train, split.X_holdout]).astype(np.float64)
    classes = np.asarray(loaded.target.classes)
    labels = np.concatenate([split.y_train, split.y_holdout])
    y = np.searchsorted(classes, labels).astype(np.int64)
    assert np.array_equal(classes[y], labels)
    outputs = loaded.target.predict(X)
    mode = detect_output_mode(outputs, len(classes))
    refs = None
    if k > 0:
        recipe = reference_recipe(loaded, None, seed)
        refs = train_reference_models(recipe, X, y, len(classes), k, seed=seed, jobs=jobs, cache=ScoreCache(cache_dir))
    target_probs = to_probabilities(outputs, mode) if mode.has_scores else None
    ref_probs = None
    if refs is not None:
        seen = OutputMode("probabilities") if mode.kind == "logits" else mode
        ref_probs = to_probabilities(np.asarray(apply_output_mode(refs.probabilities, seen), dtype=np.float64), seen)
    return AttackContext(X=X, y=y, n_classes=len(classes), mode=mode, target_outputs=outputs,
                         target_probs=target_probs, reference_probs=ref_probs,
                         reference_in=None if refs is None else refs.in_mask, target=loaded.target, seed=seed,
                         floor=probability_floor(mode.rounding))


def run_privaudit_attacks(ctx: Any, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    from privaudit.attacks.membership import registry, run_attack

    specs = registry()
    out = {}
    for name in names:
        with PeakMemory() as mem:
            r = run_attack(specs[name], ctx)
        out[name] = {"scores": r.scores, "seconds": r.seconds, "memory_mib": mem.mib, "params": r.params}
    return out


def lira_binned(ctx: Any) -> dict[str, Any]:
    """LiRA online with the difficulty-binned variance ensemble_online uses, scored on its own."""
    from privaudit.attacks.membership import lira

    start = time.perf_counter()
    target_signal, ref_signal = lira.signals(ctx)
    scores = lira.online_scores(target_signal, ref_signal, ctx.reference_in, "binned")
    return {"scores": scores, "seconds": time.perf_counter() - start}


def rmia_sweep(ctx: Any, temperatures: tuple[float, ...]) -> dict[float, np.ndarray]:
    """rmia_online's score at fixed softmax temperatures (no tuning), to see which one is strongest."""
    from privaudit.attacks.membership.rmia import log_ratio
    from privaudit.attacks.membership.signals import tempered_true_class_probability

    out = {}
    for t in temperatures:
        tp = tempered_true_class_probability(ctx.target_probs, ctx.y, t, ctx.floor)
        rp = tempered_true_class_probability(ctx.reference_probs, ctx.y, t, ctx.floor)
        out[t] = log_ratio(tp, rp, ctx.reference_in, offline=False, a=0.0)
    return out


# ---------------------------------------------------------------------------------------------
# ART


def run_art(model: Any, split: Any, fit_tr: np.ndarray, fit_ho: np.ndarray, X_eval: np.ndarray, y_eval: np.ndarray,
            seed: int) -> dict[str, dict[str, Any]]:
    import torch
    from art.attacks.inference.membership_inference import (MembershipInferenceBlackBox,
                                                            MembershipInferenceBlackBoxRuleBased)
    from art.estimators.classification import SklearnClassifier

    classifier = SklearnClassifier(model=model)
    x_in, y_in = split.X_train[fit_tr].astype(np.float32), split.y_train[fit_tr]
    x_out, y_out = split.X_holdout[fit_ho].astype(np.float32), split.y_holdout[fit_ho]
    xe = X_eval.astype(np.float32)
    out: dict[str, dict[str, Any]] = {}
    for kind in ART_METHODS:
        np.random.seed(seed)  # ART builds its rf/gb attack models without a random_state
        torch.manual_seed(seed)
        with PeakMemory() as mem, stopwatch() as t:
            if kind == "rule":
                attack = MembershipInferenceBlackBoxRuleBased(classifier)
                # The rule's decision (1 = the target labels the record correctly) is its whole signal;
                # probabilities=True adds nothing for many classes and is degenerate for two (see README).
                scores = np.asarray(attack.infer(xe, y_eval), dtype=np.float64).ravel()
            else:
                attack = MembershipInferenceBlackBox(classifier, attack_model_type=kind)
                attack.fit(x_in, y_in, x_out, y_out)
                scores = np.asarray(attack.infer(xe, y_eval, probabilities=True), dtype=np.float64)
                scores = scores[:, -1] if scores.ndim == 2 else scores.ravel()
        out[kind] = {"scores": scores, "seconds": t[0], "memory_mib": mem.mib}
    return out


# ---------------------------------------------------------------------------------------------
# One target, one seed


def _best(reports: list[Any]) -> str | None:
    """The attack with the highest TPR at 0.1 % FPR (AUC breaks ties), on all audited records: how this
    benchmark names "privaudit default". The report's own verdict picks its attack on a held-out half
    instead (privaudit.verdict), so the two can differ; the attack numbers here do not depend on it."""
    def key(r: Any) -> tuple[float, float]:
        t = r.tpr_at_fpr.get("0.001")
        return (-1.0 if t is None else t, r.auc)

    return max(reports, key=key).name if reports else None


def bench_target(kind: str, seed: int, cfg: dict[str, Any], cache_root: Path, n_bootstrap: int) -> dict[str, Any]:
    from privaudit import audit
    from privaudit.audit import DEFAULT_ATTACKS

    t = make_target(kind, seed, cfg)
    split, model = t["split"], t["model"]
    print(f"[{kind} seed {seed}] target fitted in {t['fit_seconds']:.1f}s: train acc {t['train_acc']:.3f}, "
          f"holdout acc {t['holdout_acc']:.3f}", flush=True)
    n_tr, n_ho = len(split.y_train), len(split.y_holdout)
    rng = np.random.default_rng([seed, 2024])
    fit_tr, ev_tr = halves(n_tr, rng)
    fit_ho, ev_ho = halves(n_ho, rng)
    eval_idx = np.r_[ev_tr, n_tr + ev_ho]
    eval_member = np.r_[np.ones(len(ev_tr), bool), np.zeros(len(ev_ho), bool)]
    is_member = np.r_[np.ones(n_tr, bool), np.zeros(n_ho, bool)]
    cache = cache_root / f"{kind}-{seed}"
    shutil.rmtree(cache, ignore_errors=True)

    # 1. privaudit's public API: all attacks at K=4, then the reference attacks at K=8 (lira_online among
    #    them); the per-record scores are taken from audit()'s own attack loop.
    opts = _audit_options()
    _REF_LOG.clear()
    with capture_scores() as got4, stopwatch() as w4:
        rep4 = audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout), reference_models=4,
                     attacks=list(ALL_ATTACKS), seed=seed, cache_dir=cache, n_bootstrap=n_bootstrap,
                     command_line=sys.argv, **opts)
    ref4 = dict(_REF_LOG[-1])
    _REF_LOG.clear()
    with capture_scores() as got8, stopwatch() as w8:
        rep8 = audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout), reference_models=8,
                     attacks=list(REFERENCE_ATTACKS), seed=seed, cache_dir=cache, n_bootstrap=n_bootstrap,
                     command_line=sys.argv, **opts)
    ref8 = dict(_REF_LOG[-1])
    default_best = _best([r for r in rep4.membership.attacks if r.name in DEFAULT_ATTACKS])
    print(f"[{kind} seed {seed}] audit() K=4 {w4[0]:.1f}s (best {rep4.membership.best}, default-set best "
          f"{default_best}); K=8 {w8[0]:.1f}s", flush=True)
    # Scores captured must be the ones the report summarises.
    repro_gap = max(abs(r.auc - roc_summary(got[r.name]["scores"], is_member, seed=seed, n_bootstrap=0)["auc"])
                    for rep, got in ((rep4, got4), (rep8, got8)) for r in rep.membership.attacks)

    # 2. K=2 (cached reference models), and RMIA temperature sweeps, from the same pipeline rebuilt.
    per_k: dict[int, dict[str, dict[str, Any]]] = {4: got4, 8: got8}
    sweep: dict[int, dict[float, dict[str, Any]]] = {}
    binned8 = None
    for k in (2, 4, 8):
        ctx = build_context(model, split, k, seed, cache)
        if k == 8:  # not one of privaudit's attacks: LiRA online with the ensemble's variance estimator
            binned8 = lira_binned(ctx)
        if k == 2:
            per_k[2] = run_privaudit_attacks(ctx, REFERENCE_ATTACKS)
        else:  # the rebuilt context must reproduce audit()'s scores exactly
            again = run_privaudit_attacks(ctx, ("rmia_online",))["rmia_online"]["scores"]
            repro_gap = max(repro_gap, float(np.max(np.abs(again - per_k[k]["rmia_online"]["scores"]))))
        if kind == "purchase":
            sweep[k] = {tt: {"all": roc_summary(sc, is_member, seed=seed, n_bootstrap=0),
                             "eval": roc_summary(sc[eval_idx], eval_member, seed=seed, n_bootstrap=0)}
                        for tt, sc in rmia_sweep(ctx, RMIA_SWEEP).items()}
        del ctx
    params = {k: {n: r["params"] for n, r in res.items()} for k, res in per_k.items()}

    # 3. ART on the same target, fitted on the first halves, scored on the second halves.
    X_eval = np.vstack([split.X_train[ev_tr], split.X_holdout[ev_ho]])
    y_eval = np.r_[split.y_train[ev_tr], split.y_holdout[ev_ho]]
    art = run_art(model, split, fit_tr, fit_ho, X_eval, y_eval, seed)
    print(f"[{kind} seed {seed}] ART: " + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in art.items()), flush=True)

    # 4. Everything scored on the evaluation records.
    rows: list[dict[str, Any]] = []
    for name in ALL_ATTACKS:
        r = per_k[4][name]
        needs_ref = name in REFERENCE_ATTACKS
        rows.append({"method": f"privaudit {name}", "k": 4 if needs_ref else 0, "name": name, "family": "privaudit",
                     "seconds": r["seconds"], "total_seconds": r["seconds"] + (ref4["seconds"] if needs_ref else 0.0),
                     "memory_mib": r["memory_mib"],
                     **roc_summary(r["scores"][eval_idx], eval_member, seed=seed, n_bootstrap=n_bootstrap)})
    for name in ("lira_online", "ensemble_online"):
        r = per_k[8][name]
        rows.append({"method": f"privaudit {name} (K=8)", "k": 8, "name": f"{name}@8", "family": "privaudit",
                     "seconds": r["seconds"], "total_seconds": r["seconds"] + ref4["seconds"] + ref8["seconds"],
                     "memory_mib": r["memory_mib"],
                     **roc_summary(r["scores"][eval_idx], eval_member, seed=seed, n_bootstrap=n_bootstrap)})
    assert binned8 is not None
    rows.append({"method": "LiRA online, binned variance (K=8; for comparison, not an attack of its own)", "k": 8,
                 "name": "lira_binned@8", "family": "comparison", "seconds": binned8["seconds"],
                 "total_seconds": binned8["seconds"] + ref4["seconds"] + ref8["seconds"], "memory_mib": None,
                 **roc_summary(binned8["scores"][eval_idx], eval_member, seed=seed, n_bootstrap=n_bootstrap)})
    for kind_art, r in art.items():
        label = "MembershipInferenceBlackBoxRuleBased" if kind_art == "rule" else f"MembershipInferenceBlackBox ({kind_art})"
        rows.append({"method": f"ART {label}", "k": 0, "name": f"art_{kind_art}", "family": "art",
                     "seconds": r["seconds"], "total_seconds": r["seconds"], "memory_mib": r["memory_mib"],
                     **roc_summary(r["scores"], eval_member, seed=seed, n_bootstrap=n_bootstrap)})

    all_records = {k: {n: roc_summary(r["scores"], is_member, seed=seed, n_bootstrap=0) for n, r in res.items()}
                   for k, res in per_k.items()}
    eval_records = {k: {n: roc_summary(r["scores"][eval_idx], eval_member, seed=seed, n_bootstrap=0)
                        for n, r in res.items()} for k, res in per_k.items()}
    public = [{"name": a.name, "auc": a.auc, "tpr_at_fpr": dict(a.tpr_at_fpr), "seconds": a.seconds,
               "params": a.params} for a in rep4.membership.attacks]
    public8 = [{"name": a.name, "auc": a.auc, "tpr_at_fpr": dict(a.tpr_at_fpr), "seconds": a.seconds,
                "params": a.params} for a in rep8.membership.attacks]
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "kind": kind, "seed": seed, "description": t["description"], "fit_seconds": t["fit_seconds"],
        "train_acc": t["train_acc"], "holdout_acc": t["holdout_acc"], "n_iter": t["n_iter"],
        "n_train": n_tr, "n_holdout": n_ho, "n_eval_members": int(eval_member.sum()),
        "n_eval_nonmembers": int((~eval_member).sum()), "n_art_fit": [len(fit_tr), len(fit_ho)],
        "audit_k4_seconds": w4[0], "audit_k8_seconds": w8[0], "_model": model, "_split": split,
        "ref_k4": ref4, "ref_k8": ref8, "best": rep4.membership.best, "default_best": default_best,
        "best8": rep8.membership.best, "public_k4": public, "public_k8": public8,
        "split_check": rep4.split_check.message, "repro_max_auc_gap": repro_gap,
        "rows": rows, "all_records": all_records, "eval_records": eval_records, "params": params,
        "rmia_sweep": {k: {str(tt): v for tt, v in d.items()} for k, d in sweep.items()},
    }


# ---------------------------------------------------------------------------------------------
# Where the time goes in one default audit


def timing_study(model: Any, split: Any, seed: int, cache_root: Path) -> dict[str, Any]:
    """Phases of one default audit (K=4) from an empty cache, the same audit re-run on its cache, and
    reference training alone with jobs=1 from another empty cache."""
    from privaudit import audit
    from privaudit.audit.stages.references import reference_recipe
    from privaudit.models import as_target
    from privaudit.models.sklearn import SklearnTarget
    from privaudit.audit.reference import ScoreCache

    R = importlib.import_module("privaudit.audit.stages.references")
    A = importlib.import_module("privaudit.audit.stages.attacks")
    acc: dict[str, float] = defaultdict(float)
    originals: dict[tuple[Any, str], Any] = {}

    def wrap(owner: Any, attr: str, phase: str) -> None:
        fn = getattr(owner, attr)
        originals[(owner, attr)] = fn

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[phase] += time.perf_counter() - start

        setattr(owner, attr, timed)

    runs: dict[str, dict[str, Any]] = {}
    cache_a, cache_b = cache_root / "timing-a", cache_root / "timing-b"
    try:
        wrap(R, "train_reference_models", "reference training")
        wrap(SklearnTarget, "predict", "target predictions")
        wrap(A, "check_split", "split check")
        wrap(A, "run_attack", "attacks")
        wrap(A, "attack_report", "metrics, bootstrap and epsilon per attack")
        # Each what-if row is scored by whatif._row (the variants run in the attacks' threads).
        wrap(importlib.import_module("privaudit.audit.whatif"), "_row", "what-if table")
        shutil.rmtree(cache_a, ignore_errors=True)
        for label in ("first run, jobs=2, empty cache", "re-run, same cache"):
            acc.clear()
            with stopwatch() as w:
                rep = audit(model, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout),
                            reference_models=4, seed=seed, cache_dir=cache_a, jobs=2, command_line=sys.argv)
            runs[label] = {"wall": w[0], "phases": dict(acc), "best": rep.membership.best,
                           "trained": rep.membership.reference_models_trained}
            print(f"[timing] {label}: {w[0]:.1f}s {({k: round(v, 1) for k, v in acc.items()})}", flush=True)
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    # Reference training alone, jobs=1, same recipe/data/seed, empty cache.
    from privaudit.audit.reference import train_reference_models

    loaded = as_target(model)
    X = np.vstack([split.X_train, split.X_holdout]).astype(np.float64)
    classes = np.asarray(loaded.target.classes)
    y = np.searchsorted(classes, np.r_[split.y_train, split.y_holdout]).astype(np.int64)
    shutil.rmtree(cache_b, ignore_errors=True)
    with stopwatch() as w1:
        train_reference_models(reference_recipe(loaded, None, seed), X, y, len(classes), 4, seed=seed, jobs=1,
                               cache=ScoreCache(cache_b))
    print(f"[timing] reference training jobs=1: {w1[0]:.1f}s", flush=True)
    for c in (cache_a, cache_b):
        shutil.rmtree(c, ignore_errors=True)
    return {"runs": runs, "reference_jobs1": w1[0]}


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------------
# Markdown


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return None if len(v) < len(xs) or not v else float(np.mean(v))


def _ci(row: dict[str, Any], key: str) -> str:
    ci = row.get(f"{key}_ci")
    return "" if ci is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"


def comparison_table(res: dict[str, Any]) -> list[str]:
    head = ["method", "AUC", *[f"TPR @ {l} FPR" for l in FPR_LABELS], "attack s", "s incl. references",
            "peak MiB"]
    rows = []
    for r in res["rows"]:
        name = r["method"]
        if r["name"] == res["default_best"]:
            name += " **(privaudit default)**"
        rows.append([name, fmt(r["auc"]), fmt(r["0.01"]), fmt(r["0.001"]) + _ci(r, "0.001"), fmt(r["0.0001"]),
                     f"{r['seconds']:.2f}", f"{r['total_seconds']:.1f}",
                     "n/a" if r["memory_mib"] is None else f"{r['memory_mib']:.1f}"])
    return table(head, rows)


def bars(purchase: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    per_seed = []
    for res in purchase:
        by = {r["name"]: r for r in res["rows"]}
        art = max((r for r in res["rows"] if r["family"] == "art"), key=lambda r: (r["0.001"] or 0.0, r["auc"]))
        per_seed.append({"seed": res["seed"], "default": res["default_best"], "default_tpr": by[res["default_best"]]["0.001"],
                         "art": art["method"], "art_tpr": art["0.001"], "lira8_tpr": by["lira_online@8"]["0.001"],
                         "binned8_tpr": by["lira_binned@8"]["0.001"],
                         "n0": res["n_eval_nonmembers"]})
    d = _mean([p["default_tpr"] for p in per_seed])
    a = _mean([p["art_tpr"] for p in per_seed])
    l8 = _mean([p["lira8_tpr"] for p in per_seed])
    n0 = min(p["n0"] for p in per_seed)
    floor = 1.0 / n0
    lines = table(["seed", "privaudit default (attack)", "TPR @ 0.1 %", "ART best (method)", "TPR @ 0.1 %",
                   "privaudit lira_online K=8", "default / ART", "default / lira_online@8"],
                  [[p["seed"], p["default"], fmt(p["default_tpr"]), p["art"], fmt(p["art_tpr"]), fmt(p["lira8_tpr"]),
                    "inf" if not p["art_tpr"] else f"{p['default_tpr'] / p['art_tpr']:.1f}x",
                    "inf" if not p["lira8_tpr"] else f"{p['default_tpr'] / p['lira8_tpr']:.2f}x"] for p in per_seed]
                  + [["**mean**", "", f"**{fmt(d)}**", "", f"**{fmt(a)}**", f"**{fmt(l8)}**",
                      "inf" if not a else f"**{d / a:.1f}x**" if d is not None else "n/a",
                      "inf" if not l8 else f"**{d / l8:.2f}x**" if d is not None else "n/a"]])
    out: dict[str, Any] = {"default_mean": d, "art_mean": a, "lira8_mean": l8, "floor": floor, "per_seed": per_seed}
    if d is None or a is None or l8 is None:
        lines.append("A bar cannot be judged: some rate is not resolvable at this sample size.")
        return lines, out
    if a > 0:
        bar1, need = d >= 20 * a, f"20 x ART's best = {20 * a:.4f}"
    else:
        bar1, need = d >= 10 * floor, f"ART scores 0, so 10 x 1/{n0} = {10 * floor:.4f}"
    bar2 = d >= l8
    b8 = _mean([p["binned8_tpr"] for p in per_seed])
    out.update(bar_art=bar1, bar_lira8=bar2, binned8_mean=b8)
    lines += [f"- Bar 1, privaudit default >= {need}: mean {d:.4f} -> **{'HOLDS' if bar1 else 'FAILS'}**",
              f"- Bar 2, privaudit default >= lira_online with 8 reference models ({l8:.4f}): mean {d:.4f} -> "
              f"**{'HOLDS' if bar2 else 'FAILS'}**",
              f"- per seed, bar 1 holds in {sum(_bar1(p, floor) for p in per_seed)}/{len(per_seed)} seeds and bar 2 in "
              f"{sum((p['default_tpr'] or 0) >= (p['lira8_tpr'] or 0) for p in per_seed)}/{len(per_seed)}",
              "- Not a bar, for comparison: lira_online follows the paper (one shared variance below 16 models per "
              "side). With the difficulty-binned variance that ensemble_online uses inside, LiRA online at K=8 reaches "
              f"{fmt(b8)} (per seed " + " / ".join(fmt(p["binned8_tpr"]) for p in per_seed) + "); the default at K=4 "
              f"{'does not reach' if b8 is not None and d < b8 else 'reaches'} that.", ""]
    return lines, out


def _bar1(p: dict[str, Any], floor: float) -> bool:
    d, a = p["default_tpr"] or 0.0, p["art_tpr"] or 0.0
    return d >= 20 * a if a > 0 else d >= 10 * floor


def k_study(purchase: list[dict[str, Any]]) -> list[str]:
    names = ALL_ATTACKS
    lines = []
    for scope, label in (("all_records", "all audited records"), ("eval_records", "evaluation records only")):
        rows = []
        for n in names:
            row = [n]
            for k in (2, 4, 8):
                src = k if n in REFERENCE_ATTACKS else 4
                v01 = _mean([res[scope][src][n]["0.001"] for res in purchase])
                auc = _mean([res[scope][src][n]["auc"] for res in purchase])
                row.append(f"{fmt(v01)} / {fmt(auc, 3)}")
            rows.append(row)
        best = []
        for k in (2, 4, 8):
            scores = {n: _mean([res[scope][k if n in REFERENCE_ATTACKS else 4][n]["0.001"] for res in purchase]) or 0.0
                      for n in names}
            best.append(max(scores, key=lambda n: scores[n]))
        rows.append(["**strongest at 0.1 %**", *best])
        n0 = purchase[0][scope][4]["loss"]["n_nonmembers"]
        lines += [f"Mean over seeds, on {label} ({n0} non-members); each cell is TPR @ 0.1 % FPR / AUC "
                  "(loss and label_only use no reference models, so their value repeats):", ""]
        lines += table(["attack", "K=2", "K=4", "K=8"], rows)
    return lines


def sweep_table(purchase: list[dict[str, Any]]) -> list[str]:
    rows = []
    for tt in RMIA_SWEEP:
        row = [f"T = {tt:g}"]
        for k in (2, 4, 8):
            v = _mean([res["rmia_sweep"][k][str(tt)]["all"]["0.001"] for res in purchase])
            auc = _mean([res["rmia_sweep"][k][str(tt)]["all"]["auc"] for res in purchase])
            row.append(f"{fmt(v)} / {fmt(auc, 3)}")
        rows.append(row)
    picked = []
    for k in (2, 4, 8):
        picked.append(", ".join(f"{res['params'][k]['rmia_online'].get('temperature')}" for res in purchase))
    rows.append(["temperature rmia_online's tuner picked (per seed)", *picked])
    return table(["rmia_online, fixed temperature", "K=2", "K=4", "K=8"], rows)


def write_markdown(path: Path, results: dict[str, Any], started: str, wall: float, cfg_name: str,
                   load: str) -> dict[str, Any]:
    purchase = [r for r in results["targets"] if r["kind"] == "purchase"]
    bc = [r for r in results["targets"] if r["kind"] == "breast_cancer"]
    seeds = sorted({r["seed"] for r in results["targets"]})
    lines = header("Membership inference: privaudit vs ART" + (" (quick smoke run)" if cfg_name == "quick" else ""),
                   seeds, started, wall, extra_libs=("art", "torch"), load=load)
    lines += ["## Protocol", "",
              "- Targets: " + "; ".join(sorted({f"**{r['kind']}**: {r['description']}" for r in results["targets"]})),
              "- Every method attacks the same fitted target and is scored on the same **evaluation records**: "
              "train and holdout are each cut in two random halves; ART's attack models are fitted on the first halves "
              "(`fit(x, y, test_x, test_y)` with the known members and non-members), and every method, privaudit's "
              "included, is scored on the second halves. privaudit never sees membership labels: its reference "
              "models are trained on random halves of all audited records (as `audit()` does), and its per-record "
              "scores are restricted to the evaluation records.",
              "- privaudit: `privaudit.audit(model, (Xtr, ytr), (Xho, yho), reference_models=4, attacks=[all eight], "
              "seed=s, cache_dir=...)`, then `reference_models=8` with the six reference-model attacks (the first "
              "four reference models come from the cache). Per-record scores are captured from `audit()`'s own "
              "attack loop (by wrapping `privaudit.audit.stages.attacks.run_attack`); the what-if table is switched off "
              "(`what_if=False`) since it changes no number here. K=2 and the RMIA temperature sweep rebuild the "
              "same pipeline from the internal pieces (`AttackContext`, `registry()`, `run_attack`, "
              "`train_reference_models`, same cache); the rebuilt pipeline reproduces `audit()`'s rmia_online "
              "scores, and the captured scores reproduce the report's AUCs (largest difference over all runs: "
              f"{max(r['repro_max_auc_gap'] for r in results['targets']):.2e}). "
              "**privaudit default** is the attack among `DEFAULT_ATTACKS` with the highest TPR at 0.1 % FPR "
              "on all audited records, i.e. chosen with the audit's own membership labels (the report's verdict "
              "chooses its attack on a held-out half instead; see bench/results/verdicts.md).",
              "- ART 1.20.1: `MembershipInferenceBlackBox(SklearnClassifier(model), attack_model_type=nn|rf|gb)` "
              "scored with `infer(x, y, probabilities=True)`; `MembershipInferenceBlackBoxRuleBased` scored with "
              "its 0/1 decision (see README). `np.random` and `torch` are seeded with s first.",
              "- Metrics: `privaudit.metrics.auc` and `tpr_at_fprs` for every method; TPR @ 0.1 % FPR carries a "
              "95 % stratified bootstrap interval (200 resamples); `n/a` where the evaluation set has fewer than "
              "1/FPR non-members. 'attack s' is the method's own scoring time (ART: fit + infer); 's incl. "
              "references' adds the reference-model training privaudit needs (K=4, jobs=2 on 2 cores; K=8 adds "
              "four more models). Targets are fitted with one BLAS thread.",
              f"- Peak memory: {MEMORY_METHOD}.", ""]
    lines += ["## Targets", ""]
    lines += table(["target", "seed", "train / holdout", "eval members / non-members", "train acc", "holdout acc",
                    "MLP iterations", "fit s (1 core)", "split check"],
                   [[r["kind"], r["seed"], f"{r['n_train']} / {r['n_holdout']}",
                     f"{r['n_eval_members']} / {r['n_eval_nonmembers']}", fmt(r["train_acc"], 3),
                     fmt(r["holdout_acc"], 3), r["n_iter"], f"{r['fit_seconds']:.1f}", r["split_check"]]
                    for r in results["targets"]])
    verdict: dict[str, Any] = {}
    if purchase:
        lines += ["## Bars (Purchase-like, TPR @ 0.1 % FPR on the evaluation records)", ""]
        bl, verdict = bars(purchase)
        lines += bl
    for group, title in ((purchase, "Purchase-like"), (bc, "Breast cancer")):
        for res in group:
            lines += [f"## {title}, seed {res['seed']}: side by side", "",
                      f"{res['n_eval_members']} members / {res['n_eval_nonmembers']} non-members evaluated. "
                      f"Reference training: K=4 {res['ref_k4']['seconds']:.1f}s ({int(res['ref_k4']['trained'])} "
                      f"models), K=8 adds {res['ref_k8']['seconds']:.1f}s ({int(res['ref_k8']['trained'])} models). "
                      f"`audit()` with all attacks at K=4 took {res['audit_k4_seconds']:.1f}s in all; its best: "
                      f"{res['best']}.", ""]
            lines += comparison_table(res)
    if purchase:
        lines += ["## Which attack is strongest, by number of reference models (Purchase-like)", ""]
        lines += k_study(purchase)
        lines += ["RMIA's softmax temperature, online variant, all audited records (TPR @ 0.1 % / AUC, mean over "
                  "seeds):", ""]
        lines += sweep_table(purchase)
    lines += ["## privaudit's own report (`audit()`, all audited records, K=4 and K=8)", ""]
    rows = []
    for res in results["targets"]:
        for k, a in [(4, a) for a in res["public_k4"]] + [(8, a) for a in res["public_k8"]]:
            rows.append([res["kind"], res["seed"], a["name"] + (" (K=8)" if k == 8 else ""), fmt(a["auc"]),
                         *[fmt(a["tpr_at_fpr"].get(key)) for key in ("0.01", "0.001", "0.0001")], f"{a['seconds']:.2f}",
                         "; ".join(f"{pk}={pv}" for pk, pv in a["params"].items())])
    lines += table(["target", "seed", "attack", "auc", "tpr_at_fpr 0.01", "0.001", "0.0001", "seconds", "params"], rows)
    lines += ["`membership.best` per run: " + ", ".join(f"{r['kind']} seed {r['seed']}: {r['best']} "
                                                        f"(default set: {r['default_best']})" for r in results["targets"]),
              ""]
    if results.get("timing"):
        lines += timing_lines(results["timing"])
    path.write_text("\n".join(lines) + "\n")
    return verdict


def timing_lines(tm: dict[str, Any]) -> list[str]:
    """The 'where the time goes' section from timing_study()'s result."""
    lines: list[str] = []
    runs = tm["runs"]
    first, again = runs["first run, jobs=2, empty cache"], runs["re-run, same cache"]
    lines += ["## Where the time goes (Purchase-like, seed 0, default attacks, K=4)", "",
              "`audit(model, train, holdout, reference_models=4, seed=0, jobs=2, cache_dir=<empty>)` with its "
              "defaults, timed in-process with `time.perf_counter`; phases are measured by wrapping "
              "`privaudit.audit.stages.references.train_reference_models`, `SklearnTarget.predict` (every query to the target), "
              "`check_split`, `run_attack`, `attack_report` (bootstrap with 200 resamples and the epsilon bound) "
              "and `whatif._row` (each what-if row). Attacks, their metrics and the what-if variants run in up to `jobs` threads, "
              "so those phase columns add up the time of every thread and can overlap; the share that is not "
              "training or predicting is therefore taken as wall time minus the two, which no overlap can flatter. "
              "On the re-run the split check and the analysis (attack scores, their metrics, the what-if rows) "
              "come from the cache, keyed by the data, the target's outputs, the reference scores, the options "
              "and privaudit's source.", ""]
    phase_names = ["target predictions", "reference training", "split check", "attacks",
                   "metrics, bootstrap and epsilon per attack", "what-if table"]
    rows = []
    for label, run in runs.items():
        ph = run["phases"]
        not_train = run["wall"] - ph.get("reference training", 0.0) - ph.get("target predictions", 0.0)
        rows.append([label, f"{run['wall']:.1f}", *[f"{ph.get(p, 0.0):.1f}" for p in phase_names],
                     f"{not_train:.1f}", pct(not_train / run["wall"], 1), run["trained"]])
    lines += table(["run", "wall s", *phase_names, "s not training/predicting", "share not training/predicting",
                    "models trained"], rows)
    t2 = first["phases"]["reference training"]
    lines += [f"- Share of the first run's wall time that is not training or predicting: "
              f"**{pct((first['wall'] - t2 - first['phases'].get('target predictions', 0)) / first['wall'], 1)}** "
              f"(bar: under 10 %; the split check, a 3-fold gradient-boosting fit with early stopping on up to "
              f"4,000 rows, is {first['phases'].get('split check', 0):.1f}s of it).",
              f"- Cached re-run: {again['wall']:.1f}s = **{pct(again['wall'] / first['wall'], 1)}** of the first "
              f"run ({first['wall']:.1f}s; bar: under 5 %).",
              f"- Reference training, 4 models from an empty cache: jobs=1 {tm['reference_jobs1']:.1f}s, jobs=2 "
              f"{t2:.1f}s -> speed-up **{tm['reference_jobs1'] / t2:.2f}x** on 2 cores.", ""]
    return lines


def _timing_only(cfg: dict[str, Any], cfg_name: str, cache_root: Path, started: str, t0: float,
                 out: Path | None) -> int:
    """Re-measure only where the time goes, e.g. on a quiet machine; its own results file."""
    load = LoadSampler()
    try:
        load.__enter__()
        target = make_target("purchase", cfg["purchase_seeds"][0], cfg)
        tm = timing_study(target["model"], target["split"], target["seed"], cache_root)
    finally:
        load.__exit__()
        shutil.rmtree(cache_root, ignore_errors=True)
    wall = time.perf_counter() - t0
    path = out or BENCH / "results" / ("membership-timing-quick.md" if cfg_name == "quick" else "membership-timing.md")
    lines = header("Membership audit: where the time goes (timing study alone)", [target["seed"]], started, wall,
                   load=load.summary())
    lines += [f"Target: {target['description']} with s = {target['seed']}, fitted in {target['fit_seconds']:.1f}s "
              f"(train accuracy {target['train_acc']:.3f}, holdout {target['holdout_acc']:.3f}). The same study "
              "`python bench/membership.py` runs after its comparisons; this file comes from "
              "`--timing-only`, which runs nothing else, so that it can be taken when the machine is quiet.", ""]
    lines += timing_lines(tm)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(_jsonable({"timing": tm, "wall_seconds": wall}), indent=1))
    print(f"wrote {path} ({wall / 60:.1f} min)")
    return 0


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return None  # per-record scores are not dumped
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return str(o)
    return o


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (one seed, small Purchase-like target)")
    p.add_argument("--out", type=Path, default=None, help="markdown output (default bench/results/membership[-quick].md)")
    p.add_argument("--cache-dir", type=Path, default=None, help="reference-score cache root (default: a temporary dir)")
    p.add_argument("--no-timing", action="store_true", help="skip the where-does-the-time-go study")
    p.add_argument("--timing-only", action="store_true",
                   help="only the timing study (seed-0 Purchase-like target), written to membership-timing.md")
    p.add_argument("--targets", default="purchase,breast_cancer")
    p.add_argument("--bootstrap", type=int, default=200)
    args = p.parse_args(argv)
    cfg_name = "quick" if args.quick else "full"
    cfg = CONFIGS[cfg_name]
    out = args.out or BENCH / "results" / ("membership-quick.md" if args.quick else "membership.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # loky workers
    started, t0 = now_utc(), time.perf_counter()
    cache_root = args.cache_dir or Path(tempfile.mkdtemp(prefix="privaudit-bench-"))
    if args.timing_only:
        return _timing_only(cfg, cfg_name, cache_root, started, t0, args.out)
    _install_reference_timer()
    targets = args.targets.split(",")
    results: dict[str, Any] = {"config": cfg_name, "targets": []}
    load = LoadSampler()
    try:
        load.__enter__()
        if "purchase" in targets:
            for s in cfg["purchase_seeds"]:
                results["targets"].append(bench_target("purchase", s, cfg, cache_root, args.bootstrap))
                if s != cfg["purchase_seeds"][0]:  # only the first seed's target is kept, for the timing study
                    results["targets"][-1].pop("_model"), results["targets"][-1].pop("_split")
        if "breast_cancer" in targets:
            for s in cfg["bc_seeds"]:
                results["targets"].append(bench_target("breast_cancer", s, cfg, cache_root, args.bootstrap))
                results["targets"][-1].pop("_model"), results["targets"][-1].pop("_split")
        if not args.no_timing and "purchase" in targets:
            first = next(r for r in results["targets"] if r["kind"] == "purchase")
            results["timing"] = timing_study(first["_model"], first["_split"], first["seed"], cache_root)
    finally:
        load.__exit__()
        if args.cache_dir is None:
            shutil.rmtree(cache_root, ignore_errors=True)
    for r in results["targets"]:
        r.pop("_model", None), r.pop("_split", None)
    wall = time.perf_counter() - t0
    verdict = write_markdown(out, results, started, wall, cfg_name, load.summary())
    results["verdict"] = verdict
    results["wall_seconds"] = wall
    out.with_suffix(".json").write_text(json.dumps(_jsonable(results), indent=1))
    print(f"wrote {out} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
