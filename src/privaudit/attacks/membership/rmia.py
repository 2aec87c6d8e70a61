"""Robust membership inference, RMIA (Zarifzadeh et al. 2024), online and offline.

RMIA compares the target's likelihood of a record, p(x|theta), with its likelihood under reference
models, p(x). With a fixed population sample Z, its score Pr_z[LR(x, z) >= gamma] is a monotone
function of p(x|theta)/p(x); we rank by that log-ratio directly, which keeps the ranking identical
while avoiding the ties a finite Z creates at the top -- exactly where low-FPR operating points live.

Two knobs matter a great deal with few reference models: the softmax temperature of p(x|theta)
and, offline, the ``a`` that approximates p(x) from OUT models only. Both are tuned on the
reference models themselves: one reference model plays the target, the others (minus its
complementary partner) play references, and the setting with the best TPR at 1% FPR wins (on up to
TUNING_RECORDS records). No membership label of an audited record is used.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.attacks.membership import AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import tempered_true_class_probability

TEMPERATURES = (0.5, 1.0, 2.0, 4.0)
OFFLINE_A = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_TEMPERATURE = 1.0
DEFAULT_A = 0.3
_TUNING_FPR = 0.01
# Tuning compares a handful of settings; 10,000 records (about 50 false positives at the tuning
# FPR per pseudo-target) separate them as well as 40,000 do, at a quarter of the cost.
TUNING_RECORDS = 10_000
_EPS = 1e-300


def log_ratio(
    target_p: NDArray[np.float64], ref_p: NDArray[np.float64], ref_in: NDArray[np.bool_], *, offline: bool, a: float
) -> NDArray[np.float64]:
    """log p(x|theta) - log p(x), with p(x) the mean over reference models (Zarifzadeh et al. 2024).

    Offline, p(x) is estimated from OUT models only and corrected linearly: p(x) = ((1+a) p_out + 1 - a) / 2.
    """
    if offline:
        out = ~ref_in
        count = out.sum(axis=0)
        p_out = np.divide(np.where(out, ref_p, 0.0).sum(axis=0), count, out=np.full(ref_p.shape[1], np.nan), where=count > 0)
        p_x = 0.5 * ((1.0 + a) * p_out + (1.0 - a))
        p_x = np.where(np.isnan(p_x), 1.0, p_x)  # no OUT model: fall back to the target's own likelihood
    else:
        p_x = ref_p.mean(axis=0)
    result: NDArray[np.float64] = np.log(np.maximum(target_p, _EPS)) - np.log(np.maximum(p_x, _EPS))
    return result


def _reference_likelihood(ctx: AttackContext, temperature: float) -> NDArray[np.float64]:
    """Every reference model's tempered p(x|theta_k), shared by the online and offline attacks and their tuning."""
    assert ctx.reference_probs is not None
    probs = ctx.reference_probs
    result: NDArray[np.float64] = ctx.memoised(
        ("rmia_reference_likelihood", temperature),
        lambda: tempered_true_class_probability(probs, ctx.y, temperature, ctx.floor))
    return result


def _tuning_sample(ctx: AttackContext) -> NDArray[np.int64]:
    """The records tuning looks at: all of them, or a fixed random TUNING_RECORDS when there are more."""
    n = len(ctx.y)
    if n <= TUNING_RECORDS:
        return np.arange(n)
    sample: NDArray[np.int64] = ctx.memoised("rmia_tuning_sample", lambda: np.sort(
        np.random.default_rng(ctx.seed).choice(n, TUNING_RECORDS, replace=False)))
    return sample


def _tuning_likelihood(ctx: AttackContext, temperature: float, sample: NDArray[np.int64]) -> NDArray[np.float64]:
    if len(sample) == len(ctx.y):
        return _reference_likelihood(ctx, temperature)
    assert ctx.reference_probs is not None
    full = ctx.reference_probs
    probs: NDArray[np.float64] = ctx.memoised("rmia_tuning_probs", lambda: full[:, sample])
    result: NDArray[np.float64] = ctx.memoised(
        ("rmia_tuning_likelihood", temperature),
        lambda: tempered_true_class_probability(probs, ctx.y[sample], temperature, ctx.floor))
    return result


def _tuning_quality(scores: NDArray[np.float64], truth: NDArray[np.bool_]) -> float:
    point = metrics.tpr_at_fpr(scores, truth, _TUNING_FPR)
    tpr = 0.0 if point is None else point.tpr
    return tpr + 0.01 * metrics.auc(scores, truth)


def tune(ctx: AttackContext, *, offline: bool) -> tuple[float, float, bool]:
    """Choose (temperature, a) on reference models playing the target. Returns (T, a, tuned)."""
    assert ctx.reference_probs is not None and ctx.reference_in is not None
    k_total = ctx.n_reference
    pseudo_targets = [k for k in range(min(k_total, 2)) if k_total - 2 >= 1]
    if not pseudo_targets:
        return DEFAULT_TEMPERATURE, DEFAULT_A if offline else 0.0, False
    grid_a = OFFLINE_A if offline else (0.0,)
    best = (-np.inf, DEFAULT_TEMPERATURE, DEFAULT_A if offline else 0.0)
    sample = _tuning_sample(ctx)
    ref_in = ctx.reference_in[:, sample]
    for t in TEMPERATURES:
        probs = _tuning_likelihood(ctx, t, sample)
        for a in grid_a:
            quality = 0.0
            for k in pseudo_targets:
                # Reference models come in complementary pairs (2j, 2j+1); the partner of the
                # pseudo-target would leak its membership, so it is left out.
                others = [j for j in range(k_total) if j not in (k, k ^ 1)]
                truth = ref_in[k]
                if truth.all() or not truth.any():
                    continue
                s = log_ratio(probs[k], probs[others], ref_in[others], offline=offline, a=a)
                quality += _tuning_quality(s, truth)
            if quality > best[0]:
                best = (quality, t, a)
    return best[1], best[2], True


def scores(ctx: AttackContext, *, offline: bool) -> tuple[NDArray[np.float64], dict[str, object]]:
    """RMIA's per-record scores and chosen settings, computed once per context (the ensemble reuses them)."""
    if ctx.reference_probs is None or ctx.reference_in is None or ctx.target_probs is None:
        raise ValueError("RMIA needs reference models and score outputs")
    target_probs, ref_in = ctx.target_probs, ctx.reference_in

    def compute() -> tuple[NDArray[np.float64], dict[str, object]]:
        temperature, a, tuned = tune(ctx, offline=offline)
        target_p = tempered_true_class_probability(target_probs, ctx.y, temperature, ctx.floor)
        ref_p = _reference_likelihood(ctx, temperature)
        params: dict[str, object] = {"temperature": temperature, "tuned_on_reference_models": tuned}
        if offline:
            params["a"] = a
        return log_ratio(target_p, ref_p, ref_in, offline=offline, a=a), params

    result: tuple[NDArray[np.float64], dict[str, object]] = ctx.memoised(("rmia_scores", offline), compute)
    return result


def _run(ctx: AttackContext, *, offline: bool) -> AttackResult:
    values, params = scores(ctx, offline=offline)
    name = "rmia_offline" if offline else "rmia_online"
    return AttackResult(name, values, reference_models=ctx.n_reference, params=dict(params))


@register_attack("rmia_online", needs_reference=True, summary="RMIA with IN and OUT reference models")
def run_online(ctx: AttackContext) -> AttackResult:
    return _run(ctx, offline=False)


@register_attack("rmia_offline", needs_reference=True, summary="RMIA with OUT reference models and tuned a")
def run_offline(ctx: AttackContext) -> AttackResult:
    return _run(ctx, offline=True)
