"""Output-mode detection and hardening transforms."""

from __future__ import annotations

import numpy as np
import pytest

from privaudit.target import OutputMode, apply_output_mode, detect_output_mode, softmax, to_probabilities

P = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8], [0.3, 0.4, 0.3]])


def test_probabilities_detected_without_rounding() -> None:
    p = softmax(np.random.default_rng(0).normal(size=(20, 4)))
    assert detect_output_mode(p, 4) == OutputMode("probabilities", rounding=None)


def test_rounded_probabilities_detected_with_their_decimals() -> None:
    p = np.round(softmax(np.random.default_rng(1).normal(size=(50, 3))), 2)
    mode = detect_output_mode(p, 3)
    assert mode.kind == "probabilities" and mode.rounding == 2


def test_logits_detected() -> None:
    z = np.random.default_rng(2).normal(size=(10, 3)) * 5
    assert detect_output_mode(z, 3).kind == "logits"


def test_top_k_detected_from_missing_classes() -> None:
    seen = apply_output_mode(P, OutputMode("top_k", k=1))
    assert detect_output_mode(seen, 3) == OutputMode("top_k", rounding=1, k=1)  # 0.7, 0.8, 0.4 need one decimal


def test_labels_detected() -> None:
    assert detect_output_mode(np.array([0, 2, 1]), 3).kind == "label"


def test_apply_top_k_keeps_the_largest_and_works_on_stacks() -> None:
    out = apply_output_mode(np.stack([P, P]), OutputMode("top_k", k=2))
    assert out.shape == (2, 3, 3)
    # Each row keeps its own two largest classes; the stack axis is not mixed in.
    assert np.isnan(out[0, 0, 2]) and not np.isnan(out[0, 0, 0]) and not np.isnan(out[0, 0, 1])
    assert np.isnan(out[0, 1, 0]) and not np.isnan(out[0, 1, 2])
    np.testing.assert_array_equal(np.isnan(out[0]), np.isnan(out[1]))
    assert (~np.isnan(out)).sum(axis=-1).max() == 2


def test_to_probabilities_spreads_missing_mass_evenly() -> None:
    seen = apply_output_mode(P, OutputMode("top_k", k=1))
    full = to_probabilities(np.asarray(seen), OutputMode("top_k", k=1))
    np.testing.assert_allclose(full[0], [0.7, 0.15, 0.15])
    np.testing.assert_allclose(full.sum(axis=1), 1.0)


def test_label_mode_is_argmax_and_rounding_rounds() -> None:
    np.testing.assert_array_equal(apply_output_mode(P, OutputMode("label")), [0, 2, 1])
    np.testing.assert_allclose(apply_output_mode(P, OutputMode("probabilities", rounding=1)), np.round(P, 1))


@pytest.mark.parametrize("t", [0.5, 1.0, 3.0])
def test_softmax_rows_sum_to_one_and_keep_argmax(t: float) -> None:
    z = np.random.default_rng(3).normal(size=(5, 4))
    s = softmax(z, t)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    np.testing.assert_array_equal(s.argmax(axis=1), z.argmax(axis=1))
