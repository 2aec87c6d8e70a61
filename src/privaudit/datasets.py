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


READMISSION_FEATURES: tuple[str, ...] = (
    "age", "bmi", "systolic_bp", "diastolic_bp", "cholesterol", "hdl", "glucose", "hba1c", "creatinine",
    "heart_rate", "smoker", "diabetic", "prior_admissions", "length_of_stay", "medications", "discharged_home")


def readmission_like(n_records: int = 4000, *, seed: int = 0) -> Split:
    """A synthetic hospital table: 30-day readmission from 16 clinical measurements, split in half.

    The label depends on the measurements through a smooth risk score plus a large share of chance
    (as readmission does), so a flexible model that fits its training half exactly must memorise
    individual patients: the demo's overfit model leaks, and a regularised one need not.
    """
    if n_records < 4:
        raise ValueError(f"n_records must be >= 4, got {n_records}")
    rng = np.random.default_rng(seed)
    n = n_records
    age = np.clip(rng.normal(64.0, 15.0, n), 18.0, 99.0).round()
    bmi = np.clip(rng.normal(28.0, 5.5, n), 15.0, 60.0).round(1)
    systolic = np.clip(rng.normal(110.0 + 0.4 * age + 0.5 * (bmi - 28.0), 16.0), 80.0, 220.0).round()
    diastolic = np.clip(0.45 * systolic + rng.normal(22.0, 8.0, n), 40.0, 130.0).round()
    cholesterol = np.clip(rng.normal(195.0 + 0.3 * (age - 64.0), 38.0), 100.0, 400.0).round()
    hdl = np.clip(rng.normal(52.0 - 0.6 * (bmi - 28.0), 13.0), 15.0, 120.0).round()
    diabetic = (rng.random(n) < 0.12 + 0.012 * np.clip(bmi - 25.0, 0.0, None)).astype(np.float64)
    glucose = np.clip(rng.normal(98.0 + 55.0 * diabetic, 18.0 + 20.0 * diabetic), 55.0, 400.0).round()
    hba1c = np.clip(4.2 + 0.016 * glucose + rng.normal(0.0, 0.45, n), 4.0, 14.0).round(1)
    creatinine = np.clip(rng.lognormal(np.log(0.8 + 0.006 * (age - 40.0)), 0.3), 0.3, 8.0).round(2)
    heart_rate = np.clip(rng.normal(76.0, 12.0, n), 40.0, 150.0).round()
    smoker = (rng.random(n) < 0.2).astype(np.float64)
    prior = rng.poisson(0.4 + 0.02 * np.clip(age - 50.0, 0.0, None) + 0.5 * diabetic).astype(np.float64)
    stay = np.clip(rng.gamma(2.0, 2.0 + 0.03 * (age - 40.0)), 1.0, 60.0).round()
    medications = rng.poisson(3.0 + 0.05 * (age - 40.0) + 2.0 * diabetic).astype(np.float64)
    home = (rng.random(n) < 0.85 - 0.004 * np.clip(age - 60.0, 0.0, None)).astype(np.float64)
    risk = (0.025 * (age - 64.0) + 0.45 * prior + 0.06 * (stay - 4.0) + 0.5 * diabetic * (hba1c > 7.5)
            + 0.6 * (creatinine - 1.0) + 0.015 * (systolic - 135.0) + 0.3 * smoker - 0.5 * home
            + 0.08 * (medications - 5.0) + 0.02 * (heart_rate - 76.0) - 0.6)
    y = (risk + rng.logistic(0.0, 1.0, n) > 0).astype(np.int64)
    X = np.column_stack([age, bmi, systolic, diastolic, cholesterol, hdl, glucose, hba1c, creatinine, heart_rate,
                         smoker, diabetic, prior, stay, medications, home]).astype(np.float64)
    half = n // 2
    return Split(X[:half], y[:half], X[half:], y[half:], READMISSION_FEATURES, "readmitted_30d")


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
    """The demo's leaky target: a wide MLP with no weight decay, trained until it fits every record."""
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


def regularised_model(seed: int = 0) -> Any:
    """The demo's private-enough counterpart: a strongly regularised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000, random_state=seed))
