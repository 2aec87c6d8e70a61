"""The independent judge of inversion: would someone who knows the private data recognise the class?

The target cannot judge its own reconstructions -- gradient ascent finds inputs it is certain
about that look like nothing (adversarial examples). So a second classifier of a *different
model family*, trained on the private training data, labels each reconstruction; a different
inductive bias means it shares few of the target's blind spots.

Evaluator rule (:data:`EVALUATOR_RULE`):

* target is a kernel machine or nearest-neighbour model -> extremely randomised trees
  (axis-aligned splits, nothing like a distance kernel);
* any other target (neural network, linear model, tree ensemble, unknown black box) -> an RBF
  support vector machine with calibrated probabilities (smooth, distance-based, unlike all of them).

Features are scaled to [0, 1] by the same bounds the attack searched (pass them; the default is
the training data's per-column range, which is also the attack bounds privaudit derives), so the
judge measures in the attacker's units. Scaling by some other yardstick misleads it: dividing a
rarely-used pixel by its tiny training range turns faint ink there into a huge distance. Distances to the training records measure how close a reconstruction comes to a real
person's record; the yardstick is how close an unseen (holdout) record of the same class comes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from privaudit.attacks.inversion import InversionResult
from privaudit.ci.controls import parse_rates

EVALUATOR_RULE = {
    "kernel": "extra_trees",
    "neighbors": "extra_trees",
    "neural": "rbf_svm",
    "linear": "rbf_svm",
    "tree": "rbf_svm",
    "unknown": "rbf_svm",
}
_NEURAL = ("MLP", "Module", "Sequential", "Keras", "Torch", "Net")
_LINEAR = ("LogisticRegression", "SGDClassifier", "LinearSVC", "Ridge", "Perceptron", "PassiveAggressive",
           "LinearDiscriminant", "NaiveBayes", "GaussianNB", "MultinomialNB", "BernoulliNB")
_TREE = ("Forest", "Tree", "Boost", "XGB", "LGBM", "CatBoost")
_KERNEL = ("SVC", "NuSVC", "GaussianProcess")
_NEIGHBORS = ("KNeighbors", "RadiusNeighbors", "NearestCentroid")


def model_family(model: Any) -> str:
    """Coarse family of a classifier (neural, linear, tree, kernel, neighbors, unknown), by class name."""
    steps = getattr(model, "steps", None)
    name = type(steps[-1][1] if steps else model).__name__
    if name == "CalibratedClassifierCV":
        name = type(getattr(model, "estimator", None)).__name__
    for family, markers in (("linear", _LINEAR), ("kernel", _KERNEL), ("neighbors", _NEIGHBORS), ("tree", _TREE),
                            ("neural", _NEURAL)):
        if any(m in name for m in markers):
            return family
    return "unknown"


@dataclass(frozen=True, eq=False)
class Evaluator:
    """A fitted judge plus the scaling it was trained with."""

    model: Any
    kind: str  # rbf_svm | extra_trees
    target_family: str
    classes: NDArray[np.generic]
    lo: NDArray[np.float64]
    span: NDArray[np.float64]

    def _scale(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        return (np.asarray(X, dtype=np.float64) - self.lo) / self.span

    def predict_proba(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        with threadpool_limits(limits=1):
            return np.asarray(self.model.predict_proba(self._scale(X)), dtype=np.float64)

    def feature_distances(self, A: NDArray[np.float64], B: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """Distances between rows of A and B in the evaluator's own feature space.

        For the RBF SVM that is the kernel's implicit space, ``sqrt(2 - 2 k(a, b))``; for the trees,
        one minus the share of trees in which both records land in the same leaf.
        """
        a, b = self._scale(A), self._scale(B)
        if self.kind == "rbf_svm":
            gamma = float(self.model.calibrated_classifiers_[0].estimator._gamma)
            sq = np.maximum((a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)
            return np.asarray(np.sqrt(np.maximum(2.0 - 2.0 * np.exp(-gamma * sq), 0.0)), dtype=np.float64)
        with threadpool_limits(limits=1):
            la, lb = self.model.apply(a), self.model.apply(b)  # (n, n_trees) leaf indices
        same = (la[:, None, :] == lb[None, :, :]).mean(axis=2)
        return np.asarray(1.0 - same, dtype=np.float64)


def train_evaluator(X_train: NDArray[np.float64], y_train: NDArray[Any], *, target_family: str,
                    seed: int = 0, bounds: tuple[Any, Any] | None = None) -> Evaluator:
    """Fit the judge on the private training data, picking its family by :data:`EVALUATOR_RULE`.

    ``target_family`` is what :func:`model_family` says about the target ("unknown" for a black
    box); ``bounds`` should be the inversion's bounds (default: the training range per column).
    """
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train)
    family = target_family if target_family in EVALUATOR_RULE else "unknown"
    kind = EVALUATOR_RULE[family]
    if bounds is None:
        lo, hi = X.min(axis=0), X.max(axis=0)
    else:
        lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), X.shape[1:]).copy() for b in bounds)
    span = hi - lo
    span = np.where(span > 0, span, 1.0)  # constant columns: leave them at zero instead of dividing by it
    scaled = (X - lo) / span
    if kind == "rbf_svm":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        # Calibrated with cross-validation on one SVM fit (SVC(probability=True) is deprecated).
        n_min = int(np.min(np.unique(y, return_counts=True)[1]))
        model: Any = CalibratedClassifierCV(SVC(kernel="rbf", gamma="scale", random_state=seed),
                                            cv=max(2, min(5, n_min)), ensemble=False)
    else:
        from sklearn.ensemble import ExtraTreesClassifier

        model = ExtraTreesClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)
    with threadpool_limits(limits=1):  # small problems: on two cores, threads cost ten times the work
        model.fit(scaled, y)
    return Evaluator(model, kind, family, np.asarray(model.classes_), lo, span)


@dataclass(frozen=True)
class ClassScore:
    class_label: str
    evaluator_prediction: str
    evaluator_confidence: float
    queries: int
    nearest_train_distance: float
    holdout_reference_distance: float
    nearest_train_distance_feature: float | None = None
    holdout_reference_distance_feature: float | None = None

    @property
    def closer_than_holdout(self) -> bool:
        """The reconstruction sits nearer a training record than a typical unseen record does."""
        return self.nearest_train_distance < self.holdout_reference_distance


@dataclass(frozen=True)
class InversionScores:
    attack_accuracy: float | None
    attack_accuracy_top5: float | None
    chance: float
    classes: tuple[ClassScore, ...]
    image_shape: tuple[int, ...] | None = None


def _pairwise(A: NDArray[np.float64], B: NDArray[np.float64]) -> NDArray[np.float64]:
    sq = (A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2.0 * A @ B.T
    return np.asarray(np.sqrt(np.maximum(sq, 0.0)), dtype=np.float64)


def nearest_distance(points: NDArray[np.float64], records: NDArray[np.float64]) -> NDArray[np.float64]:
    """Euclidean distance from each point to its nearest record (NaN when there are no records)."""
    if len(records) == 0:
        return np.full(len(points), np.nan)
    return np.asarray(_pairwise(points, records).min(axis=1), dtype=np.float64)


def holdout_reference(holdout: NDArray[np.float64], train: NDArray[np.float64],
                      dist: Any = None) -> float:
    """Median distance from an unseen record of a class to its nearest training record of that class."""
    if len(holdout) == 0 or len(train) == 0:
        return math.nan
    d = (dist or _pairwise)(holdout, train).min(axis=1)
    return float(np.median(d))


def score(result: InversionResult, evaluator: Evaluator, X_train: NDArray[np.float64], y_train: NDArray[Any],
          X_holdout: NDArray[np.float64], y_holdout: NDArray[Any],
          image_shape: tuple[int, ...] | None = None) -> InversionScores:
    """Judge every reconstruction: does the evaluator name its class, and how close is it to a real record?

    Labels are matched by their string spelling, as the report prints them. Top-5 accuracy is
    only given for ten or more classes, where it is not trivially high.
    """
    Xtr, Xho = np.asarray(X_train, np.float64), np.asarray(X_holdout, np.float64)
    ytr, yho = np.asarray([str(v) for v in y_train]), np.asarray([str(v) for v in y_holdout])
    names = [str(c) for c in evaluator.classes.tolist()]
    chance = 1.0 / max(len(names), 1)
    if result.mode == "refused" or not result.classes:
        return InversionScores(None, None, chance, (), image_shape)
    if image_shape is not None and math.prod(image_shape) != Xtr.shape[1]:
        raise ValueError(f"image shape {image_shape} does not hold {Xtr.shape[1]} features")
    R = result.reconstructions
    proba = evaluator.predict_proba(R)
    order = np.argsort(-proba, axis=1, kind="stable")
    hits1, hits5, out = [], [], []
    for i, rec in enumerate(result.classes):
        top = [names[j] for j in order[i, :5]]
        hits1.append(top[0] == rec.class_label)
        hits5.append(rec.class_label in top)
        own_tr, own_ho = Xtr[ytr == rec.class_label], Xho[yho == rec.class_label]
        near_f = ref_f = None
        in_features = evaluator.feature_distances(R[i : i + 1], own_tr) if len(own_tr) else None
        if in_features is not None:
            near_f = float(np.min(in_features))
            ref_f = holdout_reference(own_ho, own_tr, evaluator.feature_distances)
        out.append(ClassScore(rec.class_label, top[0], float(proba[i, order[i, 0]]), rec.queries,
                              float(nearest_distance(R[i : i + 1], own_tr)[0]), holdout_reference(own_ho, own_tr),
                              near_f, ref_f))
    top5 = float(np.mean(hits5)) if len(names) >= 10 else None
    return InversionScores(float(np.mean(hits1)), top5, chance, tuple(out), image_shape)


def time_to_reconstruct(queries: int, limit_per_minute: float) -> float:
    """Seconds an attacker needs to send ``queries`` records through a rate limit of N per minute."""
    if not limit_per_minute > 0:
        raise ValueError("the query limit must be a positive number of records per minute")
    return 60.0 * float(queries) / float(limit_per_minute)


def seconds_at_limit(queries: int, limits: str | Sequence[tuple[int, float]]) -> float:
    """Earliest moment the last of ``queries`` records can be sent through moving-window rate limits.

    ``limits`` is a rate string as the guard reads it (``"20/second;120/minute;20000/day"``) or
    (records, window seconds) pairs. The attacker sends each record as soon as every window allows it: at most N_i records in any
    W_i seconds (the guard's moving windows), so record k goes at
    ``t_k = max(t_(k-1), max_i t_(k-N_i) + W_i)`` with ``t_0 = 0``. Network latency and the attack's
    own computing are ignored, which makes this a lower bound on the attacker's wall time. Unlike
    :func:`time_to_reconstruct` it lets the first window's quota go out at once and honours every
    window, so a daily cap far above a per-minute one still counts once the attack is long enough.
    """
    if isinstance(limits, str):

        rates = tuple((r.amount, float(r.window_seconds)) for r in parse_rates(limits))
    else:
        rates = tuple((int(n), float(w)) for n, w in limits)
    if not rates or any(n < 1 or not w > 0 for n, w in rates):
        raise ValueError("every query limit needs at least one record per window and a window longer than 0 s")
    q = int(queries)
    if q <= 1:
        return 0.0
    t = np.zeros(q)
    # Record k depends on records k - N_i only, so a block of min(N_i) records at a time is
    # computed from finished ones: O(queries / min N_i) numpy steps rather than one per record.
    block = min(n for n, _ in rates)
    for b in range(0, q, block):
        k = np.arange(b, min(b + block, q))
        ready = np.full(len(k), t[b - 1] if b else 0.0)
        for n, w in rates:
            j = k - n
            ok = j >= 0
            ready[ok] = np.maximum(ready[ok], t[j[ok]] + w)
        t[k] = np.maximum.accumulate(ready)
    return float(t[-1])
