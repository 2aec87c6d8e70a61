"""Model inversion (MITRE ATLAS AML.T0024.001): can the model be made to reveal what a class looks like?

:func:`run_inversion` runs MI-Face (Fredrikson, Jha, Ristenpart 2015) once per class, with exact
gradients when the model can be differentiated in-process and with query-only gradient estimates
otherwise (``miface``). Whether the reconstructions really look like the class is judged by an
independent classifier of another model family trained on the private data (``evaluate``), never
by the target itself, which would happily "recognise" adversarial noise.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.attacks.inversion.miface import (
    GradientFn,
    MIFaceConfig,
    black_box_oracle,
    descend,
    white_box_gradient,
    white_box_oracle,
)
from privaudit.errors import ConfigError
from privaudit.models import LoadedModel, as_target
from privaudit.models.pycallable import CallableTarget
from privaudit.progress import Reporter
from privaudit.target import OutputMode, Target, detect_output_mode, to_probabilities

if TYPE_CHECKING:
    from privaudit.attacks.inversion.evaluate import InversionScores

__all__ = [
    "ClassReconstruction",
    "InversionResult",
    "MIFaceConfig",
    "run_inversion",
    "to_report_dict",
    "white_box_gradient",
]

InversionMode = Literal["white-box", "black-box", "refused"]
PROBE_ROWS = 8  # records sent up front to learn the output mode (rounding needs more than one row)
LABEL_ONLY_REASON = (
    "The model answers with labels only, so there is no confidence score to climb and no way to "
    "estimate a gradient from its outputs; model inversion by MI-Face is not possible."
)


@dataclass(frozen=True, eq=False)
class ClassReconstruction:
    """The best input MI-Face found for one class, in the original feature units."""

    class_label: str
    class_index: int
    x: NDArray[np.float64]
    probability: float  # the target's confidence in the class at x, as the attacker observed it
    start_probability: float  # the same at the start point
    queries: int  # records sent to the target (black box) or model evaluations (white box)
    steps: int
    stop_reason: str  # converged | plateau | flat (output never moved) | max_steps | budget
    # False when the confidence the descent climbed (the neighbourhood average when the white box
    # smooths, see MIFaceConfig.smoothing) never rose above its start value.
    improved: bool

    @property
    def cost(self) -> float:
        """MI-Face's classification cost ``1 - p(class | x)`` at the reconstruction."""
        return 1.0 - self.probability


@dataclass(frozen=True, eq=False)
class InversionResult:
    """One inversion run over several classes, or the reason it could not run."""

    mode: InversionMode
    reason: str | None
    classes: tuple[ClassReconstruction, ...] = ()
    queries_total: int = 0
    seconds: float = 0.0
    output_mode: OutputMode | None = None
    notes: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def reconstructions(self) -> NDArray[np.float64]:
        """All reconstructions stacked as rows (class order as in ``classes``)."""
        if not self.classes:
            return np.zeros((0, 0))
        return np.stack([c.x for c in self.classes])


def _is_target(obj: Any) -> bool:
    # Checked on the type: an HttpTarget that has not answered yet cannot name its classes, which
    # makes the runtime Protocol check fail even though it is a perfectly good target.
    kind = type(obj)
    return callable(getattr(kind, "predict", None)) and hasattr(kind, "queries") and hasattr(kind, "classes")


def _torch_target(module: Any, n_classes: int) -> Target:
    """A probability-returning Target around a torch module (logits are softmaxed)."""

    torch = sys.modules["torch"]

    def forward(X: NDArray[np.float64]) -> NDArray[np.float64]:
        param = next(module.parameters(), None)
        with torch.no_grad():
            out = module(torch.as_tensor(X, dtype=param.dtype if param is not None else torch.float32))
        arr = out.double().cpu().numpy().reshape(len(X), -1)
        if np.all(arr >= 0) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-4):
            return arr
        z = arr - arr.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    return CallableTarget(forward, classes=np.arange(n_classes))


def _resolve(target: Any, model: Any, n_classes: int) -> tuple[Target, Any]:
    """(queryable target, object to differentiate) from whatever the caller handed us."""

    if isinstance(target, LoadedModel):
        return target.target, model if model is not None else target.estimator
    if _is_target(target):
        return target, model if model is not None else getattr(target, "estimator", None)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(target, torch.nn.Module):
        return _torch_target(target, n_classes), model if model is not None else target
    loaded = as_target(target)
    return loaded.target, model if model is not None else (loaded.estimator if loaded.estimator is not None else target)


def _bounds(bounds: Any, n_features: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), (n_features,)).copy() for b in bounds)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi < lo):
        raise ConfigError("inversion bounds must be finite with every upper bound >= its lower bound; "
                          "give e.g. bounds=(0, 1) or per-feature arrays of training minima and maxima")
    return lo, hi


def _pick_classes(classes: NDArray[np.generic], wanted: Sequence[Any] | None) -> list[int]:
    names = [str(c) for c in classes.tolist()]
    if wanted is None:
        return list(range(len(names)))
    picked = []
    for label in wanted:
        if str(label) not in names:
            raise ConfigError(f"class {label!r} is not one of the model's classes {names[:10]}")
        picked.append(names.index(str(label)))
    return picked


def run_inversion(
    target: Any,
    *,
    n_classes: int,
    n_features: int,
    bounds: tuple[Any, Any] = (0.0, 1.0),
    start: Literal["mean", "blank"] = "mean",
    start_point: NDArray[np.float64] | None = None,
    mode: Literal["auto", "white-box", "black-box"] = "auto",
    gradient_fn: GradientFn | None = None,
    classes_to_invert: Sequence[Any] | None = None,
    max_queries_per_class: int = 3000,
    seed: int = 0,
    image_shape: tuple[int, ...] | None = None,
    config: MIFaceConfig | None = None,
    model: Any = None,
    reporter: Reporter | None = None,
) -> InversionResult:
    """Run MI-Face against ``target`` for each class in ``classes_to_invert`` (default: all).

    ``target`` may be a Target (HTTP included), a ``LoadedModel``, a fitted scikit-learn
    classifier or a torch module; ``model`` names the object to differentiate when ``target`` is
    only a query interface. ``start="mean"`` starts from ``start_point`` if given, else from the
    middle of the bounds; ``"blank"`` starts from the lower bounds (a blank image). ``mode="auto"``
    uses exact gradients when ``gradient_fn`` is given or :func:`white_box_gradient` supports the
    model, else query-based estimates. ``max_queries_per_class`` caps records sent per class (model
    evaluations in white-box mode). ``image_shape`` switches the prior to total variation.
    """
    clock = time.perf_counter()
    if mode not in ("auto", "white-box", "black-box"):
        raise ConfigError(f"inversion mode {mode!r} is not one of auto, white-box, black-box")
    if start not in ("mean", "blank"):
        raise ConfigError(f"inversion start {start!r} is not one of mean, blank")
    if image_shape is not None and math.prod(image_shape) != n_features:
        raise ConfigError(f"image shape {'x'.join(map(str, image_shape))} holds {math.prod(image_shape)} values "
                          f"but the records have {n_features} features")
    cfg = config or MIFaceConfig()
    if image_shape is not None:
        cfg = MIFaceConfig(**{**cfg.__dict__, "image_shape": tuple(image_shape)})
    tgt, differentiable = _resolve(target, model, n_classes)
    lo, hi = _bounds(bounds, n_features)
    span = hi - lo
    if start_point is not None:
        x0 = np.clip(np.asarray(start_point, dtype=np.float64).reshape(n_features), lo, hi)
    else:
        x0 = lo + 0.5 * span if start == "mean" else lo.copy()
    u0 = np.divide(x0 - lo, span, out=np.zeros(n_features), where=span > 0)

    # Learn the output mode from a few answers: the start point and seeded random records.
    queries_before = tgt.queries
    rng = np.random.default_rng(seed)
    probe = np.vstack([x0[None], lo + rng.random((PROBE_ROWS - 1, n_features)) * span])
    outputs = np.asarray(tgt.predict(probe))
    if outputs.ndim == 2 and outputs.shape[1] != n_classes:
        raise ConfigError(f"the model answers {outputs.shape[1]} scores per record but n_classes is {n_classes}")
    out_mode = detect_output_mode(outputs, n_classes)
    params: dict[str, Any] = {"start": "given" if start_point is not None else start, "seed": seed,
                              "max_queries_per_class": max_queries_per_class, "prior_weight": cfg.prior_weight,
                              "prior": "total_variation" if cfg.image_shape else "l2_to_start"}
    if not out_mode.has_scores:
        return InversionResult("refused", LABEL_ONLY_REASON, (), tgt.queries - queries_before,
                               time.perf_counter() - clock, out_mode, params=params)

    grad = gradient_fn
    if grad is None and mode != "black-box" and differentiable is not None:
        grad = white_box_gradient(differentiable, input_shape=None)
    if mode == "white-box" and grad is None:
        raise ConfigError(f"no exact gradient is available for {type(differentiable).__name__}; "
                          "use mode='black-box' or pass gradient_fn")
    chosen: InversionMode = "white-box" if grad is not None and mode != "black-box" else "black-box"
    # A smoothed descent climbs a neighbourhood average (NES always does), so the confidence at the
    # reconstruction itself is measured separately: one more evaluation per class. The start point
    # was the first probe record, so its confidence is already known.
    smooth = chosen == "black-box" or (cfg.smoothing > 0 and cfg.smoothing_samples > 0)
    start_probs = np.nan_to_num(to_probabilities(np.asarray(outputs, dtype=np.float64), out_mode)[0], nan=0.0)
    if chosen == "black-box":
        params.update(nes_sigma=cfg.sigma, nes_samples=cfg.samples)
    else:
        params.update(smoothing=cfg.smoothing if smooth else 0.0, smoothing_samples=cfg.smoothing_samples if smooth else 0)
    # A rise smaller than one rounding unit is indistinguishable from no rise at all.
    tol = max(1e-6, 10.0 ** (-out_mode.rounding)) if out_mode.rounding is not None else 1e-6

    recs: list[ClassReconstruction] = []
    notes: list[str] = []
    white_evals = 0
    picked = _pick_classes(np.asarray(tgt.classes), classes_to_invert)
    for done, c in enumerate(picked):
        label = str(np.asarray(tgt.classes).tolist()[c])
        if reporter is not None:
            reporter.progress("model inversion", done, len(picked))
        class_rng = np.random.default_rng([seed, c])  # per class, so a subset reproduces the same runs
        extra = 1 if smooth else 0
        if chosen == "white-box":
            assert grad is not None
            oracle = white_box_oracle(grad, lo, span, smoothing=cfg.smoothing if smooth else 0.0,
                                      samples=cfg.smoothing_samples, rng=class_rng, target=cfg.log_odds_target)
            per_call = cfg.smoothing_samples if smooth else 1
        else:
            oracle = black_box_oracle(tgt, out_mode, lo, span, cfg.sigma, cfg.samples, class_rng,
                                      cfg.log_odds_target)
            per_call = 2 * max(cfg.samples // 2, 1)
        outcome = descend(oracle, c, u0, cfg, budget=max_queries_per_class - extra, cost_per_call=per_call,
                          fixed=span == 0)
        improved = outcome.probability > outcome.start_probability + tol
        x_best = lo + outcome.u * span
        p_best, p_start = outcome.probability, outcome.start_probability
        if smooth:
            p_start = float(start_probs[c])
            if chosen == "white-box":
                assert grad is not None
                p_best = grad(x_best, c)[0]
            else:
                answer = to_probabilities(np.asarray(tgt.predict(x_best[None]), dtype=np.float64), out_mode)
                p_best = float(np.nan_to_num(answer[0, c], nan=0.0))
        queries = outcome.queries + extra
        if chosen == "white-box":
            white_evals += queries
        if not improved:
            notes.append(f"class {label}: the cost never improved; the target's confidence stayed at "
                         f"{outcome.start_probability:.3g}, so the model gave the attack nothing to climb")
        recs.append(ClassReconstruction(label, c, x_best, float(p_best), float(p_start), queries, outcome.steps,
                                        outcome.stop_reason, improved))
    if reporter is not None:
        reporter.progress("model inversion", len(picked), len(picked))
    total = tgt.queries - queries_before + white_evals
    return InversionResult(chosen, None, tuple(recs), total, time.perf_counter() - clock, out_mode, tuple(notes), params)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def to_report_dict(result: InversionResult, scores: InversionScores | None = None, *,
                   include_reconstructions: bool = False) -> dict[str, Any]:
    """The report's ``inversion`` section. Distances that cannot be measured (a class without
    training or holdout records) become None rather than NaN, which JSON cannot carry."""
    by_label = {s.class_label: s for s in scores.classes} if scores is not None else {}
    classes = []
    for rec in result.classes:
        s = by_label.get(rec.class_label)
        classes.append({
            "class": rec.class_label,
            "evaluator_prediction": s.evaluator_prediction if s else None,
            "evaluator_confidence": _finite(s.evaluator_confidence) if s else None,
            "queries": int(rec.queries),
            "nearest_train_distance": _finite(s.nearest_train_distance) if s else None,
            "holdout_reference_distance": _finite(s.holdout_reference_distance) if s else None,
        })
    out: dict[str, Any] = {
        "mode": result.mode,
        "reason": result.reason,
        "attack_accuracy": _finite(scores.attack_accuracy) if scores is not None else None,
        "attack_accuracy_top5": _finite(scores.attack_accuracy_top5) if scores is not None else None,
        "queries_total": int(result.queries_total),
        "seconds": float(result.seconds),
        "classes": classes,
    }
    if include_reconstructions:
        out["reconstructions"] = [[float(v) for v in rec.x] for rec in result.classes]
    return out
