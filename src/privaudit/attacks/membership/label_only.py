"""Label-only attack (Choquette-Choo et al. 2021): members keep their label under perturbation.

Each record is sent again with random noise at several strengths; the share of perturbed copies
still classified correctly is the score. It needs nothing but labels, so it is the attack for
label-only endpoints, and it spends ``n_records * PERTURBATIONS`` extra queries.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from privaudit.attacks.membership import ALL_KINDS, AttackContext, AttackResult, register_attack
from privaudit.attacks.membership.signals import correctness

# (Gaussian noise in feature standard deviations, bit-flip probability for binary columns)
STRENGTHS = ((0.1, 0.02), (0.3, 0.05), (0.6, 0.1))
PER_STRENGTH = 8
PERTURBATIONS = len(STRENGTHS) * PER_STRENGTH


def predicted_labels(outputs: NDArray[np.generic]) -> NDArray[np.int64]:
    out = np.asarray(outputs)
    if out.ndim == 1:
        return out.astype(np.int64)
    return np.argmax(np.nan_to_num(out, nan=-np.inf), axis=1).astype(np.int64)


def perturb(X: NDArray[np.float64], binary: NDArray[np.bool_], std: NDArray[np.float64], noise: float, flip: float,
            rng: np.random.Generator) -> NDArray[np.float64]:
    """One noisy copy of every row: Gaussian noise on continuous columns, bit flips on binary ones."""
    out = X + rng.normal(size=X.shape) * (noise * std)[None, :]
    flips = rng.random(X.shape) < flip
    out[:, binary] = np.where(flips[:, binary], 1.0 - X[:, binary], X[:, binary])
    return out


@register_attack("label_only", kinds=ALL_KINDS, sends_queries=True,
                 summary="label robustness under noise; spends extra queries")
def run(ctx: AttackContext) -> AttackResult:
    if ctx.target is None:
        raise ValueError("the label-only attack needs query access to the target")
    X = ctx.X
    binary = np.all((X == 0) | (X == 1), axis=0)
    std = np.nanstd(X, axis=0)
    rng = np.random.default_rng(ctx.seed)
    base = correctness(predicted_labels(ctx.target_outputs), ctx.y)
    robust = np.zeros(len(X))
    queries = 0
    for noise, flip in STRENGTHS:
        for _ in range(PER_STRENGTH):
            labels = predicted_labels(ctx.target.predict(perturb(X, binary, std, noise, flip, rng)))
            robust += correctness(labels, ctx.y)
            queries += len(X)
    # The unperturbed answer dominates: a wrong label is strong evidence of a non-member.
    scores = base * (PERTURBATIONS + 1) + robust
    return AttackResult("label_only", scores, queries=queries, params={"perturbations": PERTURBATIONS})
