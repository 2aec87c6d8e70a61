"""Stage 1: read the data, then load the model, and check that they fit each other."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.audit.config import AuditConfig, ModelConfig
from privaudit.data import (
    Dataset,
    check_features_for_model,
    check_missing,
    check_same_columns,
    dataset_sha256,
    has_real_names,
    load_data,
)
from privaudit.errors import DataError, QueryBudgetExceeded
from privaudit.models import LoadedModel, LoadOptions, as_target, load_model
from privaudit.textcolumns import FrameCodec, accepts_frames, encode_text, refuse_text, takes_text


@dataclass(frozen=True)
class Inputs:
    """Both files' records (numbers; text columns coded) and the loaded target."""

    train: Dataset  # members
    holdout: Dataset  # non-members
    loaded: LoadedModel
    codec: FrameCodec | None = None  # set when the model encodes text columns itself

    @property
    def n_train(self) -> int:
        return len(self.train.X)

    @property
    def n_total(self) -> int:
        return len(self.train.X) + len(self.holdout.X)

    @cached_property
    def is_member(self) -> NDArray[np.bool_]:
        return np.r_[np.ones(self.n_train, bool), np.zeros(len(self.holdout.X), bool)]

    @cached_property
    def train_sha256(self) -> str:
        return dataset_sha256(self.train)

    @cached_property
    def holdout_sha256(self) -> str:
        return dataset_sha256(self.holdout)

    @cached_property
    def pool(self) -> NDArray[np.float64]:
        """Both files' rows in one array, built only for what needs it (training, query-sending attacks)."""
        return np.vstack([self.train.X, self.holdout.X])


def load_inputs(cfg: AuditConfig) -> Inputs:
    """The data first: its errors are found in seconds, while a model may take long to load."""
    tr = load_data(cfg.data.train, label=cfg.data.label, name="train", allow_text=True)
    ho = load_data(cfg.data.holdout, label=cfg.data.label, name="holdout", allow_text=True)
    check_same_columns(tr, ho)
    for ds in (tr, ho):  # the verdict and the epsilon bounds judge on a part of each group kept aside
        if len(ds.X) < 2:
            raise DataError(f"{ds.source}: {len(ds.X)} record(s); an audit needs at least 2 in each of "
                            "train and holdout (and about 500 holdout records for a verdict at 1 % FPR)")
    loaded = _load(cfg.model)
    tr, ho, codec = _text_columns(tr, ho, loaded)
    _check_fit(tr, ho, loaded)
    budget = cfg.model.http.get("max_queries")
    n_total = len(tr.X) + len(ho.X)
    if budget is not None and n_total > int(budget):  # refuse before the first query, not halfway through
        raise QueryBudgetExceeded(f"--max-queries {int(budget)} is below the {n_total} records the audit must query "
                                  "once each; raise --max-queries or audit fewer records")
    return Inputs(tr, ho, loaded, codec)


def _load(model: ModelConfig) -> LoadedModel:
    options = LoadOptions(allow_pickle=model.allow_pickle, trust=tuple(model.trust), http=dict(model.http),
                          model=model.options)
    if isinstance(model.source, (str, Path)):
        return load_model(str(model.source), options)
    return as_target(model.source, options.model)


def _text_columns(tr: Dataset, ho: Dataset, loaded: LoadedModel) -> tuple[Dataset, Dataset, FrameCodec | None]:
    """Only a model that encodes text itself (a Pipeline with named columns) takes text columns."""
    if not (tr.text or ho.text):
        return tr, ho, None
    if not (accepts_frames(loaded.estimator) and hasattr(loaded.target, "use_codec")):
        refuse_text(tr, ho)
    coded_tr, coded_ho, codec = encode_text(tr, ho)
    # Named columns, but no encoder inside, or numbers with a stray word: the model must read every value.
    if codec is None or not takes_text(loaded.estimator, codec.frame(codec.probe(coded_tr.X[0]))):
        refuse_text(tr, ho)
    loaded.target.use_codec(codec)  # type: ignore[attr-defined]
    return coded_tr, coded_ho, codec


def _check_fit(tr: Dataset, ho: Dataset, loaded: LoadedModel) -> None:
    est = loaded.estimator
    if est is not None:
        names = getattr(est, "feature_names_in_", None)
        check_features_for_model(tr, n_features=getattr(est, "n_features_in_", None),
                                 feature_names=list(names) if names is not None and has_real_names(tr) else None)
    for ds in (tr, ho):
        check_missing(ds, allow_nan=est is not None and _allows_nan(est))


def _allows_nan(estimator: Any) -> bool:
    try:
        return bool(estimator.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return False
