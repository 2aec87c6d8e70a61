"""Stage 3: decide which attacks can run on this target, and train the reference models they need."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import joblib

from privaudit.attacks.membership import AttackSpec, registry
from privaudit.audit.backends import Backend
from privaudit.audit.config import DEFAULT_ATTACKS, AuditConfig
from privaudit.audit.reference import (
    Recipe,
    ReferenceScores,
    ScoreCache,
    default_cache_dir,
    default_surrogate,
    recipe_from_estimator,
    recipe_from_fitter,
    recipe_from_trainer,
    train_reference_models,
)
from privaudit.audit.stages.load import Inputs
from privaudit.audit.stages.query import Answers
from privaudit.models import LoadedModel
from privaudit.progress import Reporter
from privaudit.report.schema import SkippedAttack
from privaudit.target import OutputMode


@dataclass(frozen=True)
class Plan:
    """The attacks that run, in the order asked for, and why the others do not."""

    runnable: tuple[AttackSpec, ...]
    skipped: tuple[SkippedAttack, ...]

    @property
    def needs_references(self) -> bool:
        return any(s.needs_reference for s in self.runnable)


@dataclass(frozen=True)
class References:
    """Reference models' scores on every record (None when no attack needs them) and the score cache."""

    scores: ReferenceScores | None
    recipe: str | None  # how they were trained, for the report
    cache: ScoreCache
    warnings: tuple[str, ...] = ()


def chosen_attacks(names: tuple[str, ...] | None, mode: OutputMode) -> list[str]:
    if names is None:
        return list(DEFAULT_ATTACKS) if mode.has_scores else ["loss", "label_only"]
    return list(names)


def plan_attacks(cfg: AuditConfig, mode: OutputMode) -> Plan:
    specs, k = registry(), cfg.attacks.reference_models
    runnable: list[AttackSpec] = []
    skipped: list[SkippedAttack] = []
    for name in chosen_attacks(cfg.attacks.names, mode):
        spec = specs[name]
        if mode.kind not in spec.kinds:
            skipped.append(SkippedAttack(name=name, reason=f"needs confidence scores; the target exposes {mode.kind} only"))
        elif spec.needs_reference and k < (1 if name.endswith("offline") else 2):
            skipped.append(SkippedAttack(name=name, reason=f"needs reference models; --reference-models is {k}"))
        else:
            runnable.append(spec)
    return Plan(tuple(runnable), tuple(skipped))


def score_cache(cfg: AuditConfig) -> ScoreCache:
    return ScoreCache(None if not cfg.cache.enabled else cfg.cache.directory or default_cache_dir())


def train_references(inputs: Inputs, answers: Answers, plan: Plan, cfg: AuditConfig, backend: Backend,
                     ui: Reporter) -> References:
    cache = score_cache(cfg)
    if not plan.needs_references:
        return References(None, None, cache)
    recipe = reference_recipe(inputs.loaded, cfg.attacks.trainer, cfg.seed, inputs.codec)
    k = cfg.attacks.reference_models
    ui.info(f"Reference models: {k} ({recipe.description})")
    warnings: tuple[str, ...] = ()
    if recipe.kind == "surrogate":
        warnings = (f"reference models: {recipe.description}, not the target's own training recipe; the "
                    "attacks are weaker than with the real recipe (see bench/results/formats.md), so a "
                    "PASS understates the risk; pass --trainer module:function to train them your way",)
        ui.warn(warnings[0])
    tr, ho, y = inputs.train, inputs.holdout, answers.data.y
    # The pool is both files, row for row (their hashes already cover every value), with the label
    # column named and encoded as here; hashing the 8 bytes per record of y is cheap.
    pool_fp = hashlib.sha256("|".join(["pool", inputs.train_sha256, inputs.holdout_sha256,
                                       repr((inputs.n_total, tr.X.shape[1])), repr(tr.label_name),
                                       repr(ho.label_name)]).encode() + y.astype("<i8").tobytes()).hexdigest()
    scores = train_reference_models(recipe, lambda: inputs.pool, y, len(answers.classes), k, seed=cfg.seed,
                                    jobs=cfg.backend.jobs, cache=cache, data_fp=pool_fp, backend=backend,
                                    on_progress=lambda d, t: ui.progress("training reference models", d, t))
    return References(scores, recipe.description, cache, warnings)


def reference_recipe(loaded: LoadedModel, trainer: str | None, seed: int, codec: Any = None) -> Recipe:
    """How reference models are trained: the user's trainer, the target's own fitter or estimator, else a
    surrogate. The fingerprint keys the score cache to this target."""
    target_fp = loaded.sha256 or loaded.path or type(loaded.target).__name__
    if loaded.fitter is not None and loaded.sha256 is None:
        target_fp = loaded.fitter.key
    elif loaded.estimator is not None and loaded.sha256 is None:
        target_fp = joblib.hash(loaded.estimator)
    if trainer:
        return recipe_from_trainer(trainer, target_fingerprint=target_fp)
    if loaded.fitter is not None and getattr(loaded.fitter, "trainable", lambda: True)():
        return recipe_from_fitter(loaded.fitter.kind, loaded.fitter, target_fingerprint=target_fp)
    if loaded.estimator is not None and loaded.fitter is None:
        names = getattr(loaded.estimator, "feature_names_in_", None)
        return recipe_from_estimator(loaded.estimator, target_fingerprint=target_fp,
                                     feature_names=tuple(names) if names is not None else None, frame=codec)
    return default_surrogate(target_fingerprint=target_fp, seed=seed)

