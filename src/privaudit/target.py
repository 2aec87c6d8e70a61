"""The ``Target`` protocol every model adapter satisfies, and the model's output mode.

Everything after an adapter is numpy: ``predict`` returns either a float array of shape
``(n, n_classes)`` (probabilities, logits, or top-k probabilities with ``nan`` where a class was
not returned) or, for label-only models, an integer array of shape ``(n,)`` of class indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

OutputKind = Literal["probabilities", "logits", "top_k", "label"]
OUTPUT_KINDS: tuple[OutputKind, ...] = ("probabilities", "logits", "top_k", "label")


@dataclass(frozen=True)
class OutputMode:
    """What a model exposes per query: the kind of output, its rounding, and k for top-k."""

    kind: OutputKind
    rounding: int | None = None
    k: int | None = None

    @property
    def has_scores(self) -> bool:
        """True when the output carries a confidence signal (anything but label-only)."""
        return self.kind != "label"

    def to_dict(self) -> dict[str, object]:
        return {"output_mode": self.kind, "rounding": self.rounding, "k": self.k}


@runtime_checkable
class Target(Protocol):
    """A model under audit, seen only through its predictions."""

    @property
    def classes(self) -> NDArray[np.generic]:
        """Class labels, in the order of the output columns."""
        ...

    @property
    def queries(self) -> int:
        """Number of records sent to the model so far (one record = one query)."""
        ...

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        """Model outputs for rows of ``X`` (see module docstring for the shapes)."""
        ...


def softmax(logits: NDArray[np.float64], temperature: float = 1.0) -> NDArray[np.float64]:
    """Row-wise softmax of ``logits / temperature``, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    out: NDArray[np.float64] = e / np.sum(e, axis=-1, keepdims=True)
    return out


def to_probabilities(outputs: NDArray[np.float64], mode: OutputMode) -> NDArray[np.float64]:
    """Turn score outputs of any non-label mode into a full probability matrix.

    Logits go through a softmax. For top-k outputs the mass not returned is spread evenly over the
    classes that were not returned -- the best an attacker can do without more information.
    """
    out = np.asarray(outputs, dtype=np.float64)
    if mode.kind == "logits":
        return softmax(out)
    if mode.kind == "top_k":
        missing = np.isnan(out)
        n_missing = missing.sum(axis=-1, keepdims=True)
        filled = np.where(missing, 0.0, out)
        rest = np.clip(1.0 - filled.sum(axis=-1, keepdims=True), 0.0, 1.0)
        fill = np.divide(rest, n_missing, out=np.zeros_like(rest), where=n_missing > 0)
        np.copyto(filled, np.broadcast_to(fill, out.shape), where=missing)
        return filled
    return out


def detect_output_mode(outputs: NDArray[np.generic], n_classes: int, *, may_round: bool = True) -> OutputMode:
    """Infer the output mode from a sample of a model's outputs.

    1-D integer outputs are labels; rows that are non-negative and sum to 1 are probabilities (top-k
    when some classes are missing as ``nan``); anything else is logits. Rounding is the smallest
    number of decimals (up to 6) that represents every value exactly, looked for only when
    ``may_round``: a local model read directly (a random forest of 100 trees answers multiples of
    0.01) gives its real output, which merely sits on a grid.
    """
    arr = np.asarray(outputs)
    if arr.ndim == 1:
        return OutputMode("label")
    values = arr.astype(np.float64)
    finite = values[~np.isnan(values)]
    rounding = _detect_rounding(finite) if may_round else None
    n_present = (~np.isnan(values)).sum(axis=1)
    if np.any(n_present < n_classes):
        return OutputMode("top_k", rounding=rounding, k=int(n_present.max()))
    row_sums = values.sum(axis=1)
    tol = 10.0 ** (-rounding) * n_classes if rounding is not None else 1e-4
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0 and np.allclose(row_sums, 1.0, atol=tol):
        return OutputMode("probabilities", rounding=rounding)
    return OutputMode("logits", rounding=rounding)


def _detect_rounding(values: NDArray[np.float64]) -> int | None:
    if values.size == 0:
        return None
    # A sample rules most candidates out cheaply; only one that passes it is checked on every value.
    sample = values[:: max(1, values.size // 20_000)]
    for decimals in range(0, 7):
        if np.allclose(sample, np.round(sample, decimals), rtol=0.0, atol=1e-9) and (
                sample.size == values.size or np.allclose(values, np.round(values, decimals), rtol=0.0, atol=1e-9)):
            return decimals
    return None


def apply_output_mode(probabilities: NDArray[np.float64], mode: OutputMode) -> NDArray[np.float64] | NDArray[np.int64]:
    """Harden full probabilities the way ``mode`` does (top-k masking, rounding, label only).

    Used to give reference models' outputs the same shape the target exposes, and for what-if
    scoring of hardened deployments.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if mode.kind in ("probabilities", "logits") and mode.rounding is None:
        return p  # nothing to harden; callers never write into the result
    if mode.kind == "label":
        return np.argmax(p, axis=-1).astype(np.int64)
    # Works on (n, C) and on stacked reference outputs (K, n, C): classes are always the last axis.
    if mode.kind == "top_k" and mode.k is not None and mode.k < p.shape[-1]:
        # A partial sort finds the k kept classes; a full sort of every row would cost several times more.
        if mode.k == 1:
            keep = np.argmax(p, axis=-1)[..., None]
        else:
            keep = np.argpartition(-p, mode.k - 1, axis=-1)[..., : mode.k]
        out = np.full_like(p, np.nan)
        np.put_along_axis(out, keep, np.take_along_axis(p, keep, axis=-1), axis=-1)
    else:
        out = p.copy()
    if mode.rounding is not None:
        out = np.round(out, mode.rounding)
    return out


def tempered_powers(probs: NDArray[np.float64], temperature: float, floor: float = 1e-300) -> NDArray[np.float64]:
    """p^(1/T) per class, each row scaled by its largest entry first: softmax(log p / T) before normalising.

    No logarithm or exponential over every class (square roots for the usual T = 2 and 4), no overflow,
    and never an all-zero row. Values below ``1e-300 ** T`` are raised to it: once powered they would
    leave the normal float range, where arithmetic is slow, and they are negligible against the row's
    largest entry anyway. Returns a new array.
    """
    p = np.maximum(probs, max(floor, 1e-300 ** temperature))
    p /= np.max(p, axis=-1, keepdims=True)
    power = 1.0 / temperature
    if power == 0.5:
        np.sqrt(p, out=p)
    elif power == 0.25:
        np.sqrt(np.sqrt(p, out=p), out=p)
    elif power == 2.0:
        np.multiply(p, p, out=p)
    elif power != 1.0:
        np.power(p, power, out=p)
    return p


def temper(probs: NDArray[np.float64], temperature: float | None) -> NDArray[np.float64]:
    """softmax(log p / T) over the class axis (None: ``probs`` unchanged)."""
    if temperature is None:
        return probs
    p = tempered_powers(probs, temperature)
    p /= np.sum(p, axis=-1, keepdims=True)
    return p


class ServedTarget:
    """A target seen through a serving policy: the outputs callers of a hardened API would receive.

    ``inner_mode`` is what the wrapped target returns; its answers become probabilities, are flattened
    by ``temperature`` if given, then hardened to ``mode`` (top-k, rounding, label only).
    """

    def __init__(self, inner: Target, inner_mode: OutputMode, mode: OutputMode, temperature: float | None = None) -> None:
        if not inner_mode.has_scores:
            raise ValueError("a label-only target cannot be served with more detail than it gives")
        self._inner, self._inner_mode, self.mode, self._temperature = inner, inner_mode, mode, temperature
        self._queries = 0

    @property
    def classes(self) -> NDArray[np.generic]:
        return self._inner.classes

    @property
    def queries(self) -> int:
        return self._queries

    def predict(self, X: NDArray[np.float64]) -> NDArray[np.float64] | NDArray[np.int64]:
        self._queries += len(X)
        probs = to_probabilities(np.asarray(self._inner.predict(X), dtype=np.float64), self._inner_mode)
        return apply_output_mode(temper(probs, self._temperature), self.mode)
