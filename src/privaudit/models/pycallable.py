"""A Python callable (``module:function`` or ``module:object.method``) returning class scores."""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ModelLoadError
from privaudit.models import LoadedModel, LoadOptions, register_loader

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class CallableTarget:
    """Wraps ``fn(X) -> scores``: an (n, C) array of probabilities/logits, or (n,) class indices."""

    def __init__(self, fn: Callable[[NDArray[np.float64]], Any], classes: Any = None) -> None:
        self.fn = fn
        owner = getattr(fn, "__self__", None)
        if classes is None:
            classes = getattr(fn, "classes", None) or getattr(owner, "classes_", None)
        self._classes = None if classes is None else np.asarray(classes)
        self._queries = 0

    @property
    def classes(self) -> NDArray[np.generic]:
        if self._classes is None:
            raise ModelLoadError("callable model: its classes are unknown until it has been queried once")
        return self._classes

    @property
    def queries(self) -> int:
        return self._queries

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        X = np.asarray(X, dtype=np.float64)
        self._queries += len(X)
        out = np.asarray(self.fn(X))
        if out.ndim == 2:
            if self._classes is None:
                self._classes = np.arange(out.shape[1])
            return out.astype(np.float64)
        if out.ndim == 1:
            if np.issubdtype(out.dtype, np.floating) and not np.all(out == np.round(out)):
                raise ModelLoadError("callable model returned one float per row; return class probabilities (n, C) or class indices")
            if self._classes is None:
                raise ModelLoadError("callable model returns labels only; give the function a `classes` attribute listing the classes")
            return np.searchsorted(self._classes, out).astype(np.int64)
        raise ModelLoadError(f"callable model returned an array of shape {out.shape}; expected (n, n_classes) or (n,)")


def resolve(spec: str) -> Any:
    module_name, _, attr_path = spec.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # let users point at modules in the working directory
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"{spec}: cannot import module '{module_name}' ({exc})") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ModelLoadError(f"{spec}: module '{module_name}' has no attribute '{attr_path}'") from exc
    return obj


@register_loader("callable")
def load_callable(spec: str, options: LoadOptions) -> LoadedModel | None:
    if not _SPEC.match(spec) or spec.startswith(("http:", "https:")):
        return None
    obj = resolve(spec)
    from privaudit.models.sklearn import SklearnTarget, is_sklearn_like

    if is_sklearn_like(obj):
        return LoadedModel(SklearnTarget(obj, spec), "sklearn", spec, estimator=obj)
    if not callable(obj):
        raise ModelLoadError(f"{spec}: is not callable; point at a function returning class probabilities")
    return LoadedModel(CallableTarget(obj), "callable", spec)
