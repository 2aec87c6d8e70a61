"""Bundled demo data and synthetic benchmark generators. Nothing here downloads anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Split:
    X_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    X_holdout: NDArray[np.float64]
    y_holdout: NDArray[np.int64]
    feature_names: tuple[str, ...]
    label_name: str


def breast_cancer(seed: int = 0) -> Split:
    """scikit-learn's bundled Wisconsin breast-cancer data, split in half (members / non-members)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    ds = load_breast_cancer()
    Xtr, Xho, ytr, yho = train_test_split(ds.data, ds.target, test_size=0.5, stratify=ds.target, random_state=seed)
    names = tuple(str(n).replace(" ", "_") for n in ds.feature_names)
    return Split(Xtr, ytr.astype(np.int64), Xho, yho.astype(np.int64), names, "diagnosis")


def purchase_like(n_records: int = 20_000, *, n_features: int = 600, n_classes: int = 100, flip: float = 0.25,
                  seed: int = 0) -> Split:
    """A Purchase-100-like task: binary features, many classes, each class a noisy copy of a prototype.

    Half the records are members (train), half non-members (holdout). With enough bit-flip noise an
    MLP cannot generalise well and memorises its training records, as on the real Purchase-100.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, n_features)) < 0.5
    y = rng.integers(n_classes, size=n_records)
    flips = rng.random((n_records, n_features)) < flip
    X = np.logical_xor(prototypes[y], flips).astype(np.float64)
    half = n_records // 2
    names = tuple(f"item_{i}" for i in range(n_features))
    return Split(X[:half], y[:half].astype(np.int64), X[half:], y[half:].astype(np.int64), names, "cluster")


def overfit_model(seed: int = 0) -> Any:
    """The demo's target: an unregularised MLP that fits its training half perfectly."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-6, max_iter=600,
                                                         random_state=seed))
