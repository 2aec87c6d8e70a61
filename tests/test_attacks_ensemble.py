"""The ensemble attack and the difficulty-binned LiRA variance it uses, on hand-worked and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from privaudit import metrics
from privaudit.attacks.membership import AttackContext, registry, run_attack
from privaudit.attacks.membership.ensemble import rank_mean
from privaudit.attacks.membership.lira import MIN_RECORDS_PER_BIN, binned_moments, online_scores, spread_measurable
from privaudit.audit.reference import in_masks
from privaudit.target import OutputMode


def test_binned_moments_pool_one_variance_per_difficulty_group() -> None:
    # Four records, two models each. Means 0, 1, 10, 11 -> groups {0, 1} and {10, 11}.
    signal = np.array([[-1.0, 0.0, 9.0, 8.0],
                       [1.0, 2.0, 11.0, 14.0]])
    mask = np.ones_like(signal, dtype=bool)
    mean, std, has = binned_moments(signal, mask, bins=2, min_per_bin=2)
    np.testing.assert_allclose(mean, [0.0, 1.0, 10.0, 11.0])
    assert has.all()
    # Group 1: squared deviations 1+1 and 1+1 over 1+1 degrees of freedom -> variance 2.
    # Group 2: 1+1 and 9+9 over 2 -> variance 10.
    np.testing.assert_allclose(std, np.sqrt([2.0, 2.0, 10.0, 10.0]))
    # One group (too few records for two): the fixed variance over all records, (2 + 2 + 2 + 18) / 4 = 6.
    _, std1, _ = binned_moments(signal, mask, bins=2, min_per_bin=3)
    np.testing.assert_allclose(std1, np.sqrt(6.0))


def test_binned_moments_fall_back_to_the_shared_variance_when_a_group_has_no_spread() -> None:
    signal = np.array([[0.0, 1.0, 10.0, 11.0],
                       [2.0, 3.0, 99.0, 99.0]])
    mask = np.array([[True, True, True, True],
                     [True, True, False, False]])  # records 2 and 3 have one model: no spread
    mean, std, _ = binned_moments(signal, mask, bins=2, min_per_bin=2)
    np.testing.assert_allclose(mean, [1.0, 2.0, 10.0, 11.0])
    np.testing.assert_allclose(std, np.sqrt(2.0))  # group 1's (1+1+1+1)/2 = 2 is also the shared one


def test_rank_mean_averages_scaled_ranks() -> None:
    a = np.array([0.1, 0.5, 0.9, 0.3])   # ranks 0 2 3 1 -> /3
    b = np.array([10.0, 30.0, 20.0, 40.0])  # ranks 0 2 1 3 -> /3
    np.testing.assert_allclose(rank_mean(a, b), [0.0, 2 / 3, 2 / 3, 2 / 3])


def _heteroscedastic_game(seed: int, n: int = 20_000, k: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scaled-logit-like signals whose spread across models grows with the record's difficulty.

    As on real models, difficulty moves the mean far more than models scatter around it, so a
    record's mean over a few models tells how hard it is.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n)
    spread = 0.3 + 3.0 * difficulty  # easy records barely move across models, hard ones a lot
    mu_out = 10.0 - 20.0 * difficulty
    mu_in = mu_out + 2.0 + 3.0 * difficulty
    ref_in = in_masks(np.zeros(n, dtype=np.int64), k, seed)
    refs = np.where(ref_in, mu_in, mu_out) + rng.normal(size=(k, n)) * spread
    member = rng.random(n) < 0.5
    target = np.where(member, mu_in, mu_out) + rng.normal(size=n) * spread
    return target, refs, ref_in, member


def test_binned_variance_beats_one_shared_variance_when_spread_depends_on_difficulty() -> None:
    gains = []
    for seed in range(3):
        target, refs, ref_in, member = _heteroscedastic_game(seed)
        fixed = metrics.tpr_at_fpr(online_scores(target, refs, ref_in, "fixed"), member, 0.01)
        binned = metrics.tpr_at_fpr(online_scores(target, refs, ref_in, "binned"), member, 0.01)
        assert fixed is not None and binned is not None
        gains.append(binned.tpr - fixed.tpr)
    assert min(gains) > 0.02, gains


def test_spread_needs_two_models_on_each_side() -> None:
    assert not spread_measurable(np.array([[True, False], [False, True]]))
    assert spread_measurable(np.array([[True, False], [False, True], [True, False], [False, True]]))


def _context(probs: np.ndarray, ref_probs: np.ndarray, ref_in: np.ndarray, y: np.ndarray) -> AttackContext:
    return AttackContext(X=np.zeros((0, 1)), y=y, n_classes=probs.shape[1], mode=OutputMode("probabilities"),
                         target_outputs=probs, target_probs=probs, reference_probs=ref_probs, reference_in=ref_in,
                         target=None, seed=0, floor=1e-300)


def test_with_two_reference_models_the_ensemble_is_rmia_alone() -> None:
    rng = np.random.default_rng(0)
    n, c = 1200, 3
    y = rng.integers(c, size=n)
    probs = rng.dirichlet(np.ones(c), size=n)
    ref_probs = rng.dirichlet(np.ones(c), size=(2, n))
    ctx = _context(probs, ref_probs, in_masks(y, 2, 0), y)
    result = run_attack(registry()["ensemble_online"], ctx)
    rmia = run_attack(registry()["rmia_online"], ctx)
    np.testing.assert_array_equal(result.scores, rmia.scores)
    assert result.params["members"] == ["rmia_online"]


def test_too_few_records_for_difficulty_groups_leave_rmia_alone() -> None:
    rng = np.random.default_rng(1)
    n, c = 2 * MIN_RECORDS_PER_BIN - 1, 3
    y = rng.integers(c, size=n)
    ctx = _context(rng.dirichlet(np.ones(c), size=n), rng.dirichlet(np.ones(c), size=(4, n)), in_masks(y, 4, 1), y)
    result = run_attack(registry()["ensemble_online"], ctx)
    np.testing.assert_array_equal(result.scores, run_attack(registry()["rmia_online"], ctx).scores)
    assert result.params["members"] == ["rmia_online"]


@pytest.mark.parametrize("k", [4, 6])
def test_the_ensemble_ranks_by_both_attacks(k: int) -> None:
    rng = np.random.default_rng(k)
    n, c = 2 * MIN_RECORDS_PER_BIN, 4
    y = rng.integers(c, size=n)
    probs = rng.dirichlet(np.ones(c), size=n)
    ref_probs = rng.dirichlet(np.ones(c), size=(k, n))
    ref_in = in_masks(y, k, k)
    ctx = _context(probs, ref_probs, ref_in, y)
    result = run_attack(registry()["ensemble_online"], ctx)
    rmia = run_attack(registry()["rmia_online"], ctx).scores
    from privaudit.attacks.membership.lira import signals

    t, r = signals(ctx)
    np.testing.assert_allclose(result.scores, rank_mean(rmia, online_scores(t, r, ref_in, "binned")))
    assert result.params["members"] == ["rmia_online", "lira_online (binned variance)"]
