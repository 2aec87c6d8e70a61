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
    model: ModelOptions = field(default_factory=lambda: ModelOptions())


@dataclass(frozen=True)
class ModelOptions:
    """Format-specific settings: which adapter (``--model-format``), ONNX names, torch device and the
    built-in torch training loop for reference models."""

    format: str | None = None  # torch | torchscript | torch-export | onnx | xgboost | lightgbm | ...
    onnx_input: str | None = None
    onnx_output: str | None = None
    device: str | None = None  # None: the model's own device (files load on the CPU)
    ref_epochs: int = 30
    ref_lr: float = 1e-3
    ref_batch_size: int = 128
    ref_patience: int = 5  # epochs without improvement on the held-out part before stopping

    @classmethod
    def of(cls, value: ModelOptions | dict[str, Any] | None) -> ModelOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        return cls(**{k: v for k, v in dict(value).items() if v is not None})  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadedModel:
    """A loaded target plus what the report needs to know about where it came from."""

    target: Target
    format: str
    path: str | None
    estimator: Any = None  # the fitted estimator when there is one (lets reference models clone it)
    sha256: str | None = None
    # Trains reference models the way this format is trained (a picklable object with
    # ``fit_score(X, y, mask, seed, n_classes) -> (n, C) probabilities`` and ``description``/``key``);
    # None falls back to cloning ``estimator`` or to the surrogate.
    fitter: Any = None


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
    if opts.model.format is not None and opts.model.format not in FORMATS:
        raise ModelLoadError(f"--model-format {opts.model.format}: unknown; choose from {', '.join(FORMATS)}")
    raise ModelLoadError(
        f"{spec}: not a model privaudit can load; give a .skops file (or .joblib/.pkl with --allow-pickle), "
        ".pt/.pth (TorchScript), .pt2 (torch.export), .onnx, .ubj (XGBoost), .txt (LightGBM), an http(s):// "
        "endpoint, or module:attribute for a Python callable; name the format with --model-format if the "
        "extension does not"
    )


# Values of --model-format; each adapter answers to its own.
FORMATS = ("skops", "pickle", "torchscript", "torch-export", "torch-pickle", "onnx", "xgboost", "lightgbm")


def wants(spec: str, options: LoadOptions, fmt: str, suffixes: tuple[str, ...]) -> bool:
    """True when ``spec`` is for adapter ``fmt``: named by --model-format, else by its extension."""
    if options.model.format is not None:
        return options.model.format == fmt
    return spec.lower().endswith(suffixes)


def as_target(model: Any, options: ModelOptions | None = None) -> LoadedModel:
    """Wrap an in-memory model: a ``Target``, a scikit-learn-style classifier, or a callable."""
    _import_adapters()
    from privaudit.models.pycallable import CallableTarget
    from privaudit.models.sklearn import SklearnTarget, is_sklearn_like

    if is_sklearn_like(model):
        return LoadedModel(SklearnTarget(model), "sklearn", None, estimator=model)
    import sys

    torch = sys.modules.get("torch")  # a torch module can only exist if torch is already imported
    if torch is not None and isinstance(model, torch.nn.Module):
        from privaudit.models.torch import from_module

        return from_module(model, options or ModelOptions())
    lib = type(model).__module__.split(".")[0]
    if type(model).__name__ == "Booster" and lib == "xgboost":
        from privaudit.models import xgboost as xgb_adapter

        return xgb_adapter.from_booster(model)
    if type(model).__name__ == "Booster" and lib == "lightgbm":
        from privaudit.models import lightgbm as lgb_adapter

        return lgb_adapter.from_booster(model)
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
    from privaudit.models import torch as _torch  # noqa: F401
    from privaudit.models import onnx as _onnx  # noqa: F401
    from privaudit.models import xgboost as _xgb  # noqa: F401
    from privaudit.models import lightgbm as _lgb  # noqa: F401
