"""Likelihood-ratio attack, LiRA (Carlini et al. 2022), online and offline.

For each record, the scaled-logit signal from reference models trained with (IN) and without (OUT)
it is modelled as a Gaussian; the target's signal is scored by the likelihood ratio (online) or by
how far it sits above the OUT distribution (offline). With few reference models the per-record
variance is too noisy, so below ``PER_EXAMPLE_MIN`` models per side one variance is shared across
records ("fixed variance", as the paper recommends).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from privaudit.attacks.membership import AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import scaled_logit

PER_EXAMPLE_MIN = 16
_MIN_STD = 1e-3


def _moments(
    signal: NDArray[np.float64], mask: NDArray[np.bool_], per_example: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Per-record mean and std of ``signal`` (K, n) over the models selected by ``mask`` (K, n)."""
    count = mask.sum(axis=0)
    has = count > 0
    total = np.where(mask, signal, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(signal.shape[1]), where=has)
    resid = np.where(mask, signal - mean[None, :], 0.0)
    if per_example:
        var = np.divide((resid**2).sum(axis=0), np.maximum(count - 1, 1), out=np.zeros_like(mean), where=count > 1)
        std = np.sqrt(np.maximum(var, _MIN_STD**2))
    else:
        dof = max(int(count.sum() - has.sum()), 1)
        std = np.full_like(mean, max(float(np.sqrt((resid**2).sum() / dof)), _MIN_STD))
    return mean, std, has


def _prepare(ctx: AttackContext) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], bool]:
    if ctx.reference_probs is None or ctx.reference_in is None or ctx.target_probs is None:
        raise ValueError("LiRA needs reference models and score outputs")
    target_signal = scaled_logit(ctx.target_probs, ctx.y, ctx.floor)
    ref_signal = scaled_logit(ctx.reference_probs, ctx.y, ctx.floor)
    per_side = ctx.n_reference // 2
    return target_signal, ref_signal, ctx.reference_in, per_side >= PER_EXAMPLE_MIN


def offline_scores(
    target_signal: NDArray[np.float64], ref_signal: NDArray[np.float64], ref_in: NDArray[np.bool_], per_example: bool
) -> NDArray[np.float64]:
    """One-sided test against the OUT Gaussian: -log P[Z >= s], Z ~ N(mu_out, sigma_out)."""
    mu, sd, has = _moments(ref_signal, ~ref_in, per_example)
    z = (target_signal - mu) / sd
    out: NDArray[np.float64] = np.where(has, -stats.norm.logsf(z), target_signal)
    return out


@register_attack("lira_offline", needs_reference=True, summary="LiRA against OUT reference models only")
def run_offline(ctx: AttackContext) -> AttackResult:
    s, ref, ref_in, per_example = _prepare(ctx)
    scores = offline_scores(s, ref, ref_in, per_example)
    return AttackResult("lira_offline", scores, reference_models=ctx.n_reference,
                        params={"variance": "per_example" if per_example else "fixed"})


@register_attack("lira_online", needs_reference=True, summary="LiRA with IN and OUT reference models")
def run_online(ctx: AttackContext) -> AttackResult:
    s, ref, ref_in, per_example = _prepare(ctx)
    mu_in, sd_in, has_in = _moments(ref, ref_in, per_example)
    mu_out, sd_out, has_out = _moments(ref, ~ref_in, per_example)
    lr = stats.norm.logpdf(s, mu_in, sd_in) - stats.norm.logpdf(s, mu_out, sd_out)
    # A record with no IN (or no OUT) model cannot get a ratio; the offline score ranks it instead,
    # shifted so those records neither dominate nor vanish from the top of the ranking.
    fallback = offline_scores(s, ref, ref_in, per_example)
    both = has_in & has_out
    scores = np.where(both, lr, fallback - np.median(fallback) + (np.median(lr[both]) if both.any() else 0.0))
    return AttackResult("lira_online", scores, reference_models=ctx.n_reference,
                        params={"variance": "per_example" if per_example else "fixed"})
