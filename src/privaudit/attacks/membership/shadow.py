"""Learned shadow-model attack (Shokri et al. 2017), the classic baseline.

The reference models play the shadow models: for each of them we know which audited records it
trained on, so its outputs on those records become a labelled training set for an attack classifier
(IN vs OUT). That classifier then scores the target's outputs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from privaudit.attacks.membership import AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import entropy, scaled_logit

MAX_TRAINING_ROWS = 50_000  # ample for a classifier on six features


def features(probs: NDArray[np.float64], y: NDArray[np.int64], floor: float) -> NDArray[np.float64]:
    """Attack features of one model's outputs: true-class scaled logit, top-3 probabilities, entropy, correctness."""
    if probs.shape[-1] > 3:  # a partial sort: only the three largest are needed
        top = -np.sort(np.partition(-probs, 2, axis=-1)[..., :3], axis=-1)
    else:
        top = -np.sort(-probs, axis=-1)[..., :3]
    if top.shape[-1] < 3:
        top = np.concatenate([top, np.zeros(top.shape[:-1] + (3 - top.shape[-1],))], axis=-1)
    correct = (np.argmax(probs, axis=-1) == y).astype(np.float64)
    return np.concatenate(
        [scaled_logit(probs, y, floor)[..., None], top, entropy(probs, floor)[..., None], correct[..., None]], axis=-1
    )


@register_attack("shadow", needs_reference=True, summary="attack classifier trained on shadow (reference) models")
def run(ctx: AttackContext) -> AttackResult:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    if ctx.reference_probs is None or ctx.reference_in is None or ctx.target_probs is None:
        raise ValueError("the shadow attack needs reference models and score outputs")
    k_models, n, n_classes = ctx.reference_probs.shape
    labels = ctx.reference_in.reshape(-1)
    rng = np.random.default_rng(ctx.seed)
    # Sample the (model, record) pairs first, then compute features for those pairs only.
    keep = np.sort(rng.choice(len(labels), MAX_TRAINING_ROWS, replace=False)) if len(labels) > MAX_TRAINING_ROWS \
        else np.arange(len(labels))
    feats = features(ctx.reference_probs.reshape(-1, n_classes)[keep], np.tile(ctx.y, k_models)[keep], ctx.floor)
    labels = labels[keep]
    feats = np.clip(feats, -1e6, 1e6)  # saturated logits of memorised records would be +inf
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=int(rng.integers(2**31 - 1)))
    with threadpool_limits(limits=1, user_api="openmp"):  # see splitcheck: competing OpenMP threads crawl
        clf.fit(feats, labels)
    target_feats = np.clip(features(ctx.target_probs, ctx.y, ctx.floor), -1e6, 1e6)
    proba = clf.predict_proba(target_feats)[:, list(clf.classes_).index(True)]
    # Break the classifier's ties with the raw signal so low-FPR thresholds stay resolvable.
    tiebreak = np.argsort(np.argsort(target_feats[:, 0])) / (10.0 * len(proba) + 1.0)
    return AttackResult("shadow", proba + 1e-6 * tiebreak, reference_models=ctx.n_reference,
                        params={"attack_model": "HistGradientBoostingClassifier"})
