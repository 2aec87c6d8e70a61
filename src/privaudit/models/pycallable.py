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
from privaudit.models.sklearn import SklearnTarget, is_sklearn_like

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class CallableTarget:
    """Wraps ``fn(X) -> scores``: an (n, C) array of probabilities/logits, or (n,) class indices."""

    def __init__(self, fn: Callable[[NDArray[np.float64]], Any], classes: Any = None) -> None:
        self.fn = fn
        owner = getattr(fn, "__self__", None)
        for source in (getattr(fn, "classes", None), getattr(owner, "classes_", None)):
            if classes is None:
                classes = source  # any sequence, numpy arrays included (never judged by truthiness)
        self._classes = None if classes is None else np.asarray(list(classes))
        self._queries = 0
        self._data_classes: NDArray[Any] | None = None

    @property
    def classes(self) -> NDArray[np.generic]:
        if self._classes is None:
            raise ModelLoadError("callable model: its classes are unknown until it has been queried once")
        return self._classes

    def use_data_classes(self, labels: Any) -> None:
        """Without a ``classes`` attribute, label answers are looked up among the audited data's labels."""
        if self._classes is None:
            self._data_classes = np.asarray(sorted({_key(v): v for v in np.asarray(labels).tolist()}.values(), key=_key),
                                            dtype=object)

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
            if self._classes is None and self._data_classes is not None:
                self._classes = self._data_classes
            if self._classes is None:
                raise ModelLoadError("callable model returns labels only; give the function a `classes` attribute listing the classes")
            return self._indices(out)
        raise ModelLoadError(f"callable model returned an array of shape {out.shape}; expected (n, n_classes) or (n,)")


    def _indices(self, labels: NDArray[Any]) -> NDArray[np.int64]:
        assert self._classes is not None
        lookup = {_key(c): i for i, c in enumerate(self._classes.tolist())}
        out = np.fromiter((lookup.get(_key(v), -1) for v in labels.tolist()), dtype=np.int64, count=len(labels))
        if np.any(out < 0):
            unknown = labels[int(np.flatnonzero(out < 0)[0])]
            raise ModelLoadError(f"callable model returned label {unknown!r}, which is not in its classes "
                                 f"{self._classes.tolist()!r}; list every label it can return in `classes`")
        return out


def _key(value: Any) -> str:
    # 1, 1.0 and "1" name the same class, as they do in a CSV's label column.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def resolve(spec: str) -> Any:
    module_name, _, attr_path = spec.partition(":")
    # The working directory is searched first only while the user's module is imported: left there, a
    # file such as ./matplotlib.py would shadow the real package for the rest of the run.
    added = "" not in sys.path and "." not in sys.path
    if added:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"{spec}: cannot import module '{module_name}' ({exc})") from exc
    finally:
        if added and "" in sys.path:
            sys.path.remove("")  # only our entry; whatever the module itself added stays
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

    if is_sklearn_like(obj):
        return LoadedModel(SklearnTarget(obj, spec), "sklearn", spec, estimator=obj)
    if not callable(obj):
        raise ModelLoadError(f"{spec}: is not callable; point at a function returning class probabilities")
    return LoadedModel(CallableTarget(obj), "callable", spec)
