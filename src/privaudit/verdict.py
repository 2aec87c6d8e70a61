"""The membership verdict as a statistical test, with selection and judgement on separate records.

The audit runs several attacks and reads each at several false-positive rates. Picking the best of
them on the very records it is then judged on turns noise into apparent leakage, so the records are
split once, at random and stratified by membership:

- on the *selection* half, every (attack, FPR) pair sets its threshold from the half's non-members
  and is scored by how far the lower bound of its TPR exceeds the upper bound of its FPR; the best
  pair is chosen;
- on the *evaluation* half, which played no part in that choice, the chosen attack and threshold are
  applied once. The counts there are binomial, so exact Clopper-Pearson bounds hold: FAIL ("the
  model leaks") needs TPR's lower bound above ``margin`` times FPR's upper bound, the two bounds
  holding jointly at ``confidence`` (Bonferroni).

If the model leaks nothing, member and non-member scores share one distribution, TPR equals FPR at
every threshold, and the test rejects with probability at most ``1 - confidence``. See
docs/report.md ("How the verdict is decided").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics

# FPRs the test may operate at, lowest first; it uses those both halves can resolve.
VERDICT_FPRS: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.1)
# The records kept aside for judgement get their own stream of randomness, independent of the
# attacks' and the bootstrap's, whatever the audit's seed.
_SPLIT_STREAM = 0x5E1EC7


@dataclass(frozen=True)
class HeldOutTest:
    """One attack at one threshold, chosen on the selection half and judged on the evaluation half."""

    status: Literal["leak", "no_leak", "unresolved"]
    attack: str | None
    fpr: float | None  # the FPR the threshold was set for on the selection half
    threshold: float | None  # records scoring strictly above it are called members
    confidence: float
    margin: float
    selection_members: int
    selection_nonmembers: int
    members: int  # evaluation half
    nonmembers: int
    true_positives: int
    false_positives: int
    tpr_lower: float
    fpr_upper: float
    ratio_lower: float  # tpr_lower / fpr_upper: how many times the FPR the attack provably reaches
    epsilon_lower_bound: float  # the DP epsilon these bounds rule out (Kairouz et al. 2015)
    resolved_fprs: tuple[float, ...]
    min_resolved_fpr: float
    holdout_needed: int | None  # holdout records needed to resolve min_resolved_fpr, if short

    @property
    def rejected(self) -> bool:
        return self.status == "leak"


# A PASS claims that a leak would have been seen: only where a leak of this many times the FPR (the
# "strong" level of docs/severity.md) would have FAILed is an FPR resolved.
RESOLUTION = 10.0


def detectable_ratio(fpr: float, n_members: int, n_nonmembers: int, *, margin: float = 2.0,
                     confidence: float = 0.95) -> float:
    """The smallest TPR/FPR the test can prove at ``fpr`` on groups of these sizes (inf: none)."""
    k = int(math.floor(fpr * n_nonmembers + 1e-9))
    if k < 1 or n_members < 1:
        return math.inf
    _, hi = metrics.rate_bounds(0, n_members, k, n_nonmembers, confidence)
    need = margin * float(hi)
    lo_all, _ = metrics.rate_bounds(n_members, n_members, 0, n_nonmembers, confidence)
    if float(lo_all) <= need:
        return math.inf
    lo_tp, hi_tp = 0, n_members  # smallest true-positive count whose lower bound clears the need
    while hi_tp - lo_tp > 1:
        mid = (lo_tp + hi_tp) // 2
        if float(metrics.rate_bounds(mid, n_members, 0, n_nonmembers, confidence)[0]) > need:
            hi_tp = mid
        else:
            lo_tp = mid
    return hi_tp / n_members / fpr


def holdout_needed(fpr: float, *, margin: float = 2.0, confidence: float = 0.95) -> int | None:
    """Holdout records (with as many training records) for the evaluation half to resolve ``fpr``; None
    when no sample can (a leak of RESOLUTION times ``fpr`` is beyond TPR 1, or not above the margin)."""
    def ok(n: int) -> bool:
        half = n // 2
        return detectable_ratio(fpr, half, half, margin=margin, confidence=confidence) <= RESOLUTION

    if RESOLUTION * fpr >= 1.0 or margin >= RESOLUTION:
        return None
    hi = max(4, 2 * math.ceil(1.0 / fpr))
    while not ok(hi):
        if hi > 10**12:
            return None
        hi *= 2
    lo = hi // 2
    while hi - lo > max(2, lo // 200):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return int(math.ceil(hi / 100.0) * 100)  # a round number: the estimate assumes equal group sizes


def needs_text(n: int | None) -> str:
    """What would resolve the test: ``n`` from holdout_needed, None when no sample can."""
    if n is None:
        return (f"no sample size can show it with this policy (max_tpr_ratio must stay below {RESOLUTION:g} "
                f"and min_resolved_fpr below {1 / RESOLUTION:g})")
    return f"needs >= {n} holdout records"


def _threshold(nonmember_scores: NDArray[np.float64], fpr: float) -> float | None:
    """The score above which at most ``fpr`` of these non-members lie; None if it needs 0 of them."""
    budget = int(math.floor(fpr * len(nonmember_scores) + 1e-9))
    if budget < 1 or budget >= len(nonmember_scores):
        return None
    ordered = np.sort(nonmember_scores)[::-1]
    return float(ordered[budget])  # the (budget+1)-th largest: strictly above it are <= budget scores


def _counts(scores: NDArray[np.float64], is_member: NDArray[np.bool_], threshold: float) -> tuple[int, int]:
    flagged = scores > threshold
    return int(np.count_nonzero(flagged & is_member)), int(np.count_nonzero(flagged & ~is_member))


def _ratio(tpr_lower: float, fpr_upper: float) -> float:
    return tpr_lower / fpr_upper if fpr_upper > 0 else math.inf


def held_out_test(scores: Mapping[str, NDArray[np.float64]], is_member: NDArray[np.bool_], *, delta: float,
                  confidence: float = 0.95, margin: float = 2.0, min_resolved_fpr: float = 0.01,
                  fprs: tuple[float, ...] = VERDICT_FPRS, seed: int = 0) -> HeldOutTest:
    """Choose the strongest (attack, FPR) on one half of the records, test it on the other."""
    m = np.asarray(is_member, dtype=np.bool_)
    if min(int(m.sum()), int((~m).sum())) < 2:  # nothing to split: no test, only what would allow one
        n1, n0 = int(m.sum()), int((~m).sum())
        return HeldOutTest(status="unresolved", attack=None, fpr=None, threshold=None, confidence=confidence,
                           margin=margin, selection_members=0, selection_nonmembers=0, members=n1, nonmembers=n0,
                           true_positives=0, false_positives=0, tpr_lower=0.0, fpr_upper=1.0, ratio_lower=0.0,
                           epsilon_lower_bound=0.0, resolved_fprs=(), min_resolved_fpr=min_resolved_fpr,
                           holdout_needed=holdout_needed(min_resolved_fpr, margin=margin, confidence=confidence))
    selected = metrics.selection_mask(m, 0.5, np.random.default_rng([_SPLIT_STREAM, seed]))
    sel_m, ev_m = m[selected], m[~selected]
    n1_s, n0_s, n1_e, n0_e = int(sel_m.sum()), int((~sel_m).sum()), int(ev_m.sum()), int((~ev_m).sum())
    resolved = tuple(f for f in fprs if math.floor(f * min(n0_s, n0_e) + 1e-9) >= 1)
    powered = [f for f in resolved if f <= min_resolved_fpr + 1e-12 and detectable_ratio(
        f, n1_e, n0_e, margin=margin, confidence=confidence) <= RESOLUTION]
    short = not powered
    best: tuple[float, float, str, float, float] | None = None  # (objective, tpr, attack, fpr, threshold)
    for name, s in scores.items():
        s_sel = np.asarray(s, dtype=np.float64)[selected]
        for f in resolved:
            t = _threshold(s_sel[~sel_m], f)
            if t is None:
                continue
            tp, fp = _counts(s_sel, sel_m, t)
            lo, hi = metrics.rate_bounds(tp, n1_s, fp, n0_s, confidence)
            key = (_ratio(float(lo), float(hi)), tp / n1_s, name, f, t)
            if best is None or key[:2] > best[:2]:
                best = key
    base = dict(confidence=confidence, margin=margin, selection_members=n1_s, selection_nonmembers=n0_s,
                members=n1_e, nonmembers=n0_e, resolved_fprs=resolved, min_resolved_fpr=min_resolved_fpr,
                holdout_needed=holdout_needed(min_resolved_fpr, margin=margin, confidence=confidence) if short else None)
    if best is None:
        return HeldOutTest(status="unresolved", attack=None, fpr=None, threshold=None, true_positives=0,
                           false_positives=0, tpr_lower=0.0, fpr_upper=1.0, ratio_lower=0.0,
                           epsilon_lower_bound=0.0, **base)  # type: ignore[arg-type]
    _, _, name, f, t = best
    tp, fp = _counts(np.asarray(scores[name], dtype=np.float64)[~selected], ev_m, t)
    bounds = metrics.rate_bounds(tp, n1_e, fp, n0_e, confidence)
    tpr_lo, fpr_hi = float(bounds[0]), float(bounds[1])
    ratio = _ratio(tpr_lo, fpr_hi)
    eps = metrics.epsilon_from_rates(fpr_hi, 1.0 - tpr_lo, delta) if tpr_lo > 0 else 0.0
    status: Literal["leak", "no_leak", "unresolved"]
    status = "leak" if ratio > margin else ("unresolved" if short else "no_leak")
    return HeldOutTest(status=status, attack=name, fpr=f, threshold=t, true_positives=tp, false_positives=fp,
                       tpr_lower=tpr_lo, fpr_upper=fpr_hi, ratio_lower=ratio, epsilon_lower_bound=eps,
                       **base)  # type: ignore[arg-type]


def precision_lower_bounds(record_scores: NDArray[np.float64], scores: NDArray[np.float64],
                           is_member: NDArray[np.bool_], *, prior: float, confidence: float = 0.95,
                           ) -> NDArray[np.float64]:
    """For each record, a lower bound on P(member | called a member at that record's score).

    Among the given judgement records, those scoring at least as high as the record give a TPR and
    an FPR; their joint Clopper-Pearson bounds and the membership ``prior`` give a precision (PPV)
    that holds at ``confidence`` (Jayaraman et al. 2021 for PPV under a prior).
    """
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member, dtype=np.bool_)
    pos, neg = np.sort(s[m]), np.sort(s[~m])
    r = np.asarray(record_scores, dtype=np.float64)
    tp = len(pos) - np.searchsorted(pos, r, side="left")
    fp = len(neg) - np.searchsorted(neg, r, side="left")
    lo, hi = metrics.rate_bounds(tp, len(pos), fp, len(neg), confidence)
    num = prior * lo
    den = num + (1.0 - prior) * hi
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def evaluation_mask(is_member: NDArray[np.bool_], seed: int = 0) -> NDArray[np.bool_]:
    """The evaluation half :func:`held_out_test` judged on, for the same ``seed``."""
    m = np.asarray(is_member, dtype=np.bool_)
    return ~metrics.selection_mask(m, 0.5, np.random.default_rng([_SPLIT_STREAM, seed]))
