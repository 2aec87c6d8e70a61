"""XGBoost and LightGBM boosters audited from their native files, with reference boosters trained alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

import privaudit
import privaudit.errors
from privaudit import datasets
from privaudit.errors import ModelLoadError
from privaudit.models import LoadOptions, ModelOptions, load_model

FAST = {"reference_models": 2, "jobs": 1, "cache_dir": False, "what_if": False, "n_bootstrap": 20}
XGB_PARAMS = {"objective": "multi:softprob", "num_class": 4, "max_depth": 6, "eta": 0.5, "subsample": 0.8,
              "min_child_weight": 0, "seed": 7}
LGB_PARAMS = {"objective": "multiclass", "num_class": 4, "num_leaves": 31, "min_data_in_leaf": 2, "learning_rate": 0.3,
              "bagging_fraction": 0.8, "bagging_freq": 1, "seed": 7, "deterministic": True, "num_threads": 1,
              "verbosity": -1}


@pytest.fixture(scope="module")
def split() -> Any:
    return datasets.purchase_like(600, n_features=30, n_classes=4, flip=0.3, seed=5)


def _pool(s: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([s.X_train, s.X_holdout]), np.r_[s.y_train, s.y_holdout]


def test_xgboost_ubj_and_json_are_audited_natively(split: Any, tmp_path: Path) -> None:
    booster = xgb.train(XGB_PARAMS, xgb.DMatrix(split.X_train, label=split.y_train), num_boost_round=40)
    booster.save_model(str(tmp_path / "model.ubj"))
    booster.save_model(str(tmp_path / "model.json"))
    (tmp_path / "model.config.json").write_text(booster.save_config())
    expected = booster.predict(xgb.DMatrix(split.X_holdout))
    ubj = load_model(str(tmp_path / "model.ubj"))
    np.testing.assert_allclose(ubj.target.predict(split.X_holdout), expected, atol=1e-6)
    with pytest.raises(ModelLoadError, match="--model-format"):
        load_model(str(tmp_path / "model.json"))  # a .json file could be anything
    js = load_model(str(tmp_path / "model.json"), LoadOptions(model=ModelOptions(format="xgboost")))
    np.testing.assert_allclose(js.target.predict(split.X_holdout), expected, atol=1e-6)
    # The config beside the model gives the exact training parameters: trained on the same rows with the
    # same seed, a reference booster is the target itself.
    X, y = _pool(split)
    mask = np.r_[np.ones(len(split.y_train), bool), np.zeros(len(split.y_holdout), bool)]
    assert "model.config.json" in ubj.fitter.description
    again = ubj.fitter.fit_score(X, y, mask, seed=7, n_classes=4)
    np.testing.assert_allclose(again, booster.predict(xgb.DMatrix(X)), atol=1e-6)
    # Without it, the file still gives the objective, the rounds and the tree depth.
    (tmp_path / "model.config.json").unlink()
    bare = load_model(str(tmp_path / "model.ubj"))
    assert "XGBoost defaults" in bare.fitter.description and dict(bare.fitter.params)["max_depth"] == 6
    assert bare.fitter.rounds == 40
    report = privaudit.audit(tmp_path / "model.ubj", (split.X_train, split.y_train), (split.X_holdout, split.y_holdout),
                             **FAST)
    assert report.model.format == "xgboost"
    assert report.membership.reference_recipe.startswith("XGBoost multi:softprob, 40 rounds")
    assert report.membership.train_accuracy > report.membership.holdout_accuracy + 0.2
    assert report.membership.attacks[0].auc > 0.6  # deep trees on noisy labels memorise their training half


def test_lightgbm_txt_is_audited_with_its_saved_parameters(split: Any, tmp_path: Path) -> None:
    booster = lgb.train(LGB_PARAMS, lgb.Dataset(split.X_train, label=split.y_train), num_boost_round=30)
    path = tmp_path / "model.txt"
    booster.save_model(str(path))
    loaded = load_model(str(path))
    assert loaded.format == "lightgbm"
    np.testing.assert_allclose(loaded.target.predict(split.X_holdout), booster.predict(split.X_holdout), atol=1e-9)
    params = json.loads(loaded.fitter.params)
    assert params["num_leaves"] == 31 and params["min_data_in_leaf"] == 2 and loaded.fitter.rounds == 30
    X, y = _pool(split)
    mask = np.r_[np.ones(len(split.y_train), bool), np.zeros(len(split.y_holdout), bool)]
    again = loaded.fitter.fit_score(X, y, mask, seed=7, n_classes=4)
    np.testing.assert_allclose(again, booster.predict(X), atol=1e-9)  # same parameters, rows and seed: same booster
    report = privaudit.audit(path, (split.X_train, split.y_train), (split.X_holdout, split.y_holdout), **FAST)
    assert report.membership.reference_recipe.startswith("LightGBM multiclass, 30 iterations")
    assert report.membership.attacks[0].auc > 0.6


def test_binary_boosters_and_a_trainer_returning_a_booster(split: Any, tmp_path: Path) -> None:
    yb = split.y_train % 2
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4}, xgb.DMatrix(split.X_train, label=yb), 10)
    booster.save_model(str(tmp_path / "bin.ubj"))
    out = load_model(str(tmp_path / "bin.ubj")).target.predict(split.X_holdout)
    p = booster.predict(xgb.DMatrix(split.X_holdout))
    np.testing.assert_allclose(out, np.column_stack([1 - p, p]), atol=1e-6)
    report = privaudit.audit(tmp_path / "bin.ubj", (split.X_train, yb), (split.X_holdout, split.y_holdout % 2),
                             trainer="test_models_boosters:lgb_trainer", **FAST)
    assert report.membership.reference_recipe == "trainer test_models_boosters:lgb_trainer"


def lgb_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    return lgb.train({"objective": "binary", "verbosity": -1, "seed": seed, "num_threads": 1},
                     lgb.Dataset(X, label=y), num_boost_round=10)


def test_regression_boosters_are_refused(tmp_path: Path) -> None:
    X = np.random.default_rng(0).random((50, 3))
    xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(X, label=X[:, 0]), 2).save_model(str(tmp_path / "r.ubj"))
    with pytest.raises(privaudit.errors.UnsupportedModelError, match="not a classification objective"):
        load_model(str(tmp_path / "r.ubj"))
