#!/usr/bin/env python
"""Which scoring rule should privaudit use at K=4? Variants of its attacks on the Purchase-like target.

Trains the Purchase-like target and four reference models per seed (same recipe, masks and seeds as
``audit()``), then scores every record with privaudit's own attacks and with a few variants built
from privaudit's public pieces: RMIA at more temperatures and other estimates of p(x), LiRA with one
variance per difficulty group, and rank-averages of attacks. With ``--k8`` four more reference models
per seed give the same attacks at K=8, for the comparison the membership bench's bar 2 makes.

    python bench/variants.py                               # seeds 0-2 (the membership bench's), ~6 min
    python bench/variants.py --seeds 3 4 5 --k8 --name variants-heldout   # seeds no choice was made on
    python bench/variants.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LoadSampler, fmt, header, now_utc, roc_summary, table  # noqa: E402
from membership import CONFIGS, build_context, lira_binned, make_target, run_privaudit_attacks  # noqa: E402

BENCH = Path(__file__).resolve().parent
ATTACKS = ("loss", "shadow", "lira_offline", "lira_online", "rmia_offline", "rmia_online", "ensemble_online")
K8_ATTACKS = ("lira_online", "rmia_online", "ensemble_online")
TEMPERATURES = (1.0, 1.5, 2.0, 2.5, 3.0)


WEIGHTS_IN = (0.25, 0.35, 0.5, 0.65, 0.75)


def _rank(s: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(s, kind="stable"), kind="stable") / (len(s) - 1.0)


def variants(ctx: Any) -> dict[str, np.ndarray]:
    from privaudit.attacks.membership.rmia import log_ratio
    from privaudit.attacks.membership.signals import tempered_true_class_probability

    base = {n: r["scores"] for n, r in run_privaudit_attacks(ctx, ATTACKS).items()}
    out = {f"privaudit {n}": s for n, s in base.items()}
    for t in TEMPERATURES:
        tp = tempered_true_class_probability(ctx.target_probs, ctx.y, t, ctx.floor)
        rp = tempered_true_class_probability(ctx.reference_probs, ctx.y, t, ctx.floor)
        out[f"rmia_online, T={t:g}"] = log_ratio(tp, rp, ctx.reference_in, offline=False, a=0.0)
    # RMIA online estimates p(x) as the plain mean over IN and OUT models; weigh the two groups instead.
    tp = tempered_true_class_probability(ctx.target_probs, ctx.y, 2.0, ctx.floor)
    rp = tempered_true_class_probability(ctx.reference_probs, ctx.y, 2.0, ctx.floor)
    ins = ctx.reference_in
    p_in = np.where(ins, rp, 0.0).sum(0) / np.maximum(ins.sum(0), 1)
    p_out = np.where(~ins, rp, 0.0).sum(0) / np.maximum((~ins).sum(0), 1)
    for w in WEIGHTS_IN:
        px = w * p_in + (1.0 - w) * p_out
        out[f"rmia_online T=2, p(x) = {w:g} IN + {1 - w:g} OUT"] = np.log(np.maximum(tp, 1e-300)) - np.log(np.maximum(px, 1e-300))
    out["rmia_online T=2, p(x) geometric mean"] = np.log(np.maximum(tp, 1e-300)) - np.log(np.maximum(rp, 1e-300)).mean(0)
    binned = lira_binned(ctx)["scores"]
    out["lira_online, binned variance"] = binned
    out["rank mean of rmia_online and lira_online"] = _rank(base["rmia_online"]) + _rank(base["lira_online"])
    out["rank mean of rmia_online and lira_online binned (= ensemble_online)"] = _rank(base["rmia_online"]) + _rank(binned)
    out["rank mean of rmia_online, lira_online binned, rmia_offline"] = (
        _rank(base["rmia_online"]) + _rank(binned) + _rank(base["rmia_offline"]))
    out["rank mean of rmia_online, lira_online, rmia_offline"] = (_rank(base["rmia_online"]) + _rank(base["lira_online"])
                                                                  + _rank(base["rmia_offline"]))
    return out


def k8_rows(ctx: Any) -> dict[str, np.ndarray]:

    out = {f"privaudit {n} (K=8)": r["scores"] for n, r in run_privaudit_attacks(ctx, K8_ATTACKS).items()}
    out["lira_online, binned variance (K=8)"] = lira_binned(ctx)["scores"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the membership bench's seeds")
    p.add_argument("--k8", action="store_true", help="also train four more reference models: rows at K=8")
    p.add_argument("--name", default=None, help="results file name (default variants, or variants-quick)")
    args = p.parse_args(argv)
    cfg_name = "quick" if args.quick else "full"
    cfg = CONFIGS[cfg_name]
    seeds = tuple(args.seeds) if args.seeds else cfg["purchase_seeds"]
    out = BENCH / "results" / f"{args.name or ('variants-quick' if args.quick else 'variants')}.md"
    warnings.filterwarnings("ignore")
    started, t0 = now_utc(), time.perf_counter()
    cache_root = Path(tempfile.mkdtemp(prefix="privaudit-variants-"))
    per_seed: list[dict[str, dict[str, Any]]] = []
    with LoadSampler() as load:
        try:
            for seed in seeds:
                t = make_target("purchase", seed, cfg)
                ctx = build_context(t["model"], t["split"], args.k, seed, cache_root / str(seed))
                m = np.r_[np.ones(len(t["split"].y_train), bool), np.zeros(len(t["split"].y_holdout), bool)]
                scores = variants(ctx)
                if args.k8:
                    del ctx
                    scores.update(k8_rows(build_context(t["model"], t["split"], 8, seed, cache_root / str(seed))))
                per_seed.append({name: roc_summary(s, m, seed=seed, n_bootstrap=0) for name, s in scores.items()})
                print(f"[seed {seed}] done", flush=True)
        finally:
            shutil.rmtree(cache_root, ignore_errors=True)
    wall = time.perf_counter() - t0
    lines = header(f"Attack variants at K={args.k} (Purchase-like)" + (" (quick smoke run)" if args.quick else ""),
                   seeds, started, wall, load=load.summary())
    c = cfg["purchase"]
    lines += [f"Target as in membership.md (`purchase_like({c['n_records']}, flip={c['flip']})`, MLP {c['hidden']}); "
              f"{args.k} reference models as `audit()` trains them" + (" (rows marked K=8: eight)" if args.k8 else "")
              + "; all audited records; mean over seeds. "
              "'rank mean' adds the per-record ranks of the listed attacks' scores.", ""]
    rows = []
    for name in per_seed[0]:
        vals = {key: float(np.mean([r[name][key] for r in per_seed])) if all(r[name][key] is not None for r in per_seed)
                else None for key in ("auc", "0.01", "0.001", "0.0001")}
        rows.append([name, fmt(vals["auc"]), fmt(vals["0.01"]), fmt(vals["0.001"]), fmt(vals["0.0001"]),
                     " / ".join(fmt(r[name]["0.001"]) for r in per_seed)])
    lines += table(["scores", "AUC", "TPR @ 1 %", "TPR @ 0.1 %", "TPR @ 0.01 %", "TPR @ 0.1 % per seed"], rows)
    if args.k8:
        d = [r["privaudit ensemble_online"]["0.001"] or 0.0 for r in per_seed]
        for ref in ("privaudit lira_online (K=8)", "lira_online, binned variance (K=8)"):
            l8 = [r[ref]["0.001"] or 0.0 for r in per_seed]
            lines += ["", f"- ensemble_online at K={args.k} vs {ref}: mean {np.mean(d):.4f} vs {np.mean(l8):.4f} = "
                      f"{np.mean(d) / max(np.mean(l8), 1e-12):.2f}x; ahead in {sum(a >= b for a, b in zip(d, l8))}/{len(d)} seeds"]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
