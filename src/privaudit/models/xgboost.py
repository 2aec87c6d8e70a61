"""XGBoost native boosters (``.ubj``; ``.json`` with ``--model-format xgboost``), loaded without pickle.

Reference models are boosters trained with the same parameters and number of rounds. XGBoost's model
file keeps the objective, the number of classes and the trees but not the training parameters
(learning rate, subsampling, ...): privaudit takes them from ``<model>.config.json`` beside the model
when it exists (what ``booster.save_config()`` writes), else from the file alone -- objective, rounds,
and the deepest tree as ``max_depth`` -- with XGBoost's defaults for the rest, and says so.
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
from privaudit.target import softmax

# Sections of save_config() that hold training parameters (the rest describe the fitted model).
_PARAM_SECTIONS = (("gradient_booster", "tree_train_param"), ("gradient_booster", "gbtree_train_param"),
                   ("learner_train_param",))
_NOT_PARAMS = {"process_type", "updater_seq", "refresh_leaf", "disable_default_eval_metric"}


def _xgb() -> Any:
    try:
        import xgboost
    except ModuleNotFoundError as exc:
        raise ModelLoadError("XGBoost models need xgboost: pip install 'privaudit[xgboost]'") from exc
    return xgboost


def _objective(booster: Any) -> tuple[str, int]:
    learner = json.loads(booster.save_config())["learner"]
    name = learner["learner_train_param"]["objective"]
    n_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
    return name, n_class


class XGBoostTarget:
    """A native booster: (n, C) probabilities (softprob, binary:logistic), margins (logitraw) or labels (softmax)."""

    def __init__(self, booster: Any, name: str = "model") -> None:
        self.booster = booster
        self.objective, n_class = _objective(booster)
        if not self.objective.startswith(("binary:", "multi:")):
            raise UnsupportedModelError(f"{name}: XGBoost objective {self.objective} is not a classification "
                                        "objective; privaudit audits classifiers (binary:* or multi:*)")
        self._classes = np.arange(max(n_class, 2))
        self._queries = 0

    @property
    def classes(self) -> NDArray[np.generic]:
        return self._classes

    @property
    def queries(self) -> int:
        return self._queries

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        xgb = _xgb()
        X = np.asarray(X, dtype=np.float64)
        self._queries += len(X)
        out = np.asarray(self.booster.predict(xgb.DMatrix(X)), dtype=np.float64)
        if self.objective == "multi:softmax":
            return out.astype(np.int64)
        if self.objective.startswith("multi:"):
            return out.reshape(len(X), -1)
        if self.objective == "binary:hinge":
            return out.astype(np.int64)
        s = out.reshape(len(X))
        if self.objective == "binary:logitraw":
            return np.column_stack([np.zeros_like(s), s])
        return np.column_stack([1.0 - s, s])


def _max_depth(booster: Any) -> int:
    def depth(node: dict[str, Any]) -> int:
        kids = node.get("children") or []
        return 1 + max(depth(k) for k in kids) if kids else 0

    return max((depth(json.loads(t)) for t in booster.get_dump(dump_format="json")), default=0)


def training_params(booster: Any, sidecar: Path | None) -> tuple[dict[str, Any], str]:
    """(parameters for xgboost.train, where they came from)."""
    objective, n_class = _objective(booster)
    params: dict[str, Any] = {"objective": objective}
    if n_class:
        params["num_class"] = n_class
    if sidecar is not None and sidecar.is_file():
        try:
            learner = json.loads(sidecar.read_text())["learner"]
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{sidecar}: not a booster.save_config() file ({exc})") from exc
        for path in _PARAM_SECTIONS:
            section: Any = learner
            for key in path:
                section = section.get(key, {})
            params.update({k: v for k, v in section.items() if isinstance(v, str) and k not in _NOT_PARAMS})
        params.pop("updater", None)  # chosen by tree_method
        return params, f"parameters from {sidecar.name}"
    params["max_depth"] = max(1, _max_depth(booster))
    return params, "objective, rounds and max_depth from the model file, XGBoost defaults for the rest"


@dataclass(frozen=True)
class XGBoostFitter:
    """Trains a booster with the target's parameters and number of rounds on a reference half."""

    params: tuple[tuple[str, Any], ...]
    rounds: int
    description: str
    key: str
    kind = "xgboost"

    def fit_score(self, X: NDArray[np.float64], y: NDArray[np.int64], mask: NDArray[np.bool_], seed: int,
                  n_classes: int) -> NDArray[np.float64]:
        xgb = _xgb()
        params = {**dict(self.params), "seed": seed, "nthread": 1}
        booster = xgb.train(params, xgb.DMatrix(X[mask], label=y[mask]), num_boost_round=self.rounds)
        out = XGBoostTarget(booster).predict(X)
        if out.ndim == 1:  # label-only objective: one-hot, as for any label-only reference model
            hot = np.zeros((len(X), n_classes))
            hot[np.arange(len(X)), out] = 1.0
            return hot

        scores = np.asarray(out, dtype=np.float64)
        return softmax(scores) if params["objective"] == "binary:logitraw" else scores


def from_booster(booster: Any, *, path: str | None = None, sha256: str | None = None,
                 sidecar: Path | None = None) -> LoadedModel:
    target = XGBoostTarget(booster, path or "model")
    params, source = training_params(booster, sidecar)
    rounds = booster.num_boosted_rounds()
    xgb = _xgb()
    key = hashlib.sha256(json.dumps([params, rounds, xgb.__version__], sort_keys=True, default=str).encode()).hexdigest()
    desc = f"XGBoost {params['objective']}, {rounds} rounds ({source})"
    fitter = XGBoostFitter(tuple(sorted(params.items())), rounds, desc, key)
    return LoadedModel(target, "xgboost", path, sha256=sha256, fitter=fitter)


@register_loader("xgboost")
def load_xgboost(spec: str, options: LoadOptions) -> LoadedModel | None:
    if not wants(spec, options, "xgboost", (".ubj",)):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    xgb = _xgb()
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except xgb.core.XGBoostError as exc:
        raise ModelLoadError(f"{spec}: XGBoost could not load the model ({str(exc).splitlines()[0]})") from exc
    sidecar = path.with_name(path.name.rsplit(".", 1)[0] + ".config.json")
    return from_booster(booster, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(), sidecar=sidecar)
