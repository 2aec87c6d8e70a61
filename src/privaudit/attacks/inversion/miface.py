"""MI-Face (Fredrikson, Jha, Ristenpart 2015): rebuild a class's typical input from the model alone.

Gradient descent on a classification cost plus ``lambda * prior(x)``, projected onto the feature
bounds, keeping the best iterate. Two gradient sources share one loop:

* white box -- :func:`white_box_gradient` differentiates the model exactly (scikit-learn MLP and
  logistic regression, optionally behind affine scalers, and torch modules);
* black box -- :func:`nes_gradient` estimates the gradient from queries alone (antithetic NES),
  so any :class:`~privaudit.target.Target`, HTTP included, can be inverted.

The paper's cost is ``1 - p(class | x)``, stopped once it falls below gamma. Here the cost is how
far the class's log-odds ``log(p / (1 - p))`` fall short of ``log_odds_target`` (20 by default,
p = 1 - 2e-9); gamma applies to that shortfall. Steps have a fixed length, so at a single point
the step direction is the paper's (the gradient of the log-odds is that of p, rescaled); what
changes is when the descent stops. An overconfident network says 99.9 % a few steps away from a
grey start image that still looks like nothing, where 1 - p is already flat, while its log-odds
keep rising for as long as the input keeps gaining the class's features.

Both modes climb the cost averaged over a Gaussian neighbourhood of the current point rather than
at the point (NES estimates exactly that gradient; the white box averages exact gradients). The
exact gradient at a single point follows the model's most brittle directions; averaged over a
neighbourhood, only directions that raise the class robustly survive, every sample short of the
target pulling with its full log-odds gradient, and the descent stops only once the whole
neighbourhood is the class. bench/inversion.py measures both choices against the paper's.
Everything works in coordinates normalised to the bounds, so step sizes and sigma are shares of
each feature's range.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
from numpy.typing import NDArray

from privaudit.target import OutputMode, Target, to_probabilities

Array = NDArray[np.float64]
# fn(x, class_index) -> (p(class | x), d p / d x), for one record x of shape (d,).
GradientFn = Callable[[Array, int], tuple[float, Array]]
# Objective oracle in normalised coordinates: u, class -> (cost, its gradient, p, queries). The cost is
# the log-odds shortfall (see log_odds_cost), 0 once the target is reached.
Oracle = Callable[[Array, int], tuple[float, Array, float, int]]

TINY = 1e-12  # probability floor for white-box outputs (exact, so only log(0) must be avoided)
MAX_SIGMA = 0.5  # NES never perturbs by more than half the range: beyond that samples are pure noise


@dataclass(frozen=True)
class MIFaceConfig:
    """Knobs of the descent. Defaults suit 8x8 images and small tabular models."""

    step: float = 0.05  # RMS change per feature per step, as a share of the feature's range
    max_steps: int = 300
    patience: int = 40  # beta: stop after this many steps without improvement
    gamma: float = 1e-3  # stop once the cost (log-odds shortfall) falls below this
    log_odds_target: float = 20.0  # climb log(p / (1 - p)) up to this (6.9 is p = 0.999)
    prior_weight: float = 0.5  # lambda
    image_shape: tuple[int, ...] | None = None  # (H, W) or (H, W, channels): TV prior instead of L2
    denoise_every: int | None = None  # apply a small Gaussian filter every k steps (images only)
    denoise_sigma: float = 0.5
    sigma: float = 0.3  # NES: perturbation scale, and so the neighbourhood averaged, as a share of the range
    samples: int = 40  # NES: perturbed records per step (antithetic pairs, so even)
    # White box: climb the confidence averaged over a Gaussian neighbourhood of this scale (a share
    # of the range) instead of at the point; 0 turns it off (see the module docstring for why).
    smoothing: float = 0.3
    smoothing_samples: int = 8  # gradient evaluations per step when smoothing


@dataclass(frozen=True)
class DescentOutcome:
    """The best iterate of one class's descent and how the descent ended."""

    u: Array  # best point, normalised coordinates
    probability: float  # p(class) at the best point, as the oracle saw it
    start_probability: float
    objective: float
    steps: int  # oracle calls made
    queries: int
    stop_reason: Literal["converged", "plateau", "flat", "max_steps", "budget"]


# --- priors (pure; all on normalised coordinates) ---------------------------------------------


def l2_prior(u: Array, ref: Array) -> tuple[float, Array]:
    """Mean squared distance to the start point: keeps tabular reconstructions plausible."""
    diff = u - ref
    return float(0.5 * np.mean(diff**2)), diff / diff.size


def total_variation(u: Array, shape: tuple[int, ...], eps: float = 1e-3) -> tuple[float, Array]:
    """Smoothed isotropic total variation of an image (mean over pixels) and its gradient.

    The eps smoothing makes the norm differentiable at flat regions, where a blank start sits.
    """
    img = u.reshape(shape if len(shape) == 3 else (*shape, 1))
    dx = np.zeros_like(img)
    dy = np.zeros_like(img)
    dx[:, :-1] = img[:, 1:] - img[:, :-1]
    dy[:-1, :] = img[1:, :] - img[:-1, :]
    mag = np.sqrt(dx**2 + dy**2 + eps**2)
    gx, gy = dx / mag, dy / mag
    grad = -(gx + gy)
    grad[:, 1:] += gx[:, :-1]
    grad[1:, :] += gy[:-1, :]
    n = img.size
    return float((mag.sum() - eps * n) / n), grad.reshape(-1) / n


def denoise(u: Array, shape: tuple[int, ...], sigma: float) -> Array:
    """A light spatial Gaussian blur; MI-Face's "process" step that removes pixel-level noise."""
    from scipy.ndimage import gaussian_filter

    img = u.reshape(shape)
    sig = (sigma, sigma) + (0.0,) * (len(shape) - 2)  # never blur across channels
    return np.asarray(gaussian_filter(img, sigma=sig, mode="nearest"), dtype=np.float64).reshape(-1)


# --- white box ----------------------------------------------------------------------------------


def _head(z: Array, c: int, kind: str) -> tuple[Array, Array]:
    """p(class c) and d p_c / d z for the output layers scikit-learn uses; z is (n, K)."""
    if kind == "binary":  # one logit: p(class 1) = sigmoid(z), p(class 0) = 1 - that
        s = 1.0 / (1.0 + np.exp(-np.clip(z[:, 0], -500, 500)))
        sign = 1.0 if c == 1 else -1.0
        return (s if c == 1 else 1.0 - s), (sign * s * (1.0 - s))[:, None]
    if kind == "ovr":  # one-vs-rest logistic regression: sigmoids renormalised to sum to one
        s = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        total = s.sum(axis=1, keepdims=True)
        ds = s * (1.0 - s)
        pc = s[:, c] / total[:, 0]
        grad = -s[:, c : c + 1] * ds / total**2
        grad[:, c] += ds[:, c] / total[:, 0]
        return pc, grad
    zz = z - z.max(axis=1, keepdims=True)
    p = np.exp(zz)
    p /= p.sum(axis=1, keepdims=True)
    grad = -p[:, c : c + 1] * p
    grad[:, c] += p[:, c]
    return p[:, c], grad


_ACT: dict[str, Callable[[Array], Array]] = {
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
    "logistic": lambda z: 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))),
    "identity": lambda z: z,
}
# Derivatives written in terms of the activation's output h, which is what the forward pass keeps.
_DACT: dict[str, Callable[[Array], Array]] = {
    "relu": lambda h: (h > 0).astype(np.float64),
    "tanh": lambda h: 1.0 - h**2,
    "logistic": lambda h: h * (1.0 - h),
    "identity": np.ones_like,
}


def _mlp(model: Any) -> Callable[[Array, int], tuple[Array, Array]] | None:
    act, out = getattr(model, "activation", None), getattr(model, "out_activation_", None)
    if act not in _ACT or out not in ("softmax", "logistic") or (out == "logistic" and model.n_outputs_ != 1):
        return None  # multi-label MLPs and custom activations are not classifiers we can invert
    weights = [np.asarray(w, dtype=np.float64) for w in model.coefs_]
    biases = [np.asarray(b, dtype=np.float64) for b in model.intercepts_]
    kind = "softmax" if out == "softmax" else "binary"

    def fn(X: Array, c: int) -> tuple[Array, Array]:
        hs = [X]
        for W, b in zip(weights[:-1], biases[:-1]):
            hs.append(_ACT[act](hs[-1] @ W + b))
        p, delta = _head(hs[-1] @ weights[-1] + biases[-1], c, kind)
        for layer in range(len(weights) - 1, 0, -1):  # back through the hidden layers
            delta = (delta @ weights[layer].T) * _DACT[act](hs[layer])
        return p, delta @ weights[0].T

    return fn


def _logistic(model: Any) -> Callable[[Array, int], tuple[Array, Array]] | None:
    coef = np.asarray(model.coef_, dtype=np.float64)
    bias = np.asarray(model.intercept_, dtype=np.float64)
    if coef.shape[0] == 1:
        kind = "binary"
    else:
        # Older scikit-learn could fit one-vs-rest models; new versions are always multinomial.
        multi = getattr(model, "multi_class", "auto")
        ovr = multi == "ovr" or (multi == "auto" and getattr(model, "solver", "") == "liblinear")
        kind = "ovr" if ovr else "softmax"

    def fn(X: Array, c: int) -> tuple[Array, Array]:
        p, dz = _head(X @ coef.T + bias, c, kind)
        return p, dz @ coef

    return fn


def _affine(step: Any, d: int) -> tuple[Array, Array] | None:
    """Elementwise ``x * a + b`` equal to a fitted scaler's transform, or None if it is not one."""
    name = type(step).__name__
    if step is None or step == "passthrough":
        return np.ones(d), np.zeros(d)
    if name == "StandardScaler":
        # mean_ is fitted even when with_mean=False, so the flags decide what transform() applies.
        scale = step.scale_ if step.with_std and step.scale_ is not None else np.ones(d)
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(d)
        return 1.0 / np.asarray(scale, np.float64), -np.asarray(mean, np.float64) / np.asarray(scale, np.float64)
    if name == "MinMaxScaler" and not step.clip:
        return np.asarray(step.scale_, np.float64), np.asarray(step.min_, np.float64)
    if name == "MaxAbsScaler":
        return 1.0 / np.asarray(step.scale_, np.float64), np.zeros(d)
    return None


def _torch(model: Any, input_shape: tuple[int, ...] | None) -> GradientFn | None:
    torch = sys.modules.get("torch")  # a torch module can only exist if torch is already imported
    if torch is None or not isinstance(model, torch.nn.Module):
        return None
    last = list(model.children())[-1] if list(model.children()) else model
    outputs = "log" if isinstance(last, torch.nn.LogSoftmax) else "prob" if isinstance(last, torch.nn.Softmax) else "logits"
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32

    def fn(x: Array, c: int) -> tuple[float, Array]:
        t = torch.as_tensor(np.asarray(x).reshape(1, *(input_shape or (-1,))), dtype=dtype).requires_grad_(True)
        was_training = model.training
        model.eval()  # dropout and batch-norm statistics must not move during the attack
        try:
            out = model(t)
        finally:
            model.train(was_training)
        probs = out.exp() if outputs == "log" else out if outputs == "prob" else torch.softmax(out, dim=-1)
        p = probs.reshape(1, -1)[0, c]
        (grad,) = torch.autograd.grad(p, t)
        return float(p.detach()), grad.detach().reshape(-1).double().cpu().numpy()

    return fn


def white_box_gradient(model: Any, *, input_shape: tuple[int, ...] | None = None) -> GradientFn | None:
    """Exact ``fn(x, class_index) -> (p, dp/dx)`` for models we can differentiate; None otherwise.

    Supported: scikit-learn ``MLPClassifier`` and ``LogisticRegression`` (alone or at the end of a
    ``Pipeline`` whose earlier steps are Standard/MinMax/MaxAbs scalers) and torch ``nn.Module``
    classifiers returning logits, probabilities (ends in Softmax) or log-probabilities.
    ``input_shape`` reshapes the flat record for torch models that expect images.
    """
    torch_fn = _torch(model, input_shape)
    if torch_fn is not None:
        return torch_fn
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    name = type(final).__name__
    if name == "MLPClassifier" and hasattr(final, "coefs_"):
        core, d = _mlp(final), int(np.shape(final.coefs_[0])[0])
    elif name == "LogisticRegression" and hasattr(final, "coef_"):
        core, d = _logistic(final), int(np.shape(final.coef_)[1])
    else:
        return None
    if core is None:
        return None
    a, b = np.ones(d), np.zeros(d)
    for _name, step in (steps or [])[:-1]:
        ab = _affine(step, d)
        if ab is None:
            return None  # a non-affine preprocessing step: no exact gradient from us
        a, b = a * ab[0], b * ab[0] + ab[1]
    inner = core

    def fn(x: Array, c: int) -> tuple[float, Array]:
        X = np.asarray(x, dtype=np.float64).reshape(1, -1)
        p, g = inner(X * a + b, c)
        return float(p[0]), g[0] * a  # chain rule through the scaler: d x'/d x = a

    return fn


def log_odds_cost(p: Array, floor: float, target: float) -> tuple[Array, Array]:
    """Per sample: the shortfall of ``log(p / (1 - p))`` from ``target``, and d(shortfall)/dp.

    ``floor`` is the smallest probability the outputs can resolve (one rounding unit, or TINY), so
    the log-odds cannot be observed beyond ``log((1 - floor) / floor)``; the target is capped there
    so that rounded outputs can still reach it. Samples at or above the target cost 0 and push no
    further: the step follows the points of the neighbourhood that are not yet the class.
    """
    p = np.asarray(p, dtype=np.float64)
    cap = min(target, float(np.log((1.0 - floor) / floor)))
    lo, hi = np.maximum(p, floor), np.maximum(1.0 - p, floor)
    shortfall = cap - (np.log(lo) - np.log(hi))
    active = shortfall > 0.0
    return np.where(active, shortfall, 0.0), np.where(active, -(1.0 / lo + 1.0 / hi), 0.0)


def white_box_oracle(fn: GradientFn, lo: Array, span: Array, *, smoothing: float = 0.0, samples: int = 0,
                     rng: np.random.Generator | None = None, target: float = 20.0) -> Oracle:
    """Objective oracle from an exact gradient: one model evaluation per call, or ``samples`` when smoothing.

    With ``smoothing`` > 0 the value, gradient and confidence are averages over ``samples`` points
    drawn from a Gaussian of that scale around ``u`` (clipped to the bounds): the same smoothed
    surface the black-box NES estimate climbs.
    """
    if smoothing <= 0.0 or samples <= 0:

        def point(u: Array, c: int) -> tuple[float, Array, float, int]:
            p, g = fn(lo + u * span, c)
            cost, dcost = log_odds_cost(np.array([p]), TINY, target)
            return float(cost[0]), float(dcost[0]) * g * span, p, 1

        return point
    gen = rng if rng is not None else np.random.default_rng(0)

    def smoothed(u: Array, c: int) -> tuple[float, Array, float, int]:
        points = np.clip(u + smoothing * gen.standard_normal((samples, u.size)), 0.0, 1.0)
        ps, grads = zip(*(fn(lo + v * span, c) for v in points))
        p = np.asarray(ps, dtype=np.float64)
        cost, dcost = log_odds_cost(p, TINY, target)
        g = np.mean(np.asarray(grads, dtype=np.float64) * dcost[:, None], axis=0)
        return float(np.mean(cost)), g * span, float(np.mean(p)), samples

    return smoothed


# --- black box ----------------------------------------------------------------------------------


def nes_gradient(values: Array, noise: Array, sigma: float) -> Array:
    """Antithetic NES estimate of grad f from f(u + sigma e_i) (first half) and f(u - sigma e_i)."""
    m = len(noise)
    diff = values[:m] - values[m:]
    return (diff[:, None] * noise).sum(axis=0) / (2.0 * m * sigma)


def black_box_oracle(target: Target, mode: OutputMode, lo: Array, span: Array, sigma: float, samples: int,
                     rng: np.random.Generator, log_odds_target: float = 20.0) -> Oracle:
    """Objective oracle from queries: ``samples`` perturbations of the point in one predict call.

    The cost and confidence are the means over the perturbed records, i.e. the Gaussian-smoothed
    objective whose gradient NES estimates, so the descent tracks and stops on what it follows.
    Rounded outputs make small perturbations invisible, hence sigma is a sizeable share of the
    range; top-k answers that omit the class give it the evenly spread residual mass
    (``to_probabilities``), which still moves when the other classes gain or lose confidence.
    """
    floor = 0.5 * 10.0 ** (-mode.rounding) if mode.rounding is not None else TINY
    half = max(samples // 2, 1)
    state = {"sigma": sigma}

    def oracle(u: Array, c: int) -> tuple[float, Array, float, int]:
        s = state["sigma"]
        noise = rng.standard_normal((half, u.size))
        points = np.clip(np.concatenate([u + s * noise, u - s * noise]), 0.0, 1.0)
        probs = to_probabilities(np.asarray(target.predict(lo + points * span), dtype=np.float64), mode)
        p = np.nan_to_num(probs[:, c], nan=0.0)
        cost, _ = log_odds_cost(p, floor, log_odds_target)
        # All samples equal: rounding hid every change, so look further out next time; once the
        # class is visible again, drift back to the requested sigma for a sharper estimate.
        state["sigma"] = min(MAX_SIGMA, 2.0 * s) if np.ptp(cost) == 0.0 else max(sigma, 0.8 * s)
        return float(np.mean(cost)), nes_gradient(cost, noise, s), float(np.mean(p)), len(points)

    return oracle


# --- the descent --------------------------------------------------------------------------------


def descend(oracle: Oracle, c: int, u0: Array, cfg: MIFaceConfig, *, budget: int | None = None,
            cost_per_call: int = 1, fixed: NDArray[np.bool_] | None = None) -> DescentOutcome:
    """Projected, normalised gradient descent on ``cost + lambda * prior``; keeps the best iterate.

    Every step has the same RMS length (``cfg.step``, halved after each stretch of patience/4
    steps without progress) so the noisy, arbitrarily scaled black-box estimates and the exact
    white-box gradients behave alike. ``budget`` caps oracle queries; ``cost_per_call`` is what
    one call spends, so the loop stops before overrunning it. ``fixed`` marks features whose
    bounds leave no room (lower == upper); they stay at their start so the prior ignores them.
    """
    u = u0.copy()
    shape = cfg.image_shape
    prior = (lambda v: total_variation(v, shape)) if shape else (lambda v: l2_prior(v, u0))
    best_u, best_obj, best_p, best_cost, start_p = u.copy(), np.inf, 0.0, np.inf, float("nan")
    step, stale, flat, queries, reason = cfg.step, 0, 0, 0, "max_steps"
    calls = 0
    for it in range(1, cfg.max_steps + 1):
        if budget is not None and queries + cost_per_call > budget:
            reason = "budget"
            break
        value, grad, p, spent = oracle(u, c)
        queries += spent
        calls += 1
        r_val, r_grad = prior(u)
        obj = value + cfg.prior_weight * r_val
        if np.isnan(start_p):
            start_p = p
        if obj < best_obj - 1e-9:
            best_u, best_obj, best_p, best_cost, stale = u.copy(), obj, p, value, 0
        else:
            stale += 1
        if best_cost < cfg.gamma:
            reason = "converged"
            break
        flat = flat + 1 if not np.any(grad) else 0
        if stale >= cfg.patience or flat >= cfg.patience:
            # A model whose output never moves gives nothing to follow; only the prior would still
            # be descending, so spending more queries cannot reveal anything.
            reason = "flat" if flat >= cfg.patience else "plateau"
            break
        if stale and stale % max(cfg.patience // 4, 1) == 0:
            step *= 0.5  # overshooting: shorten the stride and retry from the best point
            u = best_u.copy()
            continue
        total = grad + cfg.prior_weight * r_grad
        norm = float(np.linalg.norm(total))
        if norm == 0.0 or not np.isfinite(norm):
            continue  # a flat model: nothing to follow, the stale counter ends the descent
        u = np.clip(u - step * np.sqrt(u.size) * total / norm, 0.0, 1.0)
        if cfg.image_shape and cfg.denoise_every and it % cfg.denoise_every == 0:
            u = np.clip(denoise(u, cfg.image_shape, cfg.denoise_sigma), 0.0, 1.0)
        if fixed is not None:
            u[fixed] = u0[fixed]
    return DescentOutcome(best_u, best_p, start_p if not np.isnan(start_p) else 0.0, float(best_obj), calls, queries,
                          reason)  # type: ignore[arg-type]
