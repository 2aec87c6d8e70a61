"""What-if table: re-score the attacks as if the model were served hardened.

Everything comes from the audit already run: the target's full probabilities and the reference
models' outputs are passed through each serving policy (label only, top-k, rounding, temperature)
and the attacks are scored again. No new query is sent. It turns "stop exposing confidence scores"
into numbers for this model: how much attack power each policy removes and what callers lose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.attacks.membership import AttackContext, registry, run_attack
from privaudit.attacks.membership.signals import probability_floor
from privaudit.report.schema import FPR_KEYS, WhatIfRow
from privaudit.threads import thread_map
from privaudit.target import OutputMode, apply_output_mode, temper, to_probabilities

# Attacks that need no new queries and cover population, offline and online reference attacks.
WHAT_IF_ATTACKS = ("loss", "lira_offline", "rmia_online")
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


def what_if(ctx: AttackContext, raw_reference_probs: NDArray[np.float64] | None, is_member: NDArray[np.bool_],
            audited_scores: Mapping[str, NDArray[np.float64]] | None = None, *, jobs: int | None = 1) -> list[WhatIfRow]:
    """Rows for the audited serving mode and each hardened variant (needs the target's full probabilities).

    ``audited_scores`` holds the scores the audit's own attacks already computed on ``ctx``; the
    "as audited" row reuses them instead of running those attacks a second time.
    """
    if ctx.target_probs is None or ctx.mode.kind not in ("probabilities", "logits") or ctx.mode.rounding is not None:
        return []  # already hardened: the full probabilities needed to simulate other policies are not available
    full = ctx.target_probs
    holdout = ~is_member
    rows = [_row("as audited", ctx, is_member, metrics.accuracy(ctx.y[holdout], np.argmax(full[holdout], axis=1)),
                 True, ctx.mode, None, audited_scores)]

    def variant_row(variant_spec: tuple[str, OutputMode, float | None]) -> WhatIfRow:
        label, mode, temperature = variant_spec
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

    return rows + thread_map(variant_row, VARIANTS, jobs)
