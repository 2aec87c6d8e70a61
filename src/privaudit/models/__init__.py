"""Model adapters. Each turns one kind of model into a ``Target`` (numpy in, numpy out).

Adapters register a loader for a model *specification* (a path, URL or ``module:attr`` string)
with :func:`register_loader`; :func:`load_model` asks each in registration order. In-memory
objects go through :func:`as_target`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from privaudit.errors import ModelLoadError
from privaudit.target import Target


@dataclass(frozen=True)
class LoadOptions:
    """What the user allowed when loading: pickles, extra skops types, HTTP settings."""

    allow_pickle: bool = False
    trust: tuple[str, ...] = ()
    http: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded target plus what the report needs to know about where it came from."""

    target: Target
    format: str
    path: str | None
    estimator: Any = None  # the fitted estimator when there is one (lets reference models clone it)
    sha256: str | None = None


class Loader(Protocol):
    def __call__(self, spec: str, options: LoadOptions) -> LoadedModel | None: ...


_LOADERS: list[tuple[str, Loader]] = []


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Register a loader; it returns ``None`` when ``spec`` is not for it."""

    def deco(fn: Loader) -> Loader:
        _LOADERS.append((name, fn))
        return fn

    return deco


def load_model(spec: str, options: LoadOptions | None = None) -> LoadedModel:
    """Load a model from a file path, an HTTP(S) URL, or a ``module:attribute`` reference."""
    _import_adapters()
    opts = options or LoadOptions()
    for _name, loader in _LOADERS:
        loaded = loader(spec, opts)
        if loaded is not None:
            return loaded
    raise ModelLoadError(
        f"{spec}: not a model privaudit can load; give a .skops file (or .joblib/.pkl with "
        "--allow-pickle), an http(s):// endpoint, or module:attribute for a Python callable"
    )


def as_target(model: Any) -> LoadedModel:
    """Wrap an in-memory model: a ``Target``, a scikit-learn-style classifier, or a callable."""
    _import_adapters()
    from privaudit.models.pycallable import CallableTarget
    from privaudit.models.sklearn import SklearnTarget, is_sklearn_like

    if is_sklearn_like(model):
        return LoadedModel(SklearnTarget(model), "sklearn", None, estimator=model)
    if isinstance(model, Target):
        return LoadedModel(model, type(model).__name__, None)
    if callable(model):
        return LoadedModel(CallableTarget(model), "callable", None)
    raise ModelLoadError(
        f"{type(model).__name__}: not a model privaudit can audit; pass a classifier with "
        "predict_proba/predict, a callable returning class probabilities, or a Target"
    )


def _import_adapters() -> None:
    # Importing the adapter modules runs their @register_loader decorators.
    from privaudit.models import sklearn as _sk  # noqa: F401
    from privaudit.models import http as _http  # noqa: F401
    from privaudit.models import pycallable as _cb  # noqa: F401
