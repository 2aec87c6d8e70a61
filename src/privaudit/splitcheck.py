"""Is the train/holdout split itself distinguishable without the model?

If a classifier on the features alone can tell train rows from holdout rows, or the same rows sit
in both files, then attack numbers measure the split (a distribution shift) rather than the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

AUC_LIMIT = 0.6
DUPLICATE_SHARE_LIMIT = 0.01
MAX_ROWS = 4_000  # enough to see a shift; the bench showed 10k rows x 5 folds cost 14 s per audit


@dataclass(frozen=True)
class SplitCheckResult:
    auc: float | None
    duplicates: int
    passed: bool
    message: str


def check_split(X_train: NDArray[np.float64], X_holdout: NDArray[np.float64], *, seed: int) -> SplitCheckResult:
    """Cross-validated AUC of a feature-only train-vs-holdout classifier, and cross-file duplicate rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    from privaudit import metrics
    from privaudit.data import duplicate_rows

    duplicates = duplicate_rows(X_train, X_holdout)
    rng = np.random.default_rng(seed)
    X = np.vstack([X_train, X_holdout])
    side = np.r_[np.ones(len(X_train), bool), np.zeros(len(X_holdout), bool)]
    if len(X) > MAX_ROWS:
        keep = rng.choice(len(X), MAX_ROWS, replace=False)
        X, side = X[keep], side[keep]
    auc: float | None = None
    if min(side.sum(), (~side).sum()) >= 10:
        folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        clf = HistGradientBoostingClassifier(max_iter=100, random_state=int(rng.integers(2**31 - 1)))
        # One OpenMP thread: gradient boosting slows down tenfold when its threads compete for busy cores.
        with threadpool_limits(limits=1, user_api="openmp"):
            proba = cross_val_predict(clf, X, side, cv=folds, method="predict_proba")[:, 1]
        auc = metrics.auc(proba, side)
    too_many_dupes = duplicates > DUPLICATE_SHARE_LIMIT * max(len(X_holdout), 1)
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
