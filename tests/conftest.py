"""Shared targets with known answers: a model that memorised its training half, and one that never
saw the audited records."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from privaudit import datasets

ALL_ATTACKS = ["loss", "shadow", "lira_online", "lira_offline", "rmia_online", "rmia_offline", "ensemble_online", "label_only"]


def require_program(*names: str, package: str) -> str:
    """The first of ``names`` on PATH. A missing program fails the test, never skips it: the README's
    test command installs every one (scripts/test-deps), so a missing one is a broken setup."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} is not on PATH; install it with scripts/test-deps (apt-get install -y {package})")


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


@dataclass
class Run:
    """One call of the command line: its exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    """Call ``cli.main(argv)`` in-process; a normal return counts as exit code 0."""
    from privaudit import cli

    def call(*argv: Any) -> Run:
        capsys.readouterr()  # drop anything printed before this run
        code: Any = 0
        try:
            cli.main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return Run(0 if code is None else int(code), out, err)

    return call


def write_breast_cancer(directory: Any, label: str) -> tuple[Any, Any, Any]:
    """Write the bundled breast-cancer halves as train.csv / holdout.csv with a ``label`` column.

    Returns the two paths and the train DataFrame as read back from its file (what a model fitted on
    the CSV sees, column names included).
    """
    import pandas as pd

    s = datasets.breast_cancer(seed=0)
    for part, X, y in (("train", s.X_train, s.y_train), ("holdout", s.X_holdout, s.y_holdout)):
        df = pd.DataFrame(X, columns=list(s.feature_names))
        df[label] = y
        df.to_csv(directory / f"{part}.csv", index=False)
    return directory / "train.csv", directory / "holdout.csv", pd.read_csv(directory / "train.csv")


def write_readmission(directory: Any, label: str, n_records: int = 1200) -> tuple[Any, Any, Any]:
    """Write the bundled hospital table's halves as train.csv / holdout.csv, like write_breast_cancer.

    Its labels carry much chance, so a model that fits its training half exactly (a forest) leaks
    measurably at these sizes, while a logistic regression does not.
    """
    import pandas as pd

    s = datasets.readmission_like(n_records, seed=0)
    for part, X, y in (("train", s.X_train, s.y_train), ("holdout", s.X_holdout, s.y_holdout)):
        df = pd.DataFrame(X, columns=list(s.feature_names))
        df[label] = y
        df.to_csv(directory / f"{part}.csv", index=False)
    return directory / "train.csv", directory / "holdout.csv", pd.read_csv(directory / "train.csv")


@pytest.fixture
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No colours, no debug tracebacks: the output a CI log would show."""
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.delenv("PRIVAUDIT_DEBUG", raising=False)
