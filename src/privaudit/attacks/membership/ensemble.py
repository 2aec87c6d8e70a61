"""Ensemble of the two online attacks: RMIA and LiRA with difficulty-binned variance, by rank.

With few reference models each attack's mistakes at the top of its ranking come from different
places: RMIA's from records whose mean reference likelihood happens to be low, LiRA's from records
whose spread across reference models is misjudged. A non-member rarely fools both, so the record's
two ranks (each scaled to [0, 1]) are averaged. LiRA here pools one variance per difficulty group
(:func:`privaudit.attacks.membership.lira.binned_moments`) instead of one for all records, the
estimator that suits this combination at K = 4 (measured in bench/results/variants.md).

When no record has two reference models on each side (K < 4), LiRA cannot measure a spread, and with
too few records for two difficulty groups its variance is the single shared one, which makes the
rank mean weaker than RMIA alone (bench/results/variants.md, "rank mean of rmia_online and
lira_online"); in both cases the ensemble is RMIA's ranking alone.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from privaudit.attacks.membership import AttackContext, AttackResult, lira, register_attack, rmia


def rank_mean(*scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mean of the records' ranks under each score, each scaled to [0, 1] (ties share their mean rank)."""
    n = len(scores[0])
    ranks = [(stats.rankdata(s) - 1.0) / max(n - 1, 1) for s in scores]
    out: NDArray[np.float64] = np.mean(ranks, axis=0)
    return out


@register_attack("ensemble_online", needs_reference=True,
                 summary="rank mean of RMIA online and LiRA online with difficulty-binned variance")
def run(ctx: AttackContext) -> AttackResult:
    if ctx.reference_probs is None or ctx.reference_in is None or ctx.target_probs is None:
        raise ValueError("the ensemble needs reference models and score outputs")
    rmia_scores, rmia_params = rmia.scores(ctx, offline=False)
    params: dict[str, object] = {"rmia_temperature": rmia_params["temperature"]}
    if not lira.spread_measurable(ctx.reference_in) or lira.difficulty_groups(len(ctx.y)) < 2:
        params["members"] = ["rmia_online"]
        return AttackResult("ensemble_online", rmia_scores, reference_models=ctx.n_reference, params=params)
    target_signal, ref_signal = lira.signals(ctx)
    lira_scores = lira.online_scores(target_signal, ref_signal, ctx.reference_in, "binned")
    params["members"] = ["rmia_online", "lira_online (binned variance)"]
    return AttackResult("ensemble_online", rank_mean(rmia_scores, lira_scores), reference_models=ctx.n_reference,
                        params=params)
