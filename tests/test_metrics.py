"""Tests for privaudit.metrics: hand-computed values, sklearn cross-checks, statistical sanity."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from privaudit.metrics import (
    EpsilonBound,
    OperatingPoint,
    accuracy,
    advantage,
    auc,
    clopper_pearson,
    epsilon_from_rates,
    epsilon_lower_bound,
    epsilon_max_measurable,
    generalization_gap,
    per_record_risk,
    ppv,
    roc_curve,
    tpr_at_fpr,
    tpr_at_fprs,
)

# The shared toy example. Sorted by score: M M N M N N (M = member, N = non-member).
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
MEMBERS = np.array([1, 1, 0, 1, 0, 0], dtype=bool)


def _random_case(seed: int, n: int = 500, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    members = rng.random(n) < 0.4
    # Rounding creates many ties, which is where ROC implementations usually disagree.
    scores = np.round(rng.normal(size=n) + shift * members, 1)
    return scores, members


# --- roc_curve / auc / advantage ------------------------------------------------------------


def test_roc_curve_hand_values() -> None:
    # Lowering the threshold through 0.9, 0.8, 0.7, 0.6, 0.5, 0.4 flags M, M, N, M, N, N in turn:
    # TP counts 1 2 2 3 3 3 and FP counts 0 0 1 1 2 3, out of 3 members and 3 non-members.
    fpr, tpr, thr = roc_curve(SCORES, MEMBERS)
    np.testing.assert_allclose(fpr, np.array([0, 0, 0, 1, 1, 2, 3]) / 3)
    np.testing.assert_allclose(tpr, np.array([0, 1, 2, 2, 3, 3, 3]) / 3)
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def test_roc_curve_ties_form_one_step() -> None:
    # Scores 0.7 are shared by a member and a non-member, so both are flagged together.
    fpr, tpr, thr = roc_curve([0.9, 0.7, 0.7, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.7, 0.1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_curve_and_auc_match_sklearn(seed: int) -> None:
    scores, members = _random_case(seed)
    fpr, tpr, thr = roc_curve(scores, members)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(members, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_array_equal(thr, sk_thr)
    assert auc(scores, members) == pytest.approx(roc_auc_score(members, scores), abs=1e-12)


def test_auc_hand_value() -> None:
    # Member 0.9 and 0.8 beat all three non-members, 0.6 beats 0.5 and 0.4: 8 of 9 pairs.
    assert auc(SCORES, MEMBERS) == pytest.approx(8 / 9)


def test_auc_counts_ties_as_half() -> None:
    # One pair, tied: 1/2.
    assert auc([0.3, 0.3], [True, False]) == pytest.approx(0.5)


def test_infinite_scores_are_handled() -> None:
    # Sorted: +inf (M, N), 1 (N), 0 (M), -inf (M, N). Flagging +inf gives TP 1 FP 1, then 1
    # adds FP 2, 0 adds TP 2, -inf adds everything.
    scores = [np.inf, 1.0, 0.0, -np.inf, np.inf, -np.inf]
    members = [1, 0, 1, 1, 0, 0]
    fpr, tpr, thr = roc_curve(scores, members)
    np.testing.assert_allclose(fpr, np.array([0, 1, 2, 2, 3]) / 3)
    np.testing.assert_allclose(tpr, np.array([0, 1, 1, 2, 3]) / 3)
    np.testing.assert_array_equal(thr, [np.inf, np.inf, 1.0, 0.0, -np.inf])
    # Winning pairs: inf-member beats 1 and -inf (2, plus 1/2 for the tied inf), 0 beats -inf
    # (1), -inf-member ties -inf (1/2): 4 of 9.
    assert auc(scores, members) == pytest.approx(4 / 9)


def test_advantage_hand_value() -> None:
    # TPR - FPR along the curve: 0, 1/3, 2/3, 1/3, 2/3, 1/3, 0; the best is 2/3.
    assert advantage(SCORES, MEMBERS) == pytest.approx(2 / 3)


def test_advantage_perfect_and_inverted() -> None:
    assert advantage([1.0, 0.0], [1, 0]) == pytest.approx(1.0)
    # An attack that ranks backwards never beats flagging nothing.
    assert advantage([0.0, 1.0], [1, 0]) == pytest.approx(0.0)


# --- tpr_at_fpr -----------------------------------------------------------------------------


def test_tpr_at_fpr_unresolvable_returns_none() -> None:
    # 3 non-members * 0.3 = 0.9 < 1 false positive: no threshold can show such an FPR.
    assert tpr_at_fpr(SCORES, MEMBERS, 0.3) is None
    assert tpr_at_fpr(SCORES, MEMBERS, 0.0) is None
    scores, members = _random_case(0, n=2000)
    assert tpr_at_fpr(scores, members, 1e-4) is None


def test_tpr_at_fpr_hand_values() -> None:
    # Budget of one false positive (3 * 1/3 = 1): threshold 0.6 flags M M N M, TPR 1, FPR 1/3.
    op = tpr_at_fpr(SCORES, MEMBERS, 1 / 3)
    assert op == OperatingPoint(tpr=1.0, fpr_achieved=1 / 3, threshold=0.6)
    # A looser budget does not move it: the highest threshold reaching TPR 1 is still 0.6.
    assert tpr_at_fpr(SCORES, MEMBERS, 0.7) == op
    assert tpr_at_fpr(SCORES, MEMBERS, 1.0) == op


def test_tpr_at_fpr_exact_fpr_budget_is_not_lost_to_rounding() -> None:
    # 0.29 * 100 is 28.999999999999996 in floating point; 29 false positives must still be allowed.
    scores = np.r_[np.arange(100, dtype=float), np.arange(100, dtype=float) + 0.5]
    members = np.r_[np.zeros(100, dtype=bool), np.ones(100, dtype=bool)]
    op = tpr_at_fpr(scores, members, 0.29)
    assert op is not None
    # Non-members 71..99 (29 of them) sit at or above threshold 70.5; members 70.5..99.5 (30).
    assert op.fpr_achieved == pytest.approx(0.29)
    assert op.threshold == 70.5
    assert op.tpr == pytest.approx(0.30)


def test_tpr_at_fpr_zero_tpr_point() -> None:
    # One non-member * 0.5 < 1 false positive: unresolvable.
    assert tpr_at_fpr([0.9, 0.8, 0.1], [0, 1, 1], 0.5) is None
    # Two non-members allow one false positive: flagging down to 0.1 catches N M M, TPR 1.
    op = tpr_at_fpr([0.9, 0.8, 0.1, 0.0], [0, 1, 1, 0], 0.5)
    assert op == OperatingPoint(tpr=1.0, fpr_achieved=0.5, threshold=0.1)
    # Both non-members outscore both members: one false positive buys no true positive, so the
    # answer is the flag-nothing point (threshold +inf, TPR 0, FPR 0).
    op = tpr_at_fpr([0.9, 0.95, 0.1, 0.0], [0, 0, 1, 1], 0.5)
    assert op == OperatingPoint(tpr=0.0, fpr_achieved=0.0, threshold=math.inf)


def test_tpr_at_fprs_matches_single_calls() -> None:
    scores, members = _random_case(4, n=3000)
    fprs = [0.001, 0.01, 0.1, 1e-5]
    many = tpr_at_fprs(scores, members, fprs, n_bootstrap=50, seed=3)
    assert list(many) == fprs
    assert many[1e-5] is None
    for f in fprs:
        assert tpr_at_fpr(scores, members, f, n_bootstrap=50, seed=3) == many[f]


def test_bootstrap_ci_contains_point_and_is_reproducible() -> None:
    scores, members = _random_case(5, n=4000)
    op = tpr_at_fpr(scores, members, 0.05, n_bootstrap=200, seed=11)
    assert op is not None and op.ci_low is not None and op.ci_high is not None
    assert op.ci_low <= op.tpr <= op.ci_high
    assert op.ci_low < op.ci_high
    assert tpr_at_fpr(scores, members, 0.05, n_bootstrap=200, seed=11) == op
    again = tpr_at_fpr(scores, members, 0.05, n_bootstrap=200, seed=np.random.default_rng(11))
    assert again == op
    other = tpr_at_fpr(scores, members, 0.05, n_bootstrap=200, seed=12)
    assert other is not None and (other.ci_low, other.ci_high) != (op.ci_low, op.ci_high)
    # A narrower confidence level gives a narrower interval from the same resamples.
    narrow = tpr_at_fpr(scores, members, 0.05, n_bootstrap=200, seed=11, confidence=0.5)
    assert narrow is not None and narrow.ci_low is not None and narrow.ci_high is not None
    assert op.ci_low <= narrow.ci_low <= narrow.ci_high <= op.ci_high


def test_bootstrap_is_fast() -> None:
    rng = np.random.default_rng(0)
    members = rng.random(20_000) < 0.5
    scores = rng.normal(size=20_000) + members
    timings = []
    # Best of three, so a busy CI machine does not turn a speed check into a flaky test.
    for _ in range(3):
        start = time.perf_counter()
        tpr_at_fpr(scores, members, 0.001, n_bootstrap=200)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5


# --- ppv ------------------------------------------------------------------------------------


def test_ppv_hand_values() -> None:
    # Balanced: 0.5*0.5 / (0.5*0.5 + 0.5*0.1) = 0.25 / 0.30.
    assert ppv(0.5, 0.1, 0.5) == pytest.approx(0.25 / 0.30)
    # Prior 0.1: 0.05 / (0.05 + 0.09).
    assert ppv(0.5, 0.1, 0.1) == pytest.approx(0.05 / 0.14)
    assert ppv(0.2, 0.0, 0.01) == pytest.approx(1.0)
    assert ppv(0.0, 0.0, 0.5) is None


# --- clopper_pearson ------------------------------------------------------------------------


def test_clopper_pearson_known_values() -> None:
    # k = 0: upper = 1 - 0.025 ** (1/10) = 0.3085; k = n mirrors it.
    assert clopper_pearson(0, 10, 0.95) == pytest.approx((0.0, 0.308497), abs=1e-6)
    assert clopper_pearson(10, 10, 0.95) == pytest.approx((0.691503, 1.0), abs=1e-6)
    # Textbook value for 5 of 10.
    assert clopper_pearson(5, 10, 0.95) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    # 99% for k = 0, n = 100: 1 - 0.005 ** 0.01.
    assert clopper_pearson(0, 100, 0.99)[1] == pytest.approx(1 - 0.005**0.01)


# --- epsilon_from_rates / epsilon_max_measurable --------------------------------------------


def test_epsilon_from_rates_hand_values() -> None:
    # max(log(0.8 / 0.1), log(0.9 / 0.2)) = log 8.
    assert epsilon_from_rates(0.1, 0.2, 0.0) == pytest.approx(math.log(8))
    # With delta 0.1: max(log(0.7 / 0.1), log(0.8 / 0.2)) = log 7.
    assert epsilon_from_rates(0.1, 0.2, 0.1) == pytest.approx(math.log(7))
    # A coin flip proves nothing; worse than a coin flip neither.
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0
    assert epsilon_from_rates(0.6, 0.7, 0.0) == 0.0
    # Zero FPR with a positive numerator is infinite evidence.
    assert epsilon_from_rates(0.0, 0.5, 1e-5) == math.inf
    # Flagging nothing (FPR 0, FNR 1): numerator 1 - 0 - 1 = 0, so no infinity.
    assert epsilon_from_rates(0.0, 1.0, 0.0) == 0.0


def test_epsilon_max_measurable_hand_value() -> None:
    # Both upper bounds are 1 - 0.025 ** (1/100) = 0.036217; eps = log((1 - u) / u) = 3.2813.
    u = 1 - 0.025 ** (1 / 100)
    expected = math.log((1 - u) / u)
    assert epsilon_max_measurable(100, 100, 0.0) == pytest.approx(expected)
    assert expected == pytest.approx(3.2813, abs=1e-4)
    # More data can certify more; unequal sizes are limited by the larger upper bound.
    assert epsilon_max_measurable(1000, 1000) > epsilon_max_measurable(100, 100)
    assert epsilon_max_measurable(100, 10_000) < epsilon_max_measurable(10_000, 10_000)


# --- epsilon_lower_bound --------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_epsilon_lower_bound_near_zero_without_signal(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    scores = rng.random(2000)
    members = rng.random(2000) < 0.5
    bound = epsilon_lower_bound(scores, members, seed=seed)
    assert 0.0 <= bound.epsilon_lower_bound < 0.5


def test_epsilon_lower_bound_perfect_separation_reaches_the_maximum() -> None:
    rng = np.random.default_rng(7)
    scores = np.r_[1.0 + rng.random(500), rng.random(500)]
    members = np.r_[np.ones(500, dtype=bool), np.zeros(500, dtype=bool)]
    bound = epsilon_lower_bound(scores, members, delta=1e-5, seed=3)
    assert isinstance(bound, EpsilonBound)
    # The evaluation half has 250 of each class.
    assert bound.epsilon_max_measurable == pytest.approx(epsilon_max_measurable(250, 250, 1e-5))
    assert bound.epsilon_lower_bound == pytest.approx(bound.epsilon_max_measurable)
    assert bound.threshold is not None and 0.99 < bound.threshold < 1.01
    assert bound.delta == 1e-5 and bound.confidence == 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_epsilon_lower_bound_never_exceeds_the_maximum(seed: int) -> None:
    scores, members = _random_case(seed, n=1500, shift=3.0)
    bound = epsilon_lower_bound(scores, members, seed=seed, selection_fraction=0.3)
    assert 0.0 < bound.epsilon_lower_bound <= bound.epsilon_max_measurable
    # The selection part takes 30% of each class, rounded half up.
    n1, n0 = int(members.sum()), int((~members).sum())
    n_eval_members = n1 - math.floor(0.3 * n1 + 0.5)
    n_eval_nonmembers = n0 - math.floor(0.3 * n0 + 0.5)
    assert bound.epsilon_max_measurable == pytest.approx(
        epsilon_max_measurable(n_eval_members, n_eval_nonmembers)
    )


def test_epsilon_lower_bound_is_seeded() -> None:
    scores, members = _random_case(9, n=1000)
    first = epsilon_lower_bound(scores, members, seed=5)
    assert epsilon_lower_bound(scores, members, seed=5) == first
    assert epsilon_lower_bound(scores, members, seed=np.random.default_rng(5)) == first


def test_epsilon_lower_bound_nothing_to_show() -> None:
    # Members all score below non-members: no "score >= t" rule beats chance on selection.
    bound = epsilon_lower_bound([0.0, 0.1, 0.2, 0.9, 1.0, 1.1], [1, 1, 1, 0, 0, 0])
    assert bound.epsilon_lower_bound == 0.0
    assert bound.threshold is None


# --- per_record_risk / accuracy / generalization_gap ----------------------------------------


def test_per_record_risk_hand_values() -> None:
    # Non-member scores are 0.7, 0.5, 0.4. Strictly below: 0.9 -> 3, 0.8 -> 3, 0.7 -> 2,
    # 0.6 -> 2, 0.5 -> 1, 0.4 -> 0; divided by 3.
    risk = per_record_risk(SCORES, MEMBERS)
    np.testing.assert_allclose(risk, np.array([3, 3, 2, 2, 1, 0]) / 3)
    assert risk.dtype == np.float64


def test_per_record_risk_is_one_minus_flagging_fpr() -> None:
    scores, members = _random_case(6)
    risk = per_record_risk(scores, members)
    neg = scores[~members]
    expected = np.array([1 - np.mean(neg >= x) for x in scores])
    np.testing.assert_allclose(risk, expected)


def test_accuracy_and_gap() -> None:
    # 3 of 4 labels agree.
    assert accuracy([0, 1, 2, 2], [0, 1, 2, 1]) == pytest.approx(0.75)
    assert accuracy(["a", "b"], ["a", "b"]) == 1.0
    assert generalization_gap(0.98, 0.85) == pytest.approx(0.13)
    assert generalization_gap(0.80, 0.85) == pytest.approx(-0.05)


# --- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "members"),
    [
        ([0.1, np.nan], [1, 0]),  # NaN score
        ([0.1, 0.2, 0.3], [1, 0]),  # length mismatch
        ([[0.1, 0.2]], [[1, 0]]),  # not 1-D
        ([], []),  # empty
        ([0.1, 0.2], [1, 1]),  # no non-members
        ([0.1, 0.2], [0, 0]),  # no members
        ([0.1, 0.2], [1, 2]),  # labels other than 0/1
        ([0.1, 0.2], [1.0, np.nan]),  # NaN label
    ],
)
def test_bad_score_inputs_raise(scores: list[Any], members: list[Any]) -> None:
    for fn in (roc_curve, auc, advantage, per_record_risk, epsilon_lower_bound):
        if fn is per_record_risk and members == [0, 0]:
            continue  # per_record_risk needs non-members only
        with pytest.raises(ValueError):
            fn(scores, members)
    with pytest.raises(ValueError):
        tpr_at_fpr(scores, members, 0.1)


def test_per_record_risk_needs_nonmembers_only() -> None:
    np.testing.assert_allclose(per_record_risk([0.1, 0.2], [0, 0]), [0.0, 0.5])
    with pytest.raises(ValueError, match="non-member"):
        per_record_risk([0.1, 0.2], [1, 1])


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError):
        tpr_at_fpr(SCORES, MEMBERS, 1.5)
    with pytest.raises(ValueError):
        tpr_at_fpr(SCORES, MEMBERS, 0.5, n_bootstrap=-1)
    with pytest.raises(ValueError):
        tpr_at_fpr(SCORES, MEMBERS, 0.5, confidence=1.0)
    with pytest.raises(ValueError):
        ppv(0.5, 0.1, 0.0)
    with pytest.raises(ValueError):
        ppv(1.5, 0.1, 0.5)
    with pytest.raises(ValueError):
        clopper_pearson(11, 10, 0.95)
    with pytest.raises(ValueError):
        clopper_pearson(-1, 10, 0.95)
    with pytest.raises(ValueError):
        clopper_pearson(0, 0, 0.95)
    with pytest.raises(ValueError):
        epsilon_from_rates(0.1, 0.1, 1.0)
    with pytest.raises(ValueError):
        epsilon_from_rates(-0.1, 0.1, 0.0)
    with pytest.raises(ValueError):
        epsilon_max_measurable(0, 10)
    with pytest.raises(ValueError):
        epsilon_lower_bound(SCORES, MEMBERS, selection_fraction=1.0)
    with pytest.raises(ValueError, match="at least 2"):
        epsilon_lower_bound([0.1, 0.2, 0.3], [1, 0, 0])
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        generalization_gap(1.2, 0.5)


def test_advantage_difference_bounds_by_hand() -> None:
    from privaudit.metrics import advantage_difference_bounds

    # a: 30 wins, 10 losses in 100 -> mean 0.2, variance 0.4 - 0.04 = 0.36; b: 10 and 10 in 100 -> 0, 0.2.
    # half-width 1.6448536 * sqrt(0.0036 + 0.002) = 1.6448536 * 0.0748331 = 0.1230896; lower 0.2 - 0.1230896.
    low, half = advantage_difference_bounds(30, 10, 100, 10, 10, 100, confidence=0.95)
    assert half == pytest.approx(0.1230896, abs=1e-6) and low == pytest.approx(0.0769104, abs=1e-6)
    with pytest.raises(ValueError, match="set b"):
        advantage_difference_bounds(1, 1, 10, 8, 8, 10)


def test_auc_standard_error_and_increase_bound_by_hand() -> None:
    from privaudit.metrics import auc_standard_error, gap_variance, increase_lower_bound

    # Hanley & McNeil at A = 0.5, 100 + 100: Q1 = Q2 = 1/3; (0.25 + 2 * 99 * (1/3 - 1/4)) / 10,000 = 0.001675.
    assert auc_standard_error(0.5, 100, 100) == pytest.approx(math.sqrt(0.001675), rel=1e-9)
    assert auc_standard_error(1.0, 50, 50) == 0.0
    # 0.3 - 0.1 - 1.6448536 * sqrt(0.01 + 0.0044) = 0.2 - 1.6448536 * 0.12 = 0.2 - 0.1973824.
    assert increase_lower_bound(0.3, 0.01, 0.1, 0.0044) == pytest.approx(0.0026176, abs=1e-6)
    # 0.9 * 0.1 / 100 + 0.5 * 0.5 / 50 = 0.0009 + 0.005.
    assert gap_variance(0.9, 100, 0.5, 50) == pytest.approx(0.0059)
