"""scikit-learn (and API-compatible) classifiers, loaded safely with skops or, if allowed, joblib."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ModelLoadError, UnsupportedModelError
from privaudit.models import LoadedModel, LoadOptions, register_loader, wants

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_sklearn_like(obj: Any) -> bool:
    return hasattr(obj, "fit") and (hasattr(obj, "predict_proba") or hasattr(obj, "predict")) and hasattr(obj, "get_params")


def check_classifier(est: Any, name: str) -> None:
    """Refuse regressors and other non-classifiers with a sentence the user can act on."""
    from sklearn.base import is_classifier, is_regressor

    if is_regressor(est) or not (is_classifier(est) or hasattr(est, "classes_")):
        raise UnsupportedModelError(
            f"{name}: {type(est).__name__} is not a classifier; privaudit audits classifiers "
            "(models with classes_ and predict_proba or predict)"
        )
    if not hasattr(est, "classes_"):
        raise UnsupportedModelError(f"{name}: {type(est).__name__} is not fitted (no classes_); fit it before auditing")


class SklearnTarget:
    """A fitted scikit-learn-style classifier, queried in-process."""

    def __init__(self, estimator: Any, name: str = "model") -> None:
        check_classifier(estimator, name)
        self.estimator = estimator
        self._queries = 0
        names = getattr(estimator, "feature_names_in_", None)
        self._feature_names = list(names) if names is not None else None
        self._codec: Any = None

    def use_codec(self, codec: Any) -> None:
        """Text columns arrive as codes; ``codec`` (a privaudit.textcolumns.FrameCodec) turns them back."""
        self._codec = codec

    @property
    def classes(self) -> NDArray[np.generic]:
        return np.asarray(self.estimator.classes_)

    @property
    def queries(self) -> int:
        return self._queries

    def _frame(self, X: NDArray[np.float64]) -> Any:
        if self._codec is not None:
            return self._codec.frame(X)
        if self._feature_names is None:
            return X
        import pandas as pd

        return pd.DataFrame(X, columns=self._feature_names)

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        X = np.asarray(X, dtype=np.float64)
        self._queries += len(X)
        data = self._frame(X)
        if hasattr(self.estimator, "predict_proba"):
            try:
                return np.asarray(self.estimator.predict_proba(data), dtype=np.float64)
            except AttributeError:
                pass  # e.g. SVC(probability=False) advertises predict_proba but refuses it
        if hasattr(self.estimator, "decision_function"):
            d = np.asarray(self.estimator.decision_function(data), dtype=np.float64)
            if d.ndim == 1:  # binary: the score is the logit of class 1 against class 0
                d = np.column_stack([np.zeros_like(d), d])
            return d
        labels = np.asarray(self.estimator.predict(data))
        return np.searchsorted(self.classes, labels).astype(np.int64)


@register_loader("skops")
def load_skops(spec: str, options: LoadOptions) -> LoadedModel | None:
    path = Path(spec)
    if not wants(spec, options, "skops", (".skops",)):
        return None
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises several types for corrupt archives
        raise ModelLoadError(f"{spec}: not a readable skops file ({exc})") from exc
    refused = sorted(set(untrusted) - set(options.trust))
    if refused:
        raise ModelLoadError(
            f"{spec}: refusing to load types skops does not trust by default: {', '.join(refused)}; "
            "if you trust this file, pass --trust for each (e.g. --trust " + refused[0] + ")"
        )
    try:
        est = sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise ModelLoadError(f"{spec}: skops could not load the model ({exc})") from exc
    return LoadedModel(SklearnTarget(est, spec), "skops", str(path), estimator=est, sha256=file_sha256(path))


@register_loader("pickle")
def load_pickle(spec: str, options: LoadOptions) -> LoadedModel | None:
    path = Path(spec)
    if not wants(spec, options, "pickle", PICKLE_SUFFIXES):
        return None
    if not path.is_file():
        raise ModelLoadError(f"{spec}: no such model file")
    if not options.allow_pickle:
        raise ModelLoadError(
            f"{spec}: refusing to unpickle; loading a pickle/joblib file runs any code inside it. "
            "If you trust its source pass --allow-pickle, or convert it once with "
            "`python -c \"import joblib, skops.io as s; s.dump(joblib.load('" + path.name + "'), 'model.skops')\"`"
        )
    import joblib

    try:
        est = joblib.load(path)
    except Exception as exc:
        raise ModelLoadError(f"{spec}: could not unpickle the model ({exc})") from exc
    return LoadedModel(SklearnTarget(est, spec), "pickle", str(path), estimator=est, sha256=file_sha256(path))
