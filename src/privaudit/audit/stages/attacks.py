"""Stage 4: run the membership attacks, the split check and the what-if variants.

Attacks that only score outputs already in hand run side by side with the split check and the what-if
variants (they need nothing from each other, so no core idles while the longest one finishes). Attacks
that send queries run after, one at a time, so they respect the endpoint's rate and the query budget in
order. Results are stored in the analysis cache and reused only when every reference model came from the
score cache, i.e. the exact arrays the stored results were computed from.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from privaudit.attacks.membership import AttackContext, AttackResult, AttackSpec, run_attack
from privaudit.attacks.membership.label_only import PERTURBATIONS
from privaudit.attacks.membership.signals import probability_floor
from privaudit.audit import whatif
from privaudit.audit.analysis_cache import AnalysisCache, analysis_key
from privaudit.audit.config import AuditConfig
from privaudit.audit.scoring import attack_report
from privaudit.audit.splitcheck import SplitCheckResult, check_split
from privaudit.audit.stages.load import Inputs
from privaudit.audit.stages.query import Answers
from privaudit.audit.stages.references import Plan, References
from privaudit.errors import NothingAuditable, QueryBudgetExceeded
from privaudit.progress import Reporter
from privaudit.report.schema import AttackReport, SkippedAttack, WhatIfRow
from privaudit.target import OutputMode, apply_output_mode, to_probabilities
from privaudit.threads import thread_map

Scored = tuple[AttackResult, AttackReport]


@dataclass(frozen=True)
class AttackRun:
    """Every attack's per-record scores and metrics, in the plan's order, and what ran beside them."""

    results: tuple[AttackResult, ...]
    reports: tuple[AttackReport, ...]
    skipped: tuple[SkippedAttack, ...]
    split: SplitCheckResult
    context: AttackContext
    prior: float  # the member prior for precision and records at risk
    analysis: AnalysisCache
    what_if_variants: tuple[WhatIfRow, ...] = ()  # computed now, when the table is not cached
    what_if_cached: tuple[WhatIfRow, ...] | None = None  # the whole table, from the analysis cache
    warnings: tuple[str, ...] = ()


class _Progress:
    def __init__(self, ui: Reporter, total: int, done: int = 0) -> None:
        self.ui, self.total, self.done, self.lock = ui, total, done, threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.done += 1
            self.ui.progress("running attacks", self.done, self.total)


def run_attacks(inputs: Inputs, answers: Answers, plan: Plan, refs: References, cfg: AuditConfig,
                ui: Reporter) -> AttackRun:
    ctx = attack_context(inputs, answers, plan, refs, cfg.seed)
    prior = cfg.attacks.member_prior if cfg.attacks.member_prior is not None else inputs.n_train / inputs.n_total
    analysis = AnalysisCache(refs.cache.directory, analysis_key(
        target_outputs=answers.outputs, reference_keys=() if refs.scores is None else refs.scores.keys,
        y=answers.data.y, is_member=answers.data.is_member, options=_cache_options(plan, answers, cfg, prior)))
    reuse = refs.scores is None or refs.scores.trained == 0
    score: Callable[[AttackResult], AttackReport] = functools.partial(
        attack_report, data=answers.data, classes=answers.classes, delta=cfg.privacy.delta, prior=prior,
        n_bootstrap=cfg.attacks.n_bootstrap, seed=cfg.seed)
    offline = [s for s in plan.runnable if not s.sends_queries]
    stored = {s.name: analysis.load_attack(s.name) if reuse else None for s in offline}
    progress = _Progress(ui, len(plan.runnable), sum(v is not None for v in stored.values()))

    def scored(spec: AttackSpec) -> Scored:
        result = run_attack(spec, ctx)
        report = score(result)
        analysis.store_attack(result, report)
        progress.step()
        return result, report

    to_run = [s for s in offline if stored[s.name] is None]
    cached_rows = analysis.load_what_if() if cfg.attacks.what_if and reuse else None
    variant_tasks = (whatif.variant_tasks(ctx, None if refs.scores is None else refs.scores.probabilities,
                                          answers.data.is_member)
                     if cfg.attacks.what_if and cached_rows is None and whatif.applicable(ctx) else [])
    # The split check (a few seconds of gradient boosting, or a cache hit) joins them too.
    split_task = functools.partial(check_split, inputs.train.X, inputs.holdout.X, seed=cfg.seed,
                                   cache_dir=refs.cache.directory,
                                   data_key=f"{inputs.train_sha256}|{inputs.holdout_sha256}")
    tasks: list[Callable[[], Any]] = [split_task, *(functools.partial(scored, s) for s in to_run), *variant_tasks]
    done = thread_map(lambda task: task(), tasks, cfg.backend.jobs)
    by_name: dict[str, Scored] = {**{k: v for k, v in stored.items() if v is not None},
                                  **dict(zip((s.name for s in to_run), done[1:1 + len(to_run)]))}
    split: SplitCheckResult = done[0]
    warnings = () if split.passed else (f"split check: {split.message}",)
    for warning in warnings:
        ui.warn(warning)
    results, reports, skipped = _in_plan_order(plan, by_name, ctx, inputs, cfg, score, progress, ui)
    if not results:
        raise NothingAuditable("no attack could run on this target: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped))
    return AttackRun(results=tuple(results), reports=tuple(reports), skipped=tuple(skipped), split=split,
                     context=ctx, prior=prior, analysis=analysis, what_if_variants=tuple(done[1 + len(to_run):]),
                     what_if_cached=None if cached_rows is None else tuple(cached_rows), warnings=warnings)


def attack_context(inputs: Inputs, answers: Answers, plan: Plan, refs: References, seed: int) -> AttackContext:
    """What every attack reads. Only attacks that send queries look at the records' features."""
    mode = answers.mode
    ref_probs = None
    if refs.scores is not None:  # reference models are read through the same output hardening as the target
        seen = OutputMode("probabilities") if mode.kind == "logits" else mode
        ref_probs = to_probabilities(np.asarray(apply_output_mode(refs.scores.probabilities, seen), dtype=np.float64), seen)
    X = inputs.pool if any(s.sends_queries for s in plan.runnable) else np.empty((0, inputs.train.X.shape[1]))
    return AttackContext(X=X, y=answers.data.y, n_classes=len(answers.classes), mode=mode,
                         target_outputs=answers.outputs,
                         target_probs=to_probabilities(answers.outputs, mode) if mode.has_scores else None,
                         reference_probs=ref_probs, reference_in=None if refs.scores is None else refs.scores.in_mask,
                         target=inputs.loaded.target, seed=seed, floor=probability_floor(mode.rounding))


def _cache_options(plan: Plan, answers: Answers, cfg: AuditConfig, prior: float) -> dict[str, Any]:
    mode = answers.mode
    return {"attacks": [s.name for s in plan.runnable], "n_bootstrap": cfg.attacks.n_bootstrap,
            "delta": cfg.privacy.delta, "prior": prior, "seed": cfg.seed, "mode": [mode.kind, mode.rounding, mode.k],
            "classes": [str(c) for c in answers.classes], "reference_models": cfg.attacks.reference_models}


def _in_plan_order(plan: Plan, by_name: dict[str, Scored], ctx: AttackContext, inputs: Inputs, cfg: AuditConfig,
                   score: Callable[[AttackResult], AttackReport], progress: _Progress,
                   ui: Reporter) -> tuple[list[AttackResult], list[AttackReport], list[SkippedAttack]]:
    """Scoring-only attacks from ``by_name``; query-sending ones run now, one at a time, within the budget."""
    results: list[AttackResult] = []
    reports: list[AttackReport] = []
    skipped = list(plan.skipped)
    budget = cfg.model.http.get("max_queries")
    target = inputs.loaded.target
    for spec in plan.runnable:
        if not spec.sends_queries:
            results.append(by_name[spec.name][0])
            reports.append(by_name[spec.name][1])
            continue
        extra = inputs.n_total * PERTURBATIONS
        if budget is not None and target.queries + extra > int(budget):
            skipped.append(SkippedAttack(name=spec.name, reason=f"would send {extra} more queries; --max-queries "
                                                                f"{budget} leaves {int(budget) - target.queries}"))
            continue
        ui.info(f"{spec.name} sends {extra} more queries to the target")
        try:
            results.append(run_attack(spec, ctx))
            reports.append(score(results[-1]))
        except QueryBudgetExceeded as exc:
            skipped.append(SkippedAttack(name=spec.name, reason=str(exc)))
        progress.step()
    return results, reports, skipped
