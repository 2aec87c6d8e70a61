"""Per-record signals extracted from a model's outputs; pure functions on numpy arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from privaudit.target import tempered_powers

# Below this, a probability is indistinguishable from zero for the attacker. Rounded outputs get a
# coarser floor (half the last kept decimal) because that is all the information they carry.
DEFAULT_FLOOR = 1e-300


def probability_floor(rounding: int | None) -> float:
    """Smallest probability an output with ``rounding`` decimals can distinguish from zero."""
    return DEFAULT_FLOOR if rounding is None else 0.5 * 10.0 ** (-rounding)


def true_class_probability(probs: NDArray[np.float64], y: NDArray[np.int64]) -> NDArray[np.float64]:
    """p(y|x) for each record (probs: (..., n, C), y: (n,))."""
    return np.take_along_axis(probs, np.broadcast_to(y[:, None], probs.shape[:-1] + (1,)), axis=-1)[..., 0]


def scaled_logit(probs: NDArray[np.float64], y: NDArray[np.int64], floor: float = DEFAULT_FLOOR) -> NDArray[np.float64]:
    """log p_y - log(sum of the other classes' p), the LiRA signal (Carlini et al. 2022).

    The denominator is summed from the other classes rather than computed as 1 - p_y, which keeps
    precision when p_y is within 1e-16 of 1 -- exactly the memorised records an audit cares about.
    """
    p_y = true_class_probability(probs, y)
    rest = np.sum(probs, axis=-1) - p_y
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(p_y, floor)) - np.log(np.maximum(rest, floor))


def tempered_true_class_probability(
    probs: NDArray[np.float64], y: NDArray[np.int64], temperature: float, floor: float = DEFAULT_FLOOR
) -> NDArray[np.float64]:
    """softmax(log p / T)_y: the RMIA likelihood p(x|theta) at softmax temperature T (Zarifzadeh et al. 2024).

    Only the true class is normalised: p_y^(1/T) / sum_c p_c^(1/T), from :func:`tempered_powers`.
    """
    e = tempered_powers(probs, temperature, floor)
    out: NDArray[np.float64] = true_class_probability(e, y) / np.sum(e, axis=-1)
    return out


def correctness(labels: NDArray[np.int64], y: NDArray[np.int64]) -> NDArray[np.float64]:
    """1.0 where the predicted label is the true one (the gap attack's signal, Yeom et al. 2018)."""
    return (np.asarray(labels) == y).astype(np.float64)


def entropy(probs: NDArray[np.float64], floor: float = DEFAULT_FLOOR) -> NDArray[np.float64]:
    """Shannon entropy of each output distribution."""
    p = np.maximum(probs, floor)
    out: NDArray[np.float64] = -np.sum(probs * np.log(p), axis=-1)
    return out
