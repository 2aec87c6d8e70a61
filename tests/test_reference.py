"""Reference-model masks and the score cache: reuse what is valid, never what is stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privaudit.audit.reference import ScoreCache, in_masks, recipe_from_estimator, train_reference_models


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(np.int64)
    return X, y


def _recipe(C: float = 1.0, target: str = "t") -> object:
    from sklearn.linear_model import LogisticRegression

    return recipe_from_estimator(LogisticRegression(C=C), target_fingerprint=target, feature_names=None)


def test_masks_pair_up_so_every_record_is_in_exactly_half() -> None:
    y = np.array([0] * 51 + [1] * 30)
    masks = in_masks(y, 6, seed=0)
    assert masks.shape == (6, 81)
    np.testing.assert_array_equal(masks.sum(axis=0), 3)
    np.testing.assert_array_equal(masks[0], ~masks[1])
    for k in range(6):  # class-stratified halves: each class is split near evenly
        assert abs(int(masks[k][y == 1].sum()) - 15) <= 1


def test_raising_k_keeps_the_earlier_masks() -> None:
    y = np.arange(40) % 2
    np.testing.assert_array_equal(in_masks(y, 4, seed=3), in_masks(y, 6, seed=3)[:4])
    assert not np.array_equal(in_masks(y, 2, seed=3), in_masks(y, 2, seed=4))


def test_cache_hits_on_rerun_and_trains_only_new_models(tmp_path: Path) -> None:
    X, y = _data()
    cache = ScoreCache(tmp_path)
    first = train_reference_models(_recipe(), X, y, 2, 4, seed=0, jobs=1, cache=cache)  # type: ignore[arg-type]
    assert first.trained == 4
    again = train_reference_models(_recipe(), X, y, 2, 4, seed=0, jobs=1, cache=cache)  # type: ignore[arg-type]
    assert again.trained == 0
    np.testing.assert_array_equal(first.probabilities, again.probabilities)
    more = train_reference_models(_recipe(), X, y, 2, 6, seed=0, jobs=1, cache=cache)  # type: ignore[arg-type]
    assert more.trained == 2
    np.testing.assert_array_equal(more.probabilities[:4], first.probabilities)


def test_changed_data_recipe_target_or_seed_never_reuse_entries(tmp_path: Path) -> None:
    X, y = _data()
    cache = ScoreCache(tmp_path)
    train_reference_models(_recipe(), X, y, 2, 2, seed=0, jobs=1, cache=cache)  # type: ignore[arg-type]
    X2 = X.copy()
    X2[0, 0] += 1e-9
    assert train_reference_models(_recipe(), X2, y, 2, 2, seed=0, jobs=1, cache=cache).trained == 2  # type: ignore[arg-type]
    assert train_reference_models(_recipe(C=0.1), X, y, 2, 2, seed=0, jobs=1, cache=cache).trained == 2  # type: ignore[arg-type]
    assert train_reference_models(_recipe(target="other"), X, y, 2, 2, seed=0, jobs=1, cache=cache).trained == 2  # type: ignore[arg-type]
    assert train_reference_models(_recipe(), X, y, 2, 2, seed=1, jobs=1, cache=cache).trained == 2  # type: ignore[arg-type]


def test_damaged_cache_entry_is_retrained(tmp_path: Path) -> None:
    X, y = _data()
    cache = ScoreCache(tmp_path)
    train_reference_models(_recipe(), X, y, 2, 2, seed=0, jobs=1, cache=cache)  # type: ignore[arg-type]
    for f in tmp_path.glob("*.npy"):
        f.write_bytes(b"not an array")
    assert train_reference_models(_recipe(), X, y, 2, 2, seed=0, jobs=1, cache=cache).trained == 2  # type: ignore[arg-type]


def test_reference_models_are_trained_on_their_half(tmp_path: Path) -> None:
    # A 1-nearest-neighbour model is certain on exactly its training records.
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _data(1)
    recipe = recipe_from_estimator(KNeighborsClassifier(n_neighbors=1), target_fingerprint="t", feature_names=None)
    refs = train_reference_models(recipe, X, y, 2, 2, seed=0, jobs=2, cache=ScoreCache(None))
    p_true = refs.probabilities[np.arange(2)[:, None], np.arange(len(y))[None, :], y[None, :]]
    assert np.all(p_true[refs.in_mask] == 1.0)
