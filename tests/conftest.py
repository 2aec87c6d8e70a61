"""Shared targets with known answers: a model that memorised its training half, and one that never
saw the audited records."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from privaudit import datasets

ALL_ATTACKS = ["loss", "shadow", "lira_online", "lira_offline", "rmia_online", "rmia_offline", "label_only"]


@dataclass
class Case:
    model: Any
    train: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]


def _forest(seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=30, random_state=seed)


@pytest.fixture(scope="session")
def memorised() -> Case:
    """A random forest on noisy data: every training record is fitted to certainty, holdout is not."""
    s = datasets.purchase_like(1600, n_features=80, n_classes=8, flip=0.3, seed=1)
    model = _forest().fit(s.X_train, s.y_train)
    return Case(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout))


@pytest.fixture(scope="session")
def unseen() -> Case:
    """The same kind of model trained on other records: neither audited half was ever a member."""
    s = datasets.purchase_like(2400, n_features=80, n_classes=8, flip=0.3, seed=2)
    model = _forest().fit(s.X_holdout, s.y_holdout)
    half = len(s.X_train) // 2
    return Case(model, (s.X_train[:half], s.y_train[:half]), (s.X_train[half:], s.y_train[half:]))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never touch the user's real cache.
    monkeypatch.setenv("PRIVAUDIT_CACHE_DIR", str(tmp_path / "cache"))


def quiet_fit(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def forest_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A ``--trainer`` for black-box targets in tests: the same recipe the memorised target used."""
    return _forest(seed).fit(X, y)
