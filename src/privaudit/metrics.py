"""Metrics for membership-inference audits: ROC summaries, low-FPR operating points, and
statistically valid empirical lower bounds on the differential-privacy epsilon.

Conventions: ``scores`` is a float array of shape (n,) where higher means "more likely a member";
``is_member`` is a boolean array of shape (n,). Scores may be tied or infinite; NaN is rejected.
Every function is pure: no I/O, no global state, no printing.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "EpsilonBound",
    "OperatingPoint",
    "accuracy",
    "accuracy_gap_lower_bound",
    "advantage",
    "advantage_difference_bounds",
    "auc",
    "auc_standard_error",
    "clopper_pearson",
    "epsilon_from_rates",
    "epsilon_lower_bound",
    "epsilon_max_measurable",
    "gap_variance",
    "generalization_gap",
    "increase_lower_bound",
    "per_record_risk",
    "ppv",
    "rate_bounds",
    "roc_curve",
    "selection_mask",
    "tpr_at_fpr",
    "tpr_at_fprs",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# fpr * n_nonmembers is compared against whole counts; without this slack 0.29 * 100 would
# floor to 28 and an FPR budget the caller can clearly afford would be refused.
_COUNT_SLACK = 1e-9
# Keeps each bootstrap block at a few tens of megabytes however many resamples are asked for.
_BOOTSTRAP_BLOCK_CELLS = 1_000_000


@dataclass(frozen=True)
class OperatingPoint:
    """One point of an attack's ROC curve, optionally with a bootstrap interval on its TPR."""

    tpr: float
    fpr_achieved: float
    threshold: float  # records with score >= threshold are called members
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on epsilon together with the most this sample could show."""

    epsilon_lower_bound: float
    epsilon_max_measurable: float
    threshold: float | None
    delta: float
    confidence: float


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _validate(
    scores: ArrayLike, is_member: ArrayLike, *, need_both: bool = True
) -> tuple[FloatArray, BoolArray]:
    s = np.asarray(scores, dtype=np.float64)
    raw = np.asarray(is_member)
    if s.ndim != 1 or raw.ndim != 1:
        raise ValueError(f"scores and is_member must be 1-D, got shapes {s.shape} and {raw.shape}")
    if s.shape[0] != raw.shape[0]:
        raise ValueError(f"scores has {s.shape[0]} entries but is_member has {raw.shape[0]}")
    if s.shape[0] == 0:
        raise ValueError("scores and is_member are empty")
    if np.isnan(s).any():
        raise ValueError(f"scores contain {int(np.isnan(s).sum())} NaN value(s)")
    if raw.dtype == np.bool_:
        m = raw
    elif np.issubdtype(raw.dtype, np.number) and np.isin(raw, (0, 1)).all():
        m = raw.astype(np.bool_)
    else:
        raise ValueError("is_member must be boolean (or contain only 0 and 1)")
    if need_both:
        n1 = int(m.sum())
        if n1 == 0 or n1 == m.shape[0]:
            raise ValueError(f"need both members and non-members, got {n1} of {m.shape[0]} members")
    return s, m


def _check_open_unit(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return v


def _check_rate(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_delta(delta: float) -> float:
    d = float(delta)
    if not 0.0 <= d < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    return d


def _check_count(name: str, value: int, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


# ---------------------------------------------------------------------------------------------
# ROC machinery


def _roc_counts(s: FloatArray, m: BoolArray) -> tuple[IntArray, IntArray, FloatArray]:
    """FP and TP counts per distinct threshold, descending, after a flag-nothing point."""
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    # Comparing neighbours instead of np.diff avoids inf - inf = NaN when scores are infinite.
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.shape[0] - 1]
    tps = np.cumsum(m[order], dtype=np.int64)[ends]
    fps = (ends + 1).astype(np.int64) - tps
    zero = np.zeros(1, dtype=np.int64)
    # The leading +inf follows sklearn; it stands for "flag nothing" even if a score is +inf.
    return np.r_[zero, fps], np.r_[zero, tps], np.r_[np.inf, s_sorted[ends]]


def roc_curve(scores: ArrayLike, is_member: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC curve (fpr, tpr, thresholds), ties as one step, like sklearn without dropping points."""
    s, m = _validate(scores, is_member)
    fps, tps, thr = _roc_counts(s, m)
    return fps / fps[-1], tps / tps[-1], thr


def auc(scores: ArrayLike, is_member: ArrayLike) -> float:
    """ROC AUC as the Mann-Whitney statistic, ties counting 1/2 (Mann & Whitney 1947)."""
    s, m = _validate(scores, is_member)
    fps, tps, _ = _roc_counts(s, m)
    # Trapezoids over integer counts count each tied member/non-member pair exactly one half.
    area = float(np.sum(np.diff(fps) * (tps[1:] + tps[:-1]))) / 2.0
    return area / (float(fps[-1]) * float(tps[-1]))


def advantage(scores: ArrayLike, is_member: ArrayLike) -> float:
    """Membership advantage, the best TPR - FPR over thresholds (Yeom et al. 2018)."""
    s, m = _validate(scores, is_member)
    fps, tps, _ = _roc_counts(s, m)
    return float(np.max(tps / tps[-1] - fps / fps[-1]))


def _fp_budget(fpr: float, n_nonmembers: int) -> int:
    return int(math.floor(fpr * n_nonmembers + _COUNT_SLACK))


def _bootstrap_tprs(s: FloatArray, m: BoolArray, budgets: list[int], n_bootstrap: int,
                    rng: np.random.Generator) -> FloatArray:
    """TPR at each FP budget for every stratified resample, shape (n_bootstrap, len(budgets))."""
    neg = np.sort(s[~m])
    pos = np.sort(s[m])
    n0, n1 = neg.shape[0], pos.shape[0]
    out = np.empty((n_bootstrap, len(budgets)), dtype=np.float64)
    # With at most k false positives allowed, the best rule flags exactly the scores strictly
    # above the (k+1)-th largest resampled non-member, so an order statistic replaces a full ROC.
    ranks = sorted({n0 - 1 - k for k in budgets if k < n0})
    block = max(1, _BOOTSTRAP_BLOCK_CELLS // max(n0, n1))
    for start in range(0, n_bootstrap, block):
        b = min(block, n_bootstrap - start)
        # int32 halves the memory traffic of the two index matrices, which dominate the cost.
        idx_neg = rng.integers(0, n0, size=(b, n0), dtype=np.int32)
        idx_pos = rng.integers(0, n1, size=(b, n1), dtype=np.int32)
        # neg is sorted, so the order statistics of the indices are those of the values.
        if ranks:
            idx_neg = np.partition(idx_neg, ranks, axis=1)
        for j, k in enumerate(budgets):
            if k >= n0:
                out[start:start + b, j] = 1.0
                continue
            cut_value = neg[idx_neg[:, n0 - 1 - k]]
            # pos is sorted too: a drawn member beats the cut iff its index reaches first_above.
            first_above = np.searchsorted(pos, cut_value, side="right")
            out[start:start + b, j] = np.count_nonzero(idx_pos >= first_above[:, None], axis=1) / n1
    return out


def tpr_at_fprs(scores: ArrayLike, is_member: ArrayLike, fprs: Sequence[float], *,
                n_bootstrap: int = 0, seed: int | np.random.Generator = 0,
                confidence: float = 0.95) -> dict[float, OperatingPoint | None]:
    """Best TPR at several FPR budgets, one sort and bootstrap (Carlini et al. 2022; Efron 1979)."""
    s, m = _validate(scores, is_member)
    n_bootstrap = _check_count("n_bootstrap", n_bootstrap, 0)
    confidence = _check_open_unit("confidence", confidence)
    targets = [_check_rate("fpr", f) for f in fprs]
    fps, tps, thr = _roc_counts(s, m)
    n0, n1 = int(fps[-1]), int(tps[-1])
    budgets = [_fp_budget(f, n0) for f in targets]
    resolvable = [k >= 1 for k in budgets]
    boot: FloatArray | None = None
    if n_bootstrap > 0 and any(resolvable):
        usable = [k for k, ok in zip(budgets, resolvable) if ok]
        boot = _bootstrap_tprs(s, m, usable, n_bootstrap, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    result: dict[float, OperatingPoint | None] = {}
    column = 0
    for fpr, k, ok in zip(fprs, budgets, resolvable):
        if not ok:
            result[fpr] = None
            continue
        last = int(np.searchsorted(fps, k, side="right")) - 1
        # Report the highest threshold reaching that TPR: same power, smallest achieved FPR.
        i = int(np.searchsorted(tps, tps[last], side="left"))
        ci_low = ci_high = None
        if boot is not None:
            lo, hi = np.quantile(boot[:, column], [tail, 1.0 - tail])
            ci_low, ci_high = float(lo), float(hi)
            column += 1
        result[fpr] = OperatingPoint(tpr=float(tps[i] / n1), fpr_achieved=float(fps[i] / n0),
                                     threshold=float(thr[i]), ci_low=ci_low, ci_high=ci_high)
    return result


def tpr_at_fpr(scores: ArrayLike, is_member: ArrayLike, fpr: float, *, n_bootstrap: int = 0,
               seed: int | np.random.Generator = 0,
               confidence: float = 0.95) -> OperatingPoint | None:
    """Best TPR at an FPR budget, None when the sample cannot resolve it (Carlini et al. 2022)."""
    return tpr_at_fprs(scores, is_member, [fpr], n_bootstrap=n_bootstrap, seed=seed,
                       confidence=confidence)[fpr]


def ppv(tpr: float, fpr: float, prior: float) -> float | None:
    """Precision of member calls when a share ``prior`` are members (Jayaraman et al. 2021)."""
    t, f = _check_rate("tpr", tpr), _check_rate("fpr", fpr)
    p = _check_open_unit("prior", prior)
    if t == 0.0 and f == 0.0:
        return None
    return p * t / (p * t + (1.0 - p) * f)


# ---------------------------------------------------------------------------------------------
# Differential-privacy lower bounds


def _cp_upper(k: IntArray | int, n: int, level: float) -> FloatArray:
    """One-sided Clopper-Pearson upper bounds at ``level`` for k successes out of n, vectorised."""
    k_arr = np.asarray(k, dtype=np.int64)
    full = k_arr >= n
    # beta(k + 1, 0) is undefined; those entries are set to 1 below, so any valid shape will do.
    b = np.where(full, 1, n - k_arr)
    upper = np.asarray(stats.beta.ppf(level, k_arr + 1, b), dtype=np.float64)
    return np.where(full, 1.0, upper)


def _cp_lower(k: IntArray | int, n: int | IntArray, level: float) -> FloatArray:
    """One-sided Clopper-Pearson lower bounds at ``level`` for k successes out of n, vectorised."""
    k_arr, n_arr = np.broadcast_arrays(np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64))
    none = k_arr <= 0
    # beta(0, .) is undefined; those entries are 0 below, so any valid shape will do.
    lower = np.asarray(stats.beta.ppf(1.0 - level, np.where(none, 1, k_arr), n_arr - k_arr + 1), dtype=np.float64)
    return np.where(none, 0.0, lower)


def rate_bounds(true_positives: ArrayLike, n_members: int, false_positives: ArrayLike, n_nonmembers: int,
                confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Lower TPR and upper FPR bounds holding jointly at ``confidence`` (Clopper & Pearson 1934, Bonferroni)."""
    n1 = _check_count("n_members", n_members, 1)
    n0 = _check_count("n_nonmembers", n_nonmembers, 1)
    level = 1.0 - (1.0 - _check_open_unit("confidence", confidence)) / 2.0
    tp = np.asarray(true_positives, dtype=np.int64)
    fp = np.asarray(false_positives, dtype=np.int64)
    if (tp < 0).any() or (tp > n1).any() or (fp < 0).any() or (fp > n0).any():
        raise ValueError("counts must lie between 0 and the group sizes")
    return _cp_lower(tp, n1, level), _cp_upper(fp, n0, level)


def accuracy_gap_lower_bound(correct_train: int, n_train: int, correct_holdout: int, n_holdout: int,
                             confidence: float = 0.95) -> float:
    """Lower bound of train minus holdout accuracy, exact binomial bounds with Bonferroni (Clopper & Pearson 1934)."""
    lo, hi = rate_bounds(correct_train, n_train, correct_holdout, n_holdout, confidence)
    return float(lo) - float(hi)


def advantage_difference_bounds(wins_a: int, losses_a: int, n_a: int, wins_b: int, losses_b: int, n_b: int,
                                confidence: float = 0.95) -> tuple[float, float]:
    """One-sided (lower, half-width) of adv_a - adv_b, each a mean of per-record gains in {-1, 0, +1}, by the
    normal approximation to a difference of independent means (Welch 1947)."""
    for name, (w, l_, n) in (("a", (wins_a, losses_a, n_a)), ("b", (wins_b, losses_b, n_b))):
        if n < 1 or w < 0 or l_ < 0 or w + l_ > n:
            raise ValueError(f"set {name}: need 0 <= wins + losses <= n and n >= 1, got {w}, {l_}, {n}")
    _check_open_unit("confidence", confidence)

    def mean_var(w: int, l_: int, n: int) -> tuple[float, float]:
        mean = (w - l_) / n
        return mean, (w + l_) / n - mean * mean

    (ma, va), (mb, vb) = mean_var(wins_a, losses_a, n_a), mean_var(wins_b, losses_b, n_b)
    half = float(stats.norm.ppf(confidence)) * math.sqrt(va / n_a + vb / n_b)
    return ma - mb - half, half


def auc_standard_error(auc_value: float, n_members: int, n_nonmembers: int) -> float:
    """Standard error of an AUC from its value and the two group sizes (Hanley & McNeil 1982)."""
    a = float(auc_value)
    if not 0.0 <= a <= 1.0 or n_members < 1 or n_nonmembers < 1:
        raise ValueError(f"need 0 <= auc <= 1 and both groups non-empty, got {a}, {n_members}, {n_nonmembers}")
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n_members - 1) * (q1 - a * a) + (n_nonmembers - 1) * (q2 - a * a)) / (n_members * n_nonmembers)
    return math.sqrt(max(var, 0.0))


def increase_lower_bound(now: float, now_var: float, before: float, before_var: float,
                         confidence: float = 0.95) -> float:
    """One-sided lower confidence bound on ``now - before`` for two independent estimates with the given
    variances, by the normal approximation (Wald 1943)."""
    _check_open_unit("confidence", confidence)
    if now_var < 0 or before_var < 0:
        raise ValueError(f"variances must be >= 0, got {now_var}, {before_var}")
    return now - before - float(stats.norm.ppf(confidence)) * math.sqrt(now_var + before_var)


def gap_variance(train_accuracy: float, n_train: int, holdout_accuracy: float, n_holdout: int) -> float:
    """Variance of a train-minus-holdout accuracy gap, two independent binomial proportions (Wald 1943)."""
    if n_train < 1 or n_holdout < 1:
        raise ValueError(f"both groups must be non-empty, got {n_train}, {n_holdout}")
    return (train_accuracy * (1 - train_accuracy) / n_train
            + holdout_accuracy * (1 - holdout_accuracy) / n_holdout)


def selection_mask(is_member: ArrayLike, fraction: float = 0.5,
                   seed: int | np.random.Generator = 0) -> BoolArray:
    """A random selection part, stratified by membership; the rest is kept for judgement (Nasr et al. 2021)."""
    m = np.asarray(is_member, dtype=np.bool_)
    fraction = _check_open_unit("fraction", fraction)
    rng = np.random.default_rng(seed)
    selected = np.zeros(m.shape[0], dtype=np.bool_)
    for group, name in ((np.flatnonzero(m), "members"), (np.flatnonzero(~m), "non-members")):
        if group.shape[0] < 2:
            raise ValueError(f"need at least 2 {name} to split into selection and evaluation parts")
        n_sel = min(max(int(math.floor(fraction * group.shape[0] + 0.5)), 1), group.shape[0] - 1)
        selected[rng.permutation(group)[:n_sel]] = True
    return selected


def _log_ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    positive = num > 0
    out[positive & (den <= 0)] = np.inf
    ok = positive & (den > 0)
    out[ok] = np.log(num[ok] / den[ok])
    return out


def _eps_array(fpr: FloatArray, fnr: FloatArray, delta: float) -> FloatArray:
    fpr, fnr = np.broadcast_arrays(np.asarray(fpr, dtype=np.float64),
                                   np.asarray(fnr, dtype=np.float64))
    a = _log_ratio(1.0 - delta - fnr, fpr)
    b = _log_ratio(1.0 - delta - fpr, fnr)
    return np.maximum(np.maximum(a, b), 0.0)


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact binomial interval for k successes in n trials (Clopper & Pearson 1934)."""
    n = _check_count("n", n, 1)
    k = _check_count("k", k, 0)
    if k > n:
        raise ValueError(f"k must be <= n, got k={k}, n={n}")
    alpha = 1.0 - _check_open_unit("confidence", confidence)
    lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    upper = float(_cp_upper(k, n, 1.0 - alpha / 2.0))
    return lower, upper


def epsilon_from_rates(fpr: float, fnr: float, delta: float) -> float:
    """Least DP epsilon these error rates imply (Kairouz et al. 2015 / Jagielski et al. 2020)."""
    f, g = _check_rate("fpr", fpr), _check_rate("fnr", fnr)
    d = _check_delta(delta)
    return float(_eps_array(np.array([f]), np.array([g]), d)[0])


def _eps_max(n_members: int, n_nonmembers: int, delta: float, level: float) -> float:
    fpr_up = _cp_upper(0, n_nonmembers, level)
    fnr_up = _cp_upper(0, n_members, level)
    return float(_eps_array(fpr_up, fnr_up, delta).reshape(-1)[0])


def epsilon_max_measurable(n_members: int, n_nonmembers: int, delta: float = 1e-5, *,
                           confidence: float = 0.95) -> float:
    """Epsilon a perfect attack would certify on samples of these sizes (Jagielski et al. 2020)."""
    n1 = _check_count("n_members", n_members, 1)
    n0 = _check_count("n_nonmembers", n_nonmembers, 1)
    level = 1.0 - (1.0 - _check_open_unit("confidence", confidence)) / 2.0
    return _eps_max(n1, n0, _check_delta(delta), level)


def _between(upper: float, lower: float) -> float:
    """A threshold mid-gap below ``upper``, so held-out scores near the edge fall either side."""
    if not (math.isfinite(upper) and math.isfinite(lower)):
        return upper
    mid = upper / 2.0 + lower / 2.0  # halves first so two huge scores cannot overflow
    return mid if lower < mid <= upper else upper


def epsilon_lower_bound(scores: ArrayLike, is_member: ArrayLike, delta: float = 1e-5, *,
                        confidence: float = 0.95, seed: int | np.random.Generator = 0,
                        selection_fraction: float = 0.5) -> EpsilonBound:
    """Held-out empirical epsilon lower bound, Clopper-Pearson rates (Nasr et al. 2021)."""
    s, m = _validate(scores, is_member)
    d = _check_delta(delta)
    confidence = _check_open_unit("confidence", confidence)
    fraction = _check_open_unit("selection_fraction", selection_fraction)
    selected = selection_mask(m, fraction, seed)
    # Bonferroni: each of the two one-sided bounds gets half of the allowed error.
    level = 1.0 - (1.0 - confidence) / 2.0
    s_eval, m_eval = s[~selected], m[~selected]
    n1_eval, n0_eval = int(m_eval.sum()), int((~m_eval).sum())
    eps_max = _eps_max(n1_eval, n0_eval, d, level)

    # The threshold is picked with the same bounded objective as the final estimate, because the
    # raw-rate optimum favours tiny-count corners whose confidence bounds are useless.
    fps, tps, thr = _roc_counts(s[selected], m[selected])
    n0_sel, n1_sel = int(fps[-1]), int(tps[-1])
    eps_sel = _eps_array(_cp_upper(fps, n0_sel, level), _cp_upper(n1_sel - tps, n1_sel, level), d)
    best = int(np.argmax(eps_sel))
    if eps_sel[best] <= 0.0:
        return EpsilonBound(0.0, eps_max, None, d, confidence)
    next_lower = float(thr[best + 1]) if best + 1 < thr.shape[0] else -math.inf
    threshold = _between(float(thr[best]), next_lower)

    fp = int(np.count_nonzero(s_eval[~m_eval] >= threshold))
    fn = int(np.count_nonzero(s_eval[m_eval] < threshold))
    eps = float(_eps_array(_cp_upper(fp, n0_eval, level), _cp_upper(fn, n1_eval, level), d)
                .reshape(-1)[0])
    return EpsilonBound(min(eps, eps_max), eps_max, threshold, d, confidence)


# ---------------------------------------------------------------------------------------------
# Per-record and utility metrics


def per_record_risk(scores: ArrayLike, is_member: ArrayLike) -> FloatArray:
    """Share of non-members scoring strictly below each record, i.e. 1 - the FPR that flags it."""
    s, m = _validate(scores, is_member, need_both=False)
    neg = np.sort(s[~m])
    if neg.shape[0] == 0:
        raise ValueError("per_record_risk needs at least one non-member")
    below: IntArray = np.searchsorted(neg, s, side="left").astype(np.int64)
    return below / float(neg.shape[0])


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Share of predictions equal to the true labels."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got shapes {t.shape} and {p.shape}")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} entries but y_pred has {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("y_true and y_pred are empty")
    return float(np.mean(t == p))


def generalization_gap(train_accuracy: float, holdout_accuracy: float) -> float:
    """Train minus holdout accuracy, the overfitting behind threshold attacks (Yeom et al. 2018)."""
    return _check_rate("train_accuracy", train_accuracy) - _check_rate("holdout_accuracy",
                                                                       holdout_accuracy)
