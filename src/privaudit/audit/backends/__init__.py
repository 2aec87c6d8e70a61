"""Where reference models are trained. Each module registers one backend with :func:`register_backend`.

A backend receives one :class:`TrainingJob` (the recipe, the pool, every model's training half and seed)
and the indices of the models to train, and yields ``(index, scores)`` as each model finishes, in any
order. It decides only *where* the work runs: what a model trains on and with which seed is fixed by
the job, so every backend gives the same numbers for the same seed. The caller writes each result into
the score cache as it arrives, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.errors import ConfigError, PrivauditError

# Module names under backends/; importing each registers its backend.
BACKEND_MODULES = ("local", "ray")
DEFAULT_BACKEND = "local"

# fit(recipe, X, y, mask, seed, n_classes) -> (n, C) probabilities of the trained model on all of X.
FitFn = Callable[[Any, NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_], int, int], NDArray[np.float64]]


class ReferenceTrainingError(PrivauditError):
    """A reference model could not be trained (the trainer or the worker failed)."""


@dataclass(frozen=True)
class TrainingJob:
    """Everything needed to train any of the K reference models; identical on every backend."""

    fit: FitFn  # a module-level function, so process and cluster workers can import it
    recipe: Any
    X: NDArray[np.float64]  # the pool: train rows then holdout rows
    y: NDArray[np.int64]
    masks: NDArray[np.bool_]  # (K, n): model k trains on X[masks[k]]
    seeds: tuple[int, ...]  # model k's seed
    n_classes: int


@dataclass(frozen=True)
class BackendOptions:
    """What the user chose: ``jobs`` models at once at most; Ray's address and per-model resources."""

    jobs: int | None = None
    address: str | None = None
    cpus: float | None = None
    gpus: float | None = None


class Backend(Protocol):
    name: str

    def run(self, job: TrainingJob, indices: Sequence[int]) -> Iterator[tuple[int, NDArray[np.float64]]]:
        """Train the models at ``indices``; yield ``(index, probabilities)`` as each one finishes."""
        ...


BackendFactory = Callable[[BackendOptions], Backend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def deco(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def registry() -> dict[str, BackendFactory]:
    for module in BACKEND_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def make_backend(name: str = DEFAULT_BACKEND, options: BackendOptions | None = None) -> Backend:
    """The backend called ``name``, checked against the options it was given."""
    known = registry()
    if name not in known:
        raise ConfigError(f"--backend {name}: unknown backend; choose from {', '.join(sorted(known))}")
    opts = options or BackendOptions()
    for flag, value in (("--ref-cpus", opts.cpus), ("--ref-gpus", opts.gpus)):
        if value is not None and value < 0:
            raise ConfigError(f"{flag} {value}: must be 0 or more")
    return known[name](opts)
