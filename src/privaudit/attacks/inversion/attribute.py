"""Attribute inference on tabular data (MITRE ATLAS AML.T0024.001, rule ATLAS-EXF-001).

The attacker knows a record's other features and its true label, can query the model, and wants
one sensitive column (a genotype, say). Fredrikson et al. (2014, "Privacy in pharmacogenetics")
score every candidate value ``v`` by ``p_model(true label | record with v) * prior(v)`` and keep
the best ("MAP with model"). The prior is what the attacker knows about the population, so it is
estimated from the holdout records, never from the training records.

An attack accuracy means nothing on its own: a rare genotype is easy to "infer" as the common one.
Every accuracy is therefore compared with the best baseline that never touches the model -- the
column's majority value, or imputation models (one linear, one of trees) predicting the column from
the other features and the label -- and reported separately for training and holdout records. The
difference between the two advantages (``leakage``) is what the model gives away about the records
it was trained on beyond what it teaches about the population.

Anything fitted on the holdout data (priors, majority value, imputation models) is cross-fitted
when it is used on holdout records: K folds, each holdout record scored by quantities estimated
without it (and without its exact duplicates), so the baselines are not inflated by memorisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from privaudit.errors import ConfigError, DataError
from privaudit.models import LoadedModel, as_target
from privaudit.target import OutputMode, Target, detect_output_mode, to_probabilities

__all__ = [
    "AttributeInferenceResult",
    "SetScores",
    "attribute_inference",
    "g_mean",
    "make_imputers",
    "mcc",
    "to_report_dict",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

MAX_CANDIDATES = 10  # above this many distinct values a column is treated as continuous and binned
N_FOLDS = 5
QUERY_CHUNK = 50_000  # rows per predict call: few calls, bounded memory
Method = Literal["auto", "marginal", "imputed"]
METHOD_NAMES = {"marginal": "map-marginal-prior", "imputed": "map-imputed-prior"}


@dataclass(frozen=True)
class SetScores:
    """How well the attack recovers the sensitive column on one set of records."""

    accuracy: float
    baseline_accuracy: float  # the best model-free baseline on the same records
    advantage: float  # accuracy - baseline_accuracy
    mcc: float
    g_mean: float
    baseline: str  # which baseline that was: "majority", "imputation-linear" or "imputation-trees"
    n_records: int
    wins: int = 0  # records the attack got right and the baseline wrong
    losses: int = 0  # records the baseline got right and the attack wrong (advantage = (wins - losses) / n)


@dataclass(frozen=True, eq=False)
class AttributeInferenceResult:
    """One attribute-inference run; ``train`` and ``holdout`` hold the scores per record set."""

    column: str
    column_index: int
    method: str
    queries: int
    seconds: float
    train: SetScores
    holdout: SetScores
    leakage: float  # train advantage - holdout advantage
    candidates: tuple[float, ...]
    binned: bool  # True when the column was continuous and candidates are quantile-bin medians
    output_mode: OutputMode
    # Accuracy of both attack variants on both sets, so callers can see which one is stronger.
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    # Per-record candidate indices (truth, attack guess); truth is -1 for a training value that no
    # candidate represents (a category the holdout data never showed).
    train_truth: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    train_guess: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    holdout_truth: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    holdout_guess: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))


# ---------------------------------------------------------------------------------------------
# Pure metrics


def mcc(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Matthews correlation (multi-class via sklearn); 0 when only one value occurs at all."""
    from sklearn.metrics import matthews_corrcoef

    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of one length, got {t.shape} and {p.shape}")
    # With a single value everywhere the correlation is undefined (and sklearn warns); no
    # information is conveyed, which is what 0 means.
    if np.unique(np.concatenate([t, p])).size < 2:
        return 0.0
    return float(matthews_corrcoef(t, p))


def g_mean(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Geometric mean of the per-class recalls over the classes present in ``y_true``.

    Unlike accuracy it collapses to 0 when a class is never recovered, which is the point: always
    guessing the common genotype scores high accuracy and a g-mean of 0.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1 or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-D arrays of one length, got {t.shape} and {p.shape}")
    recalls = [float(np.mean(p[t == c] == c)) for c in np.unique(t)]
    if min(recalls) == 0.0:
        return 0.0
    return float(np.exp(np.mean(np.log(recalls))))


def _scores(truth: IntArray, guess: IntArray, baselines: dict[str, IntArray]) -> SetScores:
    acc = float(np.mean(truth == guess))
    name, base = max(((k, float(np.mean(truth == v))) for k, v in baselines.items()), key=lambda kv: kv[1])
    hit, base_hit = truth == guess, truth == baselines[name]
    # A training value no candidate stands for (-1) counts as a miss in accuracy, but as a class of
    # its own it would have recall 0 by construction and zero the g-mean whatever the attack did.
    known = truth >= 0
    gm = g_mean(truth[known], guess[known]) if known.any() else 0.0
    return SetScores(acc, base, acc - base, mcc(truth, guess), gm, name, int(truth.size),
                     wins=int(np.sum(hit & ~base_hit)), losses=int(np.sum(base_hit & ~hit)))


# ---------------------------------------------------------------------------------------------
# Candidates and folds


def _candidates(values: FloatArray, given: ArrayLike | None) -> tuple[FloatArray, FloatArray | None]:
    """(candidate values, inner bin edges or None). Edges are set only for a binned column."""
    if given is not None:
        cand = np.unique(np.asarray(given, dtype=np.float64))
        if cand.size < 2 or not np.all(np.isfinite(cand)):
            raise ConfigError("candidate_values must hold at least two distinct finite values")
        return cand, None
    distinct = np.unique(values)
    if distinct.size <= MAX_CANDIDATES:
        return distinct, None
    # Continuous column: quantile bins of the holdout values, each represented by its median, so
    # every candidate is a value real records take and every bin holds a similar share of them.
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, MAX_CANDIDATES + 1)[1:-1]))
    bins = np.searchsorted(edges, values, side="right")
    used = np.unique(bins)
    cand = np.array([np.median(values[bins == b]) for b in used])
    return cand, edges[used[:-1]] if used.size > 1 else edges[:0]


def _truth(values: FloatArray, cand: FloatArray, edges: FloatArray | None, exact: bool) -> IntArray:
    """Index of the candidate each true value corresponds to (-1: none does)."""
    if edges is not None:
        return np.searchsorted(edges, values, side="right").astype(np.int64)
    nearest = np.abs(values[:, None] - cand[None, :]).argmin(axis=1).astype(np.int64)
    if exact:  # discrete column: a value the holdout never showed cannot be guessed right
        nearest[cand[nearest] != values] = -1
    return nearest


def _folds(X: FloatArray, y: IntArray, truth: IntArray, seed: int) -> list[tuple[IntArray, IntArray]]:
    """K-fold split of the holdout, stratified on the sensitive value when every value allows it.

    Identical records form one group so duplicates never sit on both sides of a split: a
    memorising imputer would otherwise "recall" a record from its copy.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

    rows = np.column_stack([X, y, truth])
    groups = np.unique(rows, axis=0, return_inverse=True)[1].ravel()
    n_groups = int(groups.max()) + 1
    k = min(N_FOLDS, n_groups)
    if k < 2:
        raise DataError("attribute inference needs at least two distinct holdout records to cross-fit its baselines")
    counts = np.bincount(truth[truth >= 0])
    stratify = counts[counts > 0].min() >= k
    splitter: Any
    if n_groups == len(rows) and stratify:  # no duplicates: the plain (and much faster) splitter
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    elif stratify:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    split = splitter.split(X, truth) if isinstance(splitter, StratifiedKFold) else splitter.split(X, truth, groups)
    return [(a.astype(np.int64), b.astype(np.int64)) for a, b in split]


# ---------------------------------------------------------------------------------------------
# Priors and imputation


def make_imputers(seed: int, n_records: int, smallest_class: int) -> dict[str, Any]:
    """The baseline's imputation models: one linear, one of trees.

    A single family can be a weak baseline on the wrong data (trees waste records on a near-linear
    table, a linear model misses interactions), and a weak baseline makes every attack look strong.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # Early stopping keeps the trees' probabilities from becoming overconfident (they also serve
    # as a prior); it needs a stratified validation split, so tiny tables (or ones where a value
    # is very rare) run a short fixed schedule instead.
    big = n_records >= 500 and smallest_class >= 10
    trees = HistGradientBoostingClassifier(max_iter=300 if big else 50, learning_rate=0.1, early_stopping=big,
                                           validation_fraction=0.2, n_iter_no_change=10, random_state=seed)
    return {"linear": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), "trees": trees}


def _smoothed_marginal(t: IntArray, n_cand: int) -> FloatArray:
    # Add-one smoothing: a candidate this sample never showed is unlikely, not impossible.
    counts = np.bincount(t[t >= 0], minlength=n_cand).astype(np.float64)
    return (counts + 1.0) / (counts.sum() + n_cand)


def _fit_proba(X_fit: FloatArray, t_fit: IntArray, X_pred: FloatArray, n_cand: int, seed: int) -> dict[str, FloatArray]:
    """Each imputer's probabilities over all candidates, whatever classes the fitting data held."""
    keep = t_fit >= 0
    X_fit, t_fit = X_fit[keep], t_fit[keep]
    present = np.unique(t_fit)
    out: dict[str, FloatArray] = {}
    smallest = int(np.bincount(t_fit)[present].min()) if present.size else 0
    for name, est in make_imputers(seed, len(t_fit), smallest).items():
        p = np.zeros((len(X_pred), n_cand))
        if present.size < 2:  # nothing to learn: everything is the one value seen
            p[:, present] = 1.0
        else:
            est.fit(X_fit, t_fit)
            p[:, np.asarray(est.classes_, dtype=np.int64)] = est.predict_proba(X_pred)
        # Mixing in the smoothed marginal keeps a zero from vetoing a candidate in the product.
        out[name] = 0.99 * p + 0.01 * _smoothed_marginal(t_fit, n_cand)[None, :]
    return out


def _model_free(other_tr: FloatArray, other_ho: FloatArray, ytr_1h: FloatArray, yho_1h: FloatArray, t_ho: IntArray,
                folds: list[tuple[IntArray, IntArray]], n_cand: int, seed: int) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Everything the attacker estimates from holdout data, as (train rows, holdout rows) matrices.

    ``marginal``: smoothed value frequencies. ``features/<imputer>``: imputation from the other
    features only (the prior of the stronger attack, which must not see the label the model is
    asked about). ``imputation/<imputer>``: from the other features and the label (the baselines).
    Holdout rows always come from the folds that do not contain them.
    """
    from threadpoolctl import threadpool_limits

    inputs = {"features": (other_tr, other_ho),
              "imputation": (np.hstack([other_tr, ytr_1h]), np.hstack([other_ho, yho_1h]))}
    n_tr, n_ho = len(other_tr), len(t_ho)
    out: dict[str, tuple[FloatArray, FloatArray]] = {
        "marginal": (np.tile(_smoothed_marginal(t_ho, n_cand), (n_tr, 1)), np.zeros((n_ho, n_cand)))}
    # Small fits on many threads spend their time synchronising (badly so on a busy machine).
    with threadpool_limits(limits=1):
        for kind, (a_tr, a_ho) in inputs.items():
            for name, p in _fit_proba(a_ho, t_ho, a_tr, n_cand, seed).items():
                out[f"{kind}/{name}"] = (p, np.zeros((n_ho, n_cand)))
        for fold, (fit_idx, score_idx) in enumerate(folds):
            out["marginal"][1][score_idx] = _smoothed_marginal(t_ho[fit_idx], n_cand)
            for kind, (_, a_ho) in inputs.items():
                probs = _fit_proba(a_ho[fit_idx], t_ho[fit_idx], a_ho[score_idx], n_cand, seed + 1 + fold)
                for name, p in probs.items():
                    out[f"{kind}/{name}"][1][score_idx] = p
    return out


# ---------------------------------------------------------------------------------------------
# Querying the target


def _resolve(target: Any) -> Target:
    if isinstance(target, LoadedModel):
        return target.target
    kind = type(target)
    # Checked on the type: an HTTP target that has not answered yet cannot name its classes.
    if callable(getattr(kind, "predict", None)) and hasattr(kind, "queries") and hasattr(kind, "classes"):
        return target  # type: ignore[no-any-return]
    return as_target(target).target


def _query(tgt: Target, X: FloatArray, column: int, cand: FloatArray) -> NDArray[Any]:
    """The model's answers for every record with every candidate substituted; record i with
    candidate j is row ``i * len(cand) + j``. Probes are built chunk by chunk so memory stays
    bounded by ``QUERY_CHUNK`` rows whatever the table size."""
    k = len(cand)
    per_chunk = max(1, QUERY_CHUNK // k)
    parts = []
    for start in range(0, len(X), per_chunk):
        probes = np.repeat(X[start:start + per_chunk], k, axis=0)
        probes[:, column] = np.tile(cand, len(probes) // k)
        parts.append(np.asarray(tgt.predict(probes)))
    return np.concatenate(parts, axis=0)


def _class_index(tgt: Target, y: NDArray[Any], which: str) -> IntArray:
    classes = np.asarray(tgt.classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    idx = np.array([lookup.get(v, -1) for v in np.asarray(y).tolist()], dtype=np.int64)
    if np.any(idx < 0):
        bad = np.asarray(y)[idx < 0][:5].tolist()
        raise DataError(f"{which} labels {bad} are not among the model's classes {classes.tolist()[:10]}")
    return idx


def _likelihood(out: NDArray[Any], mode: OutputMode, y_idx: IntArray, k: int) -> FloatArray:
    """Per record and candidate: p_model(true label | record with the candidate), or, for a
    label-only model, whether its predicted label is the true one."""
    true = np.repeat(y_idx, k)
    if mode.kind == "label":
        lik = (out.astype(np.int64) == true).astype(np.float64)
    else:
        lik = np.nan_to_num(to_probabilities(out, mode)[np.arange(len(true)), true], nan=0.0)
    return lik.reshape(len(y_idx), k)


def _map(lik: FloatArray, prior: FloatArray) -> IntArray:
    score = lik * prior
    # When the model gives every candidate zero (label-only misses, rounded-away probabilities),
    # the attacker still has the prior.
    empty = score.max(axis=1) <= 0.0
    score[empty] = prior[empty]
    return score.argmax(axis=1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The attack


def attribute_inference(target: Any, X_train: ArrayLike, y_train: ArrayLike, X_holdout: ArrayLike,
                        y_holdout: ArrayLike, *, column: int, column_name: str, seed: int = 0,
                        candidate_values: ArrayLike | None = None, method: Method = "auto") -> AttributeInferenceResult:
    """Infer column ``column`` of every training and holdout record from the model's answers.

    ``target`` is a Target, a ``LoadedModel`` or an in-memory classifier. Candidates are the
    column's distinct holdout values, or the medians of up to ten quantile bins for a continuous
    column, unless ``candidate_values`` is given (true values then count as their nearest
    candidate). ``method``: ``"marginal"`` is Fredrikson et al.'s prior (value frequencies),
    ``"imputed"`` replaces it by an imputation model's p(value | other features); ``"auto"`` keeps
    whichever is more accurate on the holdout records (known to the attacker), ties going to the
    classic one. Queries: one per record and candidate, sent in a few batches.
    """
    clock = time.perf_counter()
    if method not in ("auto", "marginal", "imputed"):
        raise ConfigError(f"attribute-inference method {method!r} is not one of auto, marginal, imputed")
    Xtr, Xho = (np.array(a, dtype=np.float64, ndmin=2) for a in (X_train, X_holdout))
    ytr, yho = np.asarray(y_train), np.asarray(y_holdout)
    if Xtr.shape[1] != Xho.shape[1] or len(Xtr) != len(ytr) or len(Xho) != len(yho) or not len(Xtr) or not len(Xho):
        raise DataError(f"train ({Xtr.shape}, {len(ytr)} labels) and holdout ({Xho.shape}, {len(yho)} labels) must be "
                        "non-empty, with one label per record and the same columns")
    if not 0 <= column < Xtr.shape[1]:
        raise ConfigError(f"sensitive column index {column} is outside the {Xtr.shape[1]} feature columns")
    if not (np.all(np.isfinite(Xtr)) and np.all(np.isfinite(Xho))):
        raise DataError("attribute inference needs finite feature values; impute or drop the rows with missing values")
    tgt = _resolve(target)
    cand, edges = _candidates(Xho[:, column], candidate_values)
    if len(cand) < 2:
        raise DataError(f"column {column_name!r} takes a single value in the holdout data; there is nothing to infer")
    exact = candidate_values is None and edges is None
    t_tr, t_ho = _truth(Xtr[:, column], cand, edges, exact), _truth(Xho[:, column], cand, edges, exact)
    k = len(cand)

    queries_before = tgt.queries
    out = _query(tgt, np.vstack([Xtr, Xho]), column, cand)
    queries = tgt.queries - queries_before
    # Labels are mapped only now: an HTTP target learns its class list from its first answer.
    ytr_idx, yho_idx = _class_index(tgt, ytr, "training"), _class_index(tgt, yho, "holdout")
    n_classes = len(np.asarray(tgt.classes))
    mode = detect_output_mode(out, n_classes)
    if mode.kind != "label" and out.shape[1] != n_classes:
        raise DataError(f"the model answered {out.shape[1]} scores per record for {n_classes} classes")
    lik_all = _likelihood(out, mode, np.concatenate([ytr_idx, yho_idx]), k)
    lik_tr, lik_ho = lik_all[: len(Xtr)], lik_all[len(Xtr):]

    other_tr, other_ho = np.delete(Xtr, column, axis=1), np.delete(Xho, column, axis=1)
    eye = np.eye(n_classes)
    folds = _folds(other_ho, yho_idx, t_ho, seed)
    est = _model_free(other_tr, other_ho, eye[ytr_idx], eye[yho_idx], t_ho, folds, k, seed)

    # The stronger prior averages the imputers' p(value | other features): neither family is
    # reliably better, and averaging keeps the probabilities from being overconfident.
    feature_priors = [p for key, p in est.items() if key.startswith("features/")]
    imputed = [np.mean([p[i] for p in feature_priors], axis=0) for i in (0, 1)]
    guesses = {"marginal": (_map(lik_tr, est["marginal"][0]), _map(lik_ho, est["marginal"][1])),
               "imputed": (_map(lik_tr, imputed[0]), _map(lik_ho, imputed[1]))}
    variants = {METHOD_NAMES[m]: {"train_accuracy": float(np.mean(g[0] == t_tr)),
                                  "holdout_accuracy": float(np.mean(g[1] == t_ho))} for m, g in guesses.items()}
    if method == "auto":
        acc_m, acc_i = (variants[METHOD_NAMES[m]]["holdout_accuracy"] for m in ("marginal", "imputed"))
        method = "imputed" if acc_i > acc_m else "marginal"
    g_tr, g_ho = guesses[method]
    name = METHOD_NAMES[method] + (" (label-only)" if mode.kind == "label" else "")

    # Baselines never query the model: the majority value (argmax of the marginal) and both imputers.
    base_tr, base_ho = ({("majority" if key == "marginal" else key.replace("/", "-")): p[i].argmax(axis=1)
                         .astype(np.int64) for key, p in est.items() if not key.startswith("features/")}
                        for i in (0, 1))
    s_tr, s_ho = _scores(t_tr, g_tr, base_tr), _scores(t_ho, g_ho, base_ho)
    return AttributeInferenceResult(
        column=column_name, column_index=column, method=name, queries=int(queries),
        seconds=time.perf_counter() - clock, train=s_tr, holdout=s_ho, leakage=s_tr.advantage - s_ho.advantage,
        candidates=tuple(float(c) for c in cand), binned=edges is not None, output_mode=mode, variants=variants,
        train_truth=t_tr, train_guess=g_tr, holdout_truth=t_ho, holdout_guess=g_ho)


def to_report_dict(result: AttributeInferenceResult) -> dict[str, Any]:
    """The report's attribute-inference section (keys fixed; see the module docstring for meaning)."""

    def part(s: SetScores) -> dict[str, float]:
        return {"accuracy": float(s.accuracy), "baseline_accuracy": float(s.baseline_accuracy),
                "advantage": float(s.advantage), "mcc": float(s.mcc), "g_mean": float(s.g_mean),
                "records": int(s.n_records), "wins": int(s.wins), "losses": int(s.losses)}

    return {"column": result.column, "method": result.method, "queries": int(result.queries),
            "seconds": float(result.seconds), "train": part(result.train), "holdout": part(result.holdout),
            "leakage": float(result.leakage)}
