"""Is the train/holdout split itself distinguishable without the model?

If a classifier on the features alone can tell train rows from holdout rows, or the same rows sit
in both files, then attack numbers measure the split (a distribution shift) rather than the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.data import duplicate_rows
from privaudit.fileio import atomic_write_text

AUC_LIMIT = 0.6
DUPLICATE_SHARE_LIMIT = 0.01
MAX_ROWS = 4_000  # enough to see a shift; the bench showed 10k rows x 5 folds cost 14 s per audit
# Bump when the check's computation changes, so cached results of the old one are not reused.
_CHECK_VERSION = "3"


@dataclass(frozen=True)
class SplitCheckResult:
    auc: float | None
    duplicates: int
    passed: bool
    message: str


def _cache_path(cache_dir: Path, data_key: str, seed: int) -> Path:
    name = hashlib.sha256(f"split-check|{_CHECK_VERSION}|{MAX_ROWS}|{data_key}|{seed}".encode()).hexdigest()
    return cache_dir / f"split-{name}.json"


def _cached(path: Path | None) -> tuple[float | None, int] | None:
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text())
        auc, duplicates = entry["auc"], int(entry["duplicates"])
        return (None if auc is None else float(auc)), duplicates
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: computed again


def _store(path: Path | None, auc: float | None, duplicates: int) -> None:
    if path is None:
        return
    try:
        atomic_write_text(path, json.dumps({"auc": auc, "duplicates": duplicates}))
    except OSError:
        pass  # a read-only cache only costs the next run the same few seconds


def check_split(X_train: NDArray[np.float64], X_holdout: NDArray[np.float64], *, seed: int,
                cache_dir: Path | None = None, data_key: str | None = None) -> SplitCheckResult:
    """Cross-validated AUC of a feature-only train-vs-holdout classifier, and cross-file duplicate rows.

    With ``cache_dir`` and ``data_key`` (a hash identifying both datasets), the two numbers are kept on
    disk so re-running an audit on the same data does not repeat the check.
    """
    path = _cache_path(cache_dir, data_key, seed) if cache_dir is not None and data_key else None
    hit = _cached(path)
    if hit is not None:
        auc, duplicates = hit
    else:
        auc, duplicates = _measure(X_train, X_holdout, seed)
        _store(path, auc, duplicates)
    return _verdict(auc, duplicates, len(X_holdout))


def _measure(X_train: NDArray[np.float64], X_holdout: NDArray[np.float64], seed: int) -> tuple[float | None, int]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    duplicates = duplicate_rows(X_train, X_holdout)
    rng = np.random.default_rng(seed)
    n_train, n = len(X_train), len(X_train) + len(X_holdout)
    side = np.r_[np.ones(n_train, bool), np.zeros(len(X_holdout), bool)]
    # Rows are drawn before anything is copied: the sample, not both files, is what gets stacked.
    keep = rng.choice(n, MAX_ROWS, replace=False) if n > MAX_ROWS else np.arange(n)
    X = np.empty((len(keep), X_train.shape[1]), dtype=np.float64)
    from_train = keep < n_train
    X[from_train] = X_train[keep[from_train]]
    X[~from_train] = X_holdout[keep[~from_train] - n_train]
    side = side[keep]
    auc: float | None = None
    if min(side.sum(), (~side).sum()) >= 10:
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        # Early stopping on a validation share: with no shift to find (the usual case) boosting stops
        # after a dozen rounds instead of running all of them.
        # 64 bins per feature instead of 255: a shift big enough to matter does not hide between them.
        clf = HistGradientBoostingClassifier(max_iter=100, max_bins=64, early_stopping=len(X) >= 300,
                                             validation_fraction=0.15, n_iter_no_change=8,
                                             random_state=int(rng.integers(2**31 - 1)))
        # One OpenMP thread: gradient boosting slows down tenfold when its threads compete for busy cores.
        with threadpool_limits(limits=1, user_api="openmp"):
            proba = cross_val_predict(clf, X, side, cv=folds, method="predict_proba")[:, 1]
        auc = metrics.auc(proba, side)
    return auc, duplicates


def _verdict(auc: float | None, duplicates: int, n_holdout: int) -> SplitCheckResult:
    too_many_dupes = duplicates > DUPLICATE_SHARE_LIMIT * max(n_holdout, 1)
    separable = auc is not None and auc > AUC_LIMIT
    passed = not (too_many_dupes or separable)
    problems = []
    if separable:
        problems.append(f"a classifier on the features alone tells train from holdout (AUC {auc:.2f} > {AUC_LIMIT})")
    if too_many_dupes:
        problems.append(f"{duplicates} holdout rows also appear in train")
    if passed:
        message = "train and holdout look alike without the model" + (f" (feature-only AUC {auc:.2f})" if auc is not None else "")
    else:
        message = "; ".join(problems) + " -- attack numbers may measure the split, not the model"
    return SplitCheckResult(auc, duplicates, passed, message)
