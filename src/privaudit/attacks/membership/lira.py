"""Likelihood-ratio attack, LiRA (Carlini et al. 2022), online and offline.

For each record, the scaled-logit signal from reference models trained with (IN) and without (OUT)
it is modelled as a Gaussian; the target's signal is scored by the likelihood ratio (online) or by
how far it sits above the OUT distribution (offline). With few reference models the per-record
variance is too noisy, so below ``PER_EXAMPLE_MIN`` models per side one variance is shared across
records ("fixed variance", as the paper recommends).

:func:`binned_moments` is a third estimator between the two, used by the ensemble attack: records are
grouped by their mean signal (their difficulty) and each group pools one variance. Hard records
vary far more across reference models than easy ones; one shared variance makes their non-members
look like outliers, which is what fills the top of a fixed-variance ranking with false positives.
It relies on the mean over a few models telling how hard a record is; where models scatter as widely
as difficulty moves the mean, the groups mix easy and hard records and it can do worse than fixed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from privaudit.attacks.membership import AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import scaled_logit

PER_EXAMPLE_MIN = 16
_MIN_STD = 1e-3


Variance = Literal["fixed", "per_example", "binned"]
VARIANCE_BINS = 20
# Fewest records per difficulty group: each group's variance pools about this many records' spreads.
MIN_RECORDS_PER_BIN = 500


def difficulty_groups(n_records: int, bins: int = VARIANCE_BINS, min_per_bin: int = MIN_RECORDS_PER_BIN) -> int:
    """How many groups :func:`binned_moments` cuts ``n_records`` into (1 means one shared variance)."""
    return int(np.clip(n_records // min_per_bin, 1, bins))


def _moments(
    signal: NDArray[np.float64], mask: NDArray[np.bool_], variance: Variance, bins: int = VARIANCE_BINS,
    min_per_bin: int = MIN_RECORDS_PER_BIN,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Per-record mean and std of ``signal`` (K, n) over the models selected by ``mask`` (K, n).

    The std is the record's own ("per_example"), one pooled over all records ("fixed"), or one pooled
    per difficulty group ("binned", see :func:`binned_moments`).
    """
    count = mask.sum(axis=0)
    has = count > 0
    total = np.where(mask, signal, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(signal.shape[1]), where=has)
    sq = (np.where(mask, signal - mean[None, :], 0.0) ** 2).sum(axis=0)  # per record
    dof = np.maximum(count - 1, 0)
    if variance == "per_example":
        var = np.divide(sq, dof, out=np.zeros_like(mean), where=dof > 0)
        return mean, np.sqrt(np.maximum(var, _MIN_STD**2)), has
    fixed = max(float(np.sqrt(sq.sum() / max(int(dof.sum()), 1))), _MIN_STD)
    std = np.full_like(mean, fixed)
    groups = difficulty_groups(int(has.sum()), bins, min_per_bin) if variance == "binned" else 1
    if groups > 1:
        edges = np.quantile(mean[has], np.linspace(0.0, 1.0, groups + 1)[1:-1])
        group = np.searchsorted(edges, mean, side="right")
        sq_sum = np.bincount(group, weights=np.where(has, sq, 0.0), minlength=groups)
        dof_sum = np.bincount(group, weights=np.where(has, dof, 0), minlength=groups)
        pooled = np.sqrt(np.divide(sq_sum, dof_sum, out=np.full(groups, np.nan), where=dof_sum > 0))[group]
        std = np.where(np.isnan(pooled), fixed, np.maximum(pooled, _MIN_STD))
    return mean, std, has


def binned_moments(
    signal: NDArray[np.float64], mask: NDArray[np.bool_], bins: int = VARIANCE_BINS,
    min_per_bin: int = MIN_RECORDS_PER_BIN,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Per-record mean of ``signal`` (K, n) over the models in ``mask`` (K, n), and a std pooled per group.

    Records are cut into up to ``bins`` equal-count groups by their mean (fewer when there are under
    ``min_per_bin`` records per group); a group whose records have no spread to pool (a single
    model each) takes the variance pooled over all groups.
    """
    return _moments(signal, mask, "binned", bins, min_per_bin)


def signals(ctx: AttackContext) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The scaled-logit signal of the target (n,) and of every reference model (K, n), once per context."""
    if ctx.reference_probs is None or ctx.target_probs is None:
        raise ValueError("LiRA needs reference models and score outputs")
    target_probs, ref_probs = ctx.target_probs, ctx.reference_probs
    result: tuple[NDArray[np.float64], NDArray[np.float64]] = ctx.memoised("lira_signals", lambda: (
        scaled_logit(target_probs, ctx.y, ctx.floor), scaled_logit(ref_probs, ctx.y, ctx.floor)))
    return result


def _prepare(ctx: AttackContext) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], Variance]:
    if ctx.reference_probs is None or ctx.reference_in is None or ctx.target_probs is None:
        raise ValueError("LiRA needs reference models and score outputs")
    target_signal, ref_signal = signals(ctx)
    variance: Variance = "per_example" if ctx.n_reference // 2 >= PER_EXAMPLE_MIN else "fixed"
    return target_signal, ref_signal, ctx.reference_in, variance


def offline_scores(
    target_signal: NDArray[np.float64], ref_signal: NDArray[np.float64], ref_in: NDArray[np.bool_], variance: Variance
) -> NDArray[np.float64]:
    """One-sided test against the OUT Gaussian: -log P[Z >= s], Z ~ N(mu_out, sigma_out)."""
    mu, sd, has = _moments(ref_signal, ~ref_in, variance)
    z = (target_signal - mu) / sd
    out: NDArray[np.float64] = np.where(has, -stats.norm.logsf(z), target_signal)
    return out


@register_attack("lira_offline", needs_reference=True, summary="LiRA against OUT reference models only")
def run_offline(ctx: AttackContext) -> AttackResult:
    s, ref, ref_in, variance = _prepare(ctx)
    scores = offline_scores(s, ref, ref_in, variance)
    return AttackResult("lira_offline", scores, reference_models=ctx.n_reference, params={"variance": variance})


def online_scores(
    target_signal: NDArray[np.float64], ref_signal: NDArray[np.float64], ref_in: NDArray[np.bool_], variance: Variance
) -> NDArray[np.float64]:
    """log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out) with variance "fixed", "per_example" or "binned"."""
    mu_in, sd_in, has_in = _moments(ref_signal, ref_in, variance)
    mu_out, sd_out, has_out = _moments(ref_signal, ~ref_in, variance)
    s = target_signal
    lr = stats.norm.logpdf(s, mu_in, sd_in) - stats.norm.logpdf(s, mu_out, sd_out)
    # A record with no IN (or no OUT) model cannot get a ratio; the offline score ranks it instead,
    # shifted so those records neither dominate nor vanish from the top of the ranking.
    fallback = offline_scores(s, ref_signal, ref_in, variance)
    both = has_in & has_out
    out: NDArray[np.float64] = np.where(
        both, lr, fallback - np.median(fallback) + (np.median(lr[both]) if both.any() else 0.0))
    return out


def spread_measurable(ref_in: NDArray[np.bool_]) -> bool:
    """True when some record has two models on each side, so a spread across models can be measured."""
    return bool(((ref_in.sum(axis=0) >= 2) & ((~ref_in).sum(axis=0) >= 2)).any())


@register_attack("lira_online", needs_reference=True, summary="LiRA with IN and OUT reference models")
def run_online(ctx: AttackContext) -> AttackResult:
    s, ref, ref_in, variance = _prepare(ctx)
    scores = online_scores(s, ref, ref_in, variance)
    return AttackResult("lira_online", scores, reference_models=ctx.n_reference, params={"variance": variance})
