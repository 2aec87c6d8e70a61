"""LightGBM native boosters (``.txt`` model files, or ``--model-format lightgbm``), loaded without pickle.

The model file carries every training parameter, so reference models are boosters trained with
exactly those parameters and the same number of iterations; only the seeds change (one per reference
model, set through ``seed`` so LightGBM derives all of its own) and training runs on one thread in
deterministic mode.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ModelLoadError, UnsupportedModelError
from privaudit.models import LoadedModel, LoadOptions, register_loader, wants

# Parameters that describe a run rather than the model, or that "seed" re-derives.
_DROP = {"num_iterations", "early_stopping_round", "early_stopping_min_delta", "bagging_seed", "feature_fraction_seed",
         "extra_seed", "drop_seed", "data_random_seed", "objective_seed", "num_threads", "local_listen_port",
         "time_out", "num_machines", "machines", "machine_list_filename", "gpu_platform_id", "gpu_device_id",
         "input_model", "output_model", "saved_feature_importance_type", "header", "two_round", "pre_partition",
         "verbosity", "deterministic", "seed"}


def _lgb() -> Any:
    try:
        import lightgbm
    except ModuleNotFoundError as exc:
        raise ModelLoadError("LightGBM models need lightgbm: pip install 'privaudit[lightgbm]'") from exc
    return lightgbm


class LightGBMTarget:
    """A native booster answering (n, C) probabilities (binary objectives: the two columns of p)."""

    def __init__(self, booster: Any, name: str = "model") -> None:
        self.booster = booster
        self.objective = str(booster.params.get("objective", ""))
        if self.objective not in ("binary", "multiclass", "multiclassova", "cross_entropy", "xentropy"):
            raise UnsupportedModelError(f"{name}: LightGBM objective '{self.objective or 'unknown'}' is not a "
                                        "classification objective; privaudit audits classifiers (binary, multiclass)")
        n_class = int(booster.params.get("num_class", 1) or 1)
        self._classes = np.arange(max(n_class, 2))
        self._queries = 0

    @property
    def classes(self) -> NDArray[np.generic]:
        return self._classes

    @property
    def queries(self) -> int:
        return self._queries

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        self._queries += len(X)
        out = np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)
        if out.ndim == 2:
            return out
        return np.column_stack([1.0 - out, out])


@dataclass(frozen=True)
class LightGBMFitter:
    """Trains a booster with the target's saved parameters and number of iterations on a reference half."""

    params: str  # JSON, so the fitter pickles and hashes plainly
    rounds: int
    description: str
    key: str
    kind = "lightgbm"

    def fit_score(self, X: NDArray[np.float64], y: NDArray[np.int64], mask: NDArray[np.bool_], seed: int,
                  n_classes: int) -> NDArray[np.float64]:
        lgb = _lgb()
        params = {**json.loads(self.params), "seed": seed, "deterministic": True, "num_threads": 1, "verbosity": -1}
        booster = lgb.train(params, lgb.Dataset(X[mask], label=y[mask], params=params), num_boost_round=self.rounds)
        return LightGBMTarget(booster).predict(X)


def from_booster(booster: Any, *, path: str | None = None, sha256: str | None = None) -> LoadedModel:
    target = LightGBMTarget(booster, path or "model")
    lgb = _lgb()
    params = {k: v for k, v in booster.params.items() if k not in _DROP}
    rounds = int(booster.current_iteration())
    text = json.dumps(params, sort_keys=True, default=str)
    key = hashlib.sha256(f"{text}|{rounds}|{lgb.__version__}".encode()).hexdigest()
    desc = f"LightGBM {target.objective}, {rounds} iterations, the model file's parameters"
    return LoadedModel(target, "lightgbm", path, sha256=sha256, fitter=LightGBMFitter(text, rounds, desc, key))


@register_loader("lightgbm")
def load_lightgbm(spec: str, options: LoadOptions) -> LoadedModel | None:
    if not wants(spec, options, "lightgbm", (".txt",)):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    lgb = _lgb()
    try:
        booster = lgb.Booster(model_file=str(path))
    except lgb.basic.LightGBMError as exc:
        raise ModelLoadError(f"{spec}: LightGBM could not read the model ({exc})") from exc
    return from_booster(booster, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())
