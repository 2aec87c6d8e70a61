"""Text feature columns for models that encode text themselves (a Pipeline with a OneHotEncoder).

Everything after the data loader is numpy, so a text column travels as codes: the index of each value
among the column's distinct values in train and holdout together. Only at the model's edge does
:class:`FrameCodec` turn the codes back into the values as read, in a DataFrame with the original
column names, exactly what the model was fitted on. Reference models are cloned from the same
pipeline and fed the same frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from privaudit.data import Dataset
from privaudit.errors import DataError


def accepts_frames(estimator: Any) -> bool:
    """True for models fitted on named columns, which can take text columns as they are."""
    from sklearn.pipeline import Pipeline

    return estimator is not None and (hasattr(estimator, "feature_names_in_") or isinstance(estimator, Pipeline))


def _key(value: Any) -> tuple[str, str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ("", "")  # every kind of missing value is one category, sorted first
    return (type(value).__name__, str(value))


def _same_spelling(parts: dict[str, Any], numeric: list[str]) -> None:
    """A column read as text in one file and as numbers in the other (``numeric``): give each number the
    spelling the text file uses for it, so 10.0 and "10" are one category, not two the model tells apart."""
    spelled: dict[float, str] = {}
    for name, values in parts.items():
        if name in numeric:
            continue
        for v in values:
            if isinstance(v, str):
                try:
                    spelled.setdefault(float(v), v)
                except ValueError:
                    pass
    for name in numeric:
        parts[name] = np.array([spelled.get(float(v), v) if _key(v) != ("", "") else v for v in parts[name]],
                               dtype=object)


@dataclass(frozen=True)
class FrameCodec:
    """Column names, and per text column the values its codes stand for."""

    names: tuple[str, ...]
    categories: tuple[tuple[int, tuple[Any, ...]], ...]

    def frame(self, X: NDArray[np.float64]) -> Any:
        """``X`` as the DataFrame the model takes: codes back to their values (perturbed codes are
        rounded and clipped to the nearest category)."""
        import pandas as pd

        df = pd.DataFrame(X, columns=list(self.names))
        for j, values in self.categories:
            lookup = np.empty(len(values), dtype=object)
            lookup[:] = values
            codes = np.clip(np.rint(np.nan_to_num(X[:, j], nan=0.0)), 0, len(values) - 1).astype(np.intp)
            df[self.names[j]] = lookup[codes]
        return df

    def probe(self, row: NDArray[np.float64]) -> NDArray[np.float64]:
        """``row`` once per value of every text column (the other columns as in ``row``): scoring these
        shows whether the model reads every value the data holds, not just the first record's."""
        blocks = []
        for j, values in self.categories:
            block = np.repeat(row[None, :], len(values), axis=0)
            block[:, j] = np.arange(len(values))
            blocks.append(block)
        return np.vstack(blocks)


def encode_text(train: Dataset, holdout: Dataset) -> tuple[Dataset, Dataset, FrameCodec | None]:
    """Replace text columns by shared codes in both datasets; None when there is no text column."""
    columns = sorted({j for j, _ in train.text} | {j for j, _ in holdout.text})
    if not columns:
        return train, holdout, None
    raw = {"train": dict(train.text), "holdout": dict(holdout.text)}
    categories = []
    coded = {"train": train.X.copy(), "holdout": holdout.X.copy()}
    for j in columns:
        parts = {name: raw[name].get(j, ds.X[:, j].astype(object))
                 for name, ds in (("train", train), ("holdout", holdout))}
        _same_spelling(parts, [name for name in parts if j not in raw[name]])
        distinct = {_key(v): v for part in parts.values() for v in part}
        order = sorted(distinct)
        index = {k: i for i, k in enumerate(order)}
        categories.append((j, tuple(distinct[k] for k in order)))
        for name, values in parts.items():
            coded[name][:, j] = [index[_key(v)] for v in values]
    codec = FrameCodec(train.feature_names, tuple(categories))
    return (replace(train, X=coded["train"], text=()), replace(holdout, X=coded["holdout"], text=()), codec)


def takes_text(estimator: Any, frame: Any) -> bool:
    """Whether the model scores ``frame`` (see FrameCodec.probe) with its text columns as read."""
    try:
        estimator.predict(frame)
    except (ValueError, TypeError):
        return False
    return True


def refuse_text(*datasets: Dataset) -> None:
    """The model needs numbers: refuse the first dataset with text columns, in its own words."""
    for ds in datasets:
        if ds.text:
            raise DataError(ds.text_refusal)
