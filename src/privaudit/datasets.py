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


# Column order of warfarin_like(); the sensitive genotype sits in the middle on purpose, so code that
# assumes "the sensitive column is the last one" fails loudly in tests.
WARFARIN_FEATURES: tuple[str, ...] = ("age", "height_cm", "weight_kg", "ancestry", "vkorc1", "female", "amiodarone",
                                      "enzyme_inducer")
WARFARIN_SENSITIVE = 4


def warfarin_like(n_records: int = 4000, *, seed: int = 0, label_depends_on_sensitive: bool = True,
                  ) -> tuple[NDArray[np.float64], NDArray[np.int64], tuple[str, ...], int]:
    """A synthetic dosing table modelled loosely on the IWPC warfarin cohort of Fredrikson et al. 2014.

    Returns ``(X, y, feature_names, sensitive_index)``. The sensitive column ``vkorc1`` is a
    genotype coded 0 (G/G, about half of the records), 1 (A/G) and 2 (A/A, about one in eight).
    ``y`` is a weekly-dose category (0 low, 1 medium, 2 high) obtained by thresholding a
    square-root dose that falls sharply with each A allele, so the genotype drives the label. The
    other columns are ordinary numeric covariates; only ``ancestry`` shifts the genotype frequencies,
    and only a little, so the genotype is hard to guess without the label or the model.

    With ``label_depends_on_sensitive=False`` the genotype's effect on the dose is removed (the
    genotype column is generated exactly as before): a model of that table has nothing to reveal
    about the genotype beyond what ``ancestry`` already says.
    """
    if n_records < 1:
        raise ValueError(f"n_records must be >= 1, got {n_records}")
    rng = np.random.default_rng(seed)
    n = n_records
    ancestry = rng.choice(3, size=n, p=[0.55, 0.30, 0.15])
    # Genotype frequencies per ancestry group: the groups differ mildly, which is all the
    # information the non-sensitive columns hold about the genotype.
    freqs = np.array([[0.56, 0.34, 0.10], [0.46, 0.40, 0.14], [0.38, 0.44, 0.18]])
    u = rng.random(n)
    genotype = (u[:, None] > np.cumsum(freqs[ancestry], axis=1)[:, :2]).sum(axis=1)
    female = (rng.random(n) < 0.45).astype(np.float64)
    age = np.clip(rng.normal(60.0, 14.0, n), 18.0, 95.0).round()
    height = rng.normal(176.0 - 13.0 * female, 8.0).round(1)
    weight = np.clip(rng.normal(0.9 * (height - 100.0) + 8.0, 14.0), 40.0, 180.0).round(1)
    amiodarone = (rng.random(n) < 0.08).astype(np.float64)
    inducer = (rng.random(n) < 0.05).astype(np.float64)
    # Coefficients in the spirit of the IWPC pharmacogenetic dosing formula (square-root weekly dose).
    effect = np.array([0.0, 0.86, 1.63]) if label_depends_on_sensitive else np.zeros(3)
    sqrt_dose = (5.6 - 0.026 * age + 0.0087 * height + 0.0128 * weight - 0.1 * ancestry - effect[genotype]
                 - 0.55 * amiodarone + 1.18 * inducer + rng.normal(0.0, 0.4, n))
    dose = np.maximum(sqrt_dose, 0.0) ** 2
    # Cut-offs (mg/week) placed between the typical doses of the three genotypes, so that the
    # category follows the genotype most of the time while age, weight and chance still move it.
    y = np.digitize(dose, [27.0, 37.0]).astype(np.int64)
    X = np.column_stack([age, height, weight, ancestry, genotype, female, amiodarone, inducer]).astype(np.float64)
    return X, y, WARFARIN_FEATURES, WARFARIN_SENSITIVE
