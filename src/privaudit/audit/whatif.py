"""What-if table: re-score the attacks as if the model were served hardened.

Everything comes from the audit already run: the target's full probabilities and the reference
models' outputs are passed through each serving policy (label only, top-k, rounding, temperature)
and the attacks are scored again. No new query is sent. It turns "stop exposing confidence scores"
into numbers for this model: how much attack power each policy removes and what callers lose.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.attacks.membership import AttackContext, registry, run_attack
from privaudit.attacks.membership.signals import probability_floor
from privaudit.report.schema import FPR_KEYS, WhatIfRow
from privaudit.target import OutputMode, apply_output_mode, temper, to_probabilities

# Attacks that need no new queries and cover population, offline and online reference attacks.
WHAT_IF_ATTACKS = ("loss", "lira_offline", "rmia_online", "ensemble_online")
VARIANTS: tuple[tuple[str, OutputMode, float | None], ...] = (
    ("label only", OutputMode("label"), None),
    ("top-1, rounded to 2 decimals", OutputMode("top_k", rounding=2, k=1), None),
    ("top-3", OutputMode("top_k", k=3), None),
    ("rounded to 1 decimal", OutputMode("probabilities", rounding=1), None),
    ("rounded to 2 decimals", OutputMode("probabilities", rounding=2), None),
    ("temperature 3 (flattened)", OutputMode("probabilities"), 3.0),
)


def _row(label: str, ctx: AttackContext, is_member: NDArray[np.bool_], accuracy: float, calibrated: bool,
         mode: OutputMode, temperature: float | None,
         known: Mapping[str, NDArray[np.float64]] | None = None) -> WhatIfRow:
    specs = registry()
    best: tuple[float, float, str] | None = None
    best_tprs: dict[str, float | None] = {k: None for k in FPR_KEYS}
    for name in WHAT_IF_ATTACKS:
        spec = specs[name]
        if mode.kind not in spec.kinds or (spec.needs_reference and ctx.reference_probs is None):
            continue
        scores = known[name] if known is not None and name in known else run_attack(spec, ctx).scores
        points = metrics.tpr_at_fprs(scores, is_member, [float(k) for k in FPR_KEYS])
        tprs = {k: (None if (p := points[float(k)]) is None else p.tpr) for k in FPR_KEYS}
        auc = metrics.auc(scores, is_member)
        key = (-1.0 if tprs["0.001"] is None else tprs["0.001"], auc, name)
        if best is None or key[:2] > best[:2]:
            best, best_tprs = key, tprs
    return WhatIfRow(serving=label, output_mode=mode.kind, rounding=mode.rounding, k=mode.k, temperature=temperature,
                     best_attack=None if best is None else best[2], auc=None if best is None else best[1],
                     tpr_at_fpr=best_tprs, accuracy=accuracy, calibrated_probabilities=calibrated)


def applicable(ctx: AttackContext) -> bool:
    """The table needs the target's full probabilities; an already hardened target does not give them."""
    return ctx.target_probs is not None and ctx.mode.kind in ("probabilities", "logits") and ctx.mode.rounding is None


def audited_row(ctx: AttackContext, is_member: NDArray[np.bool_],
                audited_scores: Mapping[str, NDArray[np.float64]] | None = None) -> WhatIfRow:
    """The "as audited" row; ``audited_scores`` (the audit's own attack scores on ``ctx``) spare re-running them."""
    assert ctx.target_probs is not None
    holdout = ~is_member
    accuracy = metrics.accuracy(ctx.y[holdout], np.argmax(ctx.target_probs[holdout], axis=1))
    return _row("as audited", ctx, is_member, accuracy, True, ctx.mode, None, audited_scores)


def variant_tasks(ctx: AttackContext, raw_reference_probs: NDArray[np.float64] | None,
                  is_member: NDArray[np.bool_]) -> list[Callable[[], WhatIfRow]]:
    """One independent task per hardened serving policy (each returns its row), to run in any order."""
    assert ctx.target_probs is not None
    full = ctx.target_probs
    holdout = ~is_member

    def variant_row(label: str, mode: OutputMode, temperature: float | None) -> WhatIfRow:
        target_seen = apply_output_mode(temper(full, temperature), mode)
        refs_seen = None
        if raw_reference_probs is not None and mode.has_scores:
            refs_seen = to_probabilities(np.asarray(apply_output_mode(temper(raw_reference_probs, temperature), mode)), mode)
        variant = replace(ctx, mode=mode, target_outputs=target_seen,
                          target_probs=to_probabilities(np.asarray(target_seen), mode) if mode.has_scores else None,
                          reference_probs=refs_seen, reference_in=ctx.reference_in if refs_seen is not None else None,
                          target=None, floor=probability_floor(mode.rounding))
        labels = target_seen if mode.kind == "label" else np.argmax(np.nan_to_num(target_seen, nan=-1.0), axis=1)
        acc = metrics.accuracy(ctx.y[holdout], np.asarray(labels)[holdout])
        calibrated = mode.kind == "probabilities" and (mode.rounding is None or mode.rounding >= 2) and temperature is None
        return _row(label, variant, is_member, acc, calibrated, mode, temperature)

    return [functools.partial(variant_row, label, mode, temperature) for label, mode, temperature in VARIANTS]

