"""Stage 2: query the target once per record and read what kind of answers it gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.audit.stages.load import Inputs
from privaudit.data import encode_labels
from privaudit.models import LoadedModel
from privaudit.progress import Reporter
from privaudit.target import OutputMode, detect_output_mode

_PREDICT_CHUNK = 4096


@dataclass(frozen=True)
class AuditData:
    """The audit game: train rows (members) then holdout rows (non-members), labels encoded."""

    y: NDArray[np.int64]
    is_member: NDArray[np.bool_]
    n_train: int


@dataclass(frozen=True)
class Answers:
    """The target's outputs on every record, in the pool's order, and what they reveal."""

    outputs: NDArray[Any]
    classes: NDArray[Any]
    mode: OutputMode
    data: AuditData
    train_accuracy: float
    holdout_accuracy: float


def query_target(inputs: Inputs, ui: Reporter) -> Answers:
    loaded, tr, ho = inputs.loaded, inputs.train, inputs.holdout
    if hasattr(loaded.target, "use_data_classes"):  # label-only answers name classes found in the data
        loaded.target.use_data_classes(np.concatenate([np.asarray(tr.y, dtype=object), np.asarray(ho.y, dtype=object)]))
    if loaded.format == "http":
        ui.info(f"The audit sends {inputs.n_total} queries to the endpoint now, plus any a query-based attack announces.")
    outputs = _predict_all(loaded, (tr.X, ho.X), ui)
    classes = np.asarray(loaded.target.classes)
    y = np.concatenate([encode_labels(tr, classes), encode_labels(ho, classes)])
    data = AuditData(y, inputs.is_member, inputs.n_train)
    # Only a black box (an endpoint, a callable) can round; a local estimator is read as it is.
    mode = detect_output_mode(outputs, len(classes), may_round=loaded.estimator is None)
    ui.info(f"Target output mode: {mode.kind}" + (f", rounded to {mode.rounding} decimals" if mode.rounding is not None else "")
            + (f", top-{mode.k}" if mode.k else ""))
    labels_pred = outputs.astype(np.int64) if outputs.ndim == 1 else np.argmax(np.nan_to_num(outputs, nan=-np.inf), axis=1)
    member = data.is_member
    return Answers(outputs=outputs, classes=classes, mode=mode, data=data,
                   train_accuracy=metrics.accuracy(y[member], labels_pred[member]),
                   holdout_accuracy=metrics.accuracy(y[~member], labels_pred[~member]))


def _predict_all(loaded: LoadedModel, parts: Sequence[NDArray[np.float64]], reporter: Reporter) -> NDArray[Any]:
    """The target's outputs on the rows of every part in turn (train, then holdout), without stacking them."""
    chunks, done, total = [], 0, sum(len(p) for p in parts)
    for X in parts:
        for start in range(0, len(X), _PREDICT_CHUNK):
            chunks.append(np.asarray(loaded.target.predict(X[start:start + _PREDICT_CHUNK])))
            done += len(chunks[-1])
            reporter.progress("querying the target", done, total)
    return np.concatenate(chunks, axis=0)
