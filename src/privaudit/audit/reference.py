"""Reference (shadow) models: training on random halves of the audited records, and the score cache.

Reference models come in complementary pairs: model 2j trains on a random, class-stratified half of
the pool and model 2j+1 on the other half, so with an even K every record is IN for exactly K/2
models (the standard audit game) and raising K only adds pairs. What we cache is each model's
*output* on every pool record, never the model: keyed by the recipe, the data, the seed and the
model's index, so a re-run or a larger K trains only what is missing, and any change to the recipe,
the target or the data misses the cache instead of reusing a stale entry.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from privaudit.audit.backends import Backend, TrainingJob
from privaudit.audit.backends.local import LocalBackend
from privaudit.audit.cache_hmac import cache_key, sign, verified
from privaudit.errors import ConfigError
from privaudit.fileio import atomic_write_npy, atomic_write_text
from privaudit.models import as_target
from privaudit.models.pycallable import resolve
from privaudit.target import detect_output_mode, softmax, to_probabilities

CACHE_VERSION = "1"


@dataclass(frozen=True)
class Recipe:
    """How to train one reference model: clone the target, call a user trainer, a format's own training
    (``fitter``: the torch loop, XGBoost or LightGBM with the booster's parameters), or a default surrogate."""

    kind: str  # "clone" | "trainer" | "surrogate" | "torch" | "xgboost" | "lightgbm"
    description: str
    fingerprint: str
    estimator: Any = None  # unfitted template for "clone" and "surrogate"
    trainer: str | None = None  # "module:function" for "trainer"
    feature_names: tuple[str, ...] | None = None
    fitter: Any = None  # for format recipes: has fit_score(X, y, mask, seed, n_classes), description, key
    frame: Any = None  # a privaudit.textcolumns.FrameCodec when the data has text columns


@dataclass(frozen=True)
class ReferenceScores:
    probabilities: NDArray[np.float64]  # (K, n, C)
    in_mask: NDArray[np.bool_]  # (K, n)
    trained: int  # how many were trained in this run (the rest came from the cache)
    recipe: str
    keys: tuple[str, ...] = ()  # cache keys of the K models (recipe, data, seed, index)


def _sha(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def recipe_from_estimator(estimator: Any, *, target_fingerprint: str, feature_names: tuple[str, ...] | None,
                          frame: Any = None) -> Recipe:
    """Clone the target's estimator (scikit-learn's ``clone``: same hyper-parameters, unfitted).
    ``frame`` (a FrameCodec) feeds it text columns as they were read."""
    import joblib
    import sklearn
    from sklearn.base import clone

    template = clone(estimator)
    parts = [joblib.hash(template), sklearn.__version__, target_fingerprint] + ([joblib.hash(frame)] if frame is not None else [])
    fp = _sha("clone", *parts)
    return Recipe("clone", f"clone of {type(estimator).__name__}", fp, estimator=template, feature_names=feature_names,
                  frame=frame)


def recipe_from_trainer(spec: str, *, target_fingerprint: str) -> Recipe:
    """A user function ``fn(X, y, seed) -> fitted model`` named as ``module:function``."""

    fn = resolve(spec)
    if not callable(fn):
        raise ConfigError(f"--trainer {spec}: is not a function; expected fn(X, y, seed) -> fitted model")
    try:
        source = inspect.getsource(inspect.getmodule(fn) or fn)
    except (OSError, TypeError):
        source = spec
    return Recipe("trainer", f"trainer {spec}", _sha("trainer", spec, source, target_fingerprint), trainer=spec)


def recipe_from_fitter(kind: str, fitter: Any, *, target_fingerprint: str) -> Recipe:
    """A model format's own training (see ``privaudit.models``: torch loop, XGBoost, LightGBM)."""
    return Recipe(kind, fitter.description, _sha(kind, fitter.key, target_fingerprint), fitter=fitter)


def default_surrogate(*, target_fingerprint: str, seed: int) -> Recipe:
    """For black boxes: a standardised one-hidden-layer MLP (documented in docs/reference-models.md)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    template = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=seed))
    return Recipe("surrogate", "default surrogate: StandardScaler + MLPClassifier(128)",
                  _sha("surrogate-mlp-128", target_fingerprint), estimator=template)


def in_masks(y: NDArray[np.int64], n_models: int, seed: int) -> NDArray[np.bool_]:
    """Class-stratified complementary halves: row k marks the records reference model k trains on."""
    n = len(y)
    masks = np.zeros((n_models, n), dtype=bool)
    for pair in range((n_models + 1) // 2):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, pair]))
        half = np.zeros(n, dtype=bool)
        for cls in np.unique(y):
            idx = np.flatnonzero(y == cls)
            rng.shuffle(idx)
            # Alternate which side gets the odd record so halves stay balanced overall.
            take = (len(idx) + int(rng.integers(2))) // 2
            half[idx[:take]] = True
        masks[2 * pair] = half
        if 2 * pair + 1 < n_models:
            masks[2 * pair + 1] = ~half
    return masks


def model_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % (2**31 - 1))


def _probabilities(model: Any, X: Any, n_classes: int) -> NDArray[np.float64]:
    """A fitted model's outputs as full (n, C) probabilities, columns placed by its classes_."""

    n = len(X)
    out = np.zeros((n, n_classes))
    cols = np.asarray(getattr(model, "classes_", np.arange(n_classes))).astype(np.int64)
    if hasattr(model, "predict_proba"):
        out[:, cols] = np.asarray(model.predict_proba(X), dtype=np.float64)
    elif hasattr(model, "decision_function"):
        d = np.asarray(model.decision_function(X), dtype=np.float64)
        d = np.column_stack([np.zeros_like(d), d]) if d.ndim == 1 else d
        out[:, cols] = softmax(d)
    elif callable(model):
        out[:] = np.asarray(model(np.asarray(X, dtype=np.float64)), dtype=np.float64)
    else:
        out[np.arange(n), np.asarray(model.predict(X)).astype(np.int64)] = 1.0
    return out


def _native_probabilities(model: Any, X: NDArray[np.float64], n_classes: int) -> NDArray[np.float64] | None:
    """Probabilities of a trainer's model that is not scikit-learn-like: a torch module or a native booster."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from privaudit.models.torch_reference import probabilities

        param = next(iter(model.parameters()), None)
        out = probabilities(model, np.asarray(X), str(param.device) if param is not None else "cpu")
    elif type(model).__name__ == "Booster" and type(model).__module__.split(".")[0] in ("xgboost", "lightgbm"):

        raw = np.asarray(as_target(model).target.predict(np.asarray(X)))
        if raw.ndim == 1:  # a label-only objective: one-hot, as for any label-only reference model
            out = np.zeros((len(raw), n_classes))
            out[np.arange(len(raw)), raw.astype(np.int64)] = 1.0
        else:
            out = to_probabilities(raw.astype(np.float64), detect_output_mode(raw, raw.shape[1]))
    else:
        return None
    if out.shape[1] != n_classes:
        raise ConfigError(f"--trainer: the trained model gives {out.shape[1]} outputs per record; the target has "
                          f"{n_classes} classes")
    return out


def fit_and_score(recipe: Recipe, X: NDArray[np.float64], y: NDArray[np.int64], mask: NDArray[np.bool_],
                  seed: int, n_classes: int) -> NDArray[np.float64]:
    """Train one reference model on ``X[mask]`` and return its probabilities on all of ``X``."""
    from threadpoolctl import threadpool_limits

    # One BLAS thread per worker: joblib already runs one worker per core.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", category=ConvergenceWarning)
        data: Any = X
        if recipe.frame is not None:
            data = recipe.frame.frame(X)
        elif recipe.feature_names is not None:
            import pandas as pd

            data = pd.DataFrame(X, columns=list(recipe.feature_names))
        if recipe.fitter is not None:
            return np.asarray(recipe.fitter.fit_score(X, y, mask, seed, n_classes), dtype=np.float64)
        if recipe.kind == "trainer":

            assert recipe.trainer is not None
            model = resolve(recipe.trainer)(X[mask], y[mask], seed)
            native = _native_probabilities(model, X, n_classes)
            if native is not None:
                return native
        else:
            from sklearn.base import clone

            model = clone(recipe.estimator)
            seeds = {k: seed for k in model.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")}
            if seeds:
                model.set_params(**seeds)
            model.fit(data[mask] if not hasattr(data, "iloc") else data.iloc[np.flatnonzero(mask)], y[mask])
        return _probabilities(model, data, n_classes)


def data_fingerprint(X: NDArray[np.float64], y: NDArray[np.int64]) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    h.update(str(X.shape).encode())
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get("PRIVAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "privaudit" / "reference-scores"


class ScoreCache:
    """Reference-model outputs on disk, one .npy per model, written atomically."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._mac_key = None if directory is None else cache_key(directory)  # entries are signed

    def key(self, recipe: Recipe, data_fp: str, seed: int, index: int) -> str:
        return _sha(CACHE_VERSION, recipe.fingerprint, data_fp, str(seed), str(index))

    def get(self, key: str) -> NDArray[np.float64] | None:
        if self.directory is None:
            return None
        path = self.directory / f"{key}.npy"
        try:
            raw = path.read_bytes()
            if not verified(self._mac_key, path.with_suffix(".mac").read_text(), key.encode(), raw, what=str(path)):
                return None
            return np.asarray(np.load(io.BytesIO(raw), allow_pickle=False), dtype=np.float64)
        except (OSError, ValueError):
            return None  # missing or damaged entries are simply retrained

    def put(self, key: str, value: NDArray[np.float64]) -> None:
        if self.directory is None or self._mac_key is None:
            return
        path = self.directory / f"{key}.npy"
        atomic_write_npy(path, value)
        atomic_write_text(path.with_suffix(".mac"), sign(self._mac_key, key.encode(), path.read_bytes()))


def train_reference_models(
    recipe: Recipe,
    X: NDArray[np.float64] | Callable[[], NDArray[np.float64]],
    y: NDArray[np.int64],
    n_classes: int,
    n_models: int,
    *,
    seed: int,
    jobs: int | None = None,
    cache: ScoreCache | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    data_fp: str | None = None,
    backend: Backend | None = None,
) -> ReferenceScores:
    """Outputs of ``n_models`` reference models on every record, from the cache where possible.

    ``X`` may be a function returning the pool's rows: it is called only when a model must be trained
    (or no ``data_fp`` is given), so a fully cached run never assembles them. ``backend`` decides where
    the models train (default: local processes, ``jobs`` at once); results reach the cache as they arrive.
    """
    cache = cache or ScoreCache(None)
    masks = in_masks(y, n_models, seed)
    # A caller that already hashed the pool (the audit hashes both files for provenance) passes that.
    rows: Callable[[], NDArray[np.float64]] = X if callable(X) else (lambda: X)  # type: ignore[assignment,return-value]
    data_fp = data_fp or data_fingerprint(rows(), y)
    keys = [cache.key(recipe, data_fp, seed, k) for k in range(n_models)]
    probs: list[NDArray[np.float64] | None] = [cache.get(key) for key in keys]
    probs = [p if p is not None and p.shape == (len(y), n_classes) else None for p in probs]
    missing = [k for k in range(n_models) if probs[k] is None]
    done = n_models - len(missing)
    if on_progress:
        on_progress(done, n_models)
    if missing:
        job = TrainingJob(fit_and_score, recipe, rows(), y, masks, tuple(model_seed(seed, k) for k in range(n_models)),
                          n_classes)
        for k, p in (backend or LocalBackend(jobs)).run(job, missing):
            probs[k] = p
            cache.put(keys[k], p)
            done += 1
            if on_progress:
                on_progress(done, n_models)
    stacked = np.stack([p for p in probs if p is not None]) if n_models else np.zeros((0, len(y), n_classes))
    return ReferenceScores(stacked, masks, trained=len(missing), recipe=recipe.description, keys=tuple(keys))
