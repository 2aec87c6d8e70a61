"""ONNX targets: skl2onnx classifiers (ZipMap probabilities), and graphs with several outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from privaudit import datasets
from privaudit.errors import ModelLoadError
from privaudit.models import LoadOptions, ModelOptions, load_model


def _two_output_graph(path: Path, n_features: int = 3, n_classes: int = 2) -> np.ndarray:
    """x -> (x @ W, x @ W * 2): two float outputs of the same shape, neither named as probabilities."""
    w = np.arange(n_features * n_classes, dtype=np.float32).reshape(n_features, n_classes) / 10
    nodes = [helper.make_node("MatMul", ["x", "W"], ["scores_a"]),
             helper.make_node("Mul", ["scores_a", "two"], ["scores_b"])]
    graph = helper.make_graph(
        nodes, "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_features])],
        [helper.make_tensor_value_info("scores_a", TensorProto.FLOAT, ["n", n_classes]),
         helper.make_tensor_value_info("scores_b", TensorProto.FLOAT, ["n", n_classes])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.ravel().tolist()),
                     helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


def test_skl2onnx_zipmap_probabilities_follow_the_stored_class_labels(tmp_path: Path) -> None:
    s = datasets.purchase_like(300, n_features=12, n_classes=3, flip=0.2, seed=4)
    y = np.array([3, 5, 9])[s.y_train]  # labels that are not column indices
    clf = LogisticRegression(max_iter=500).fit(s.X_train, y)
    path = tmp_path / "lr.onnx"
    path.write_bytes(to_onnx(clf, s.X_train[:1].astype(np.float32)).SerializeToString())
    loaded = load_model(str(path))  # two outputs (label, probabilities): the probabilities are picked
    assert loaded.format == "onnx"
    assert list(loaded.target.classes) == [3, 5, 9]
    np.testing.assert_allclose(loaded.target.predict(s.X_holdout), clf.predict_proba(s.X_holdout), atol=1e-5)
    labels = load_model(str(path), LoadOptions(model=ModelOptions(onnx_output="output_label")))
    np.testing.assert_array_equal(labels.target.predict(s.X_holdout),
                                  np.searchsorted([3, 5, 9], clf.predict(s.X_holdout)))


def test_two_score_outputs_ask_which_one(tmp_path: Path, run: Any, plain_terminal: None) -> None:
    path = tmp_path / "two.onnx"
    w = _two_output_graph(path)
    with pytest.raises(ModelLoadError, match=r"2 outputs .*scores_a, scores_b.*--onnx-output"):
        load_model(str(path))
    X = np.random.default_rng(0).random((40, 3))
    chosen = load_model(str(path), LoadOptions(model=ModelOptions(onnx_output="scores_b")))
    np.testing.assert_allclose(chosen.target.predict(X), 2 * X @ w, atol=1e-5)
    with pytest.raises(ModelLoadError, match="--onnx-output nope: no such output"):
        load_model(str(path), LoadOptions(model=ModelOptions(onnx_output="nope")))
    np.savez(tmp_path / "train.npz", X=X[:20], y=np.arange(20) % 2)
    np.savez(tmp_path / "holdout.npz", X=X[20:], y=np.arange(20) % 2)
    result = run("audit", "-m", path, "--train", tmp_path / "train.npz", "--holdout", tmp_path / "holdout.npz",
                 "--no-cache")
    assert result.code == 2
    assert "--onnx-output NAME" in result.err and "Traceback" not in result.err


def test_unknown_model_format_and_bad_loop_settings_are_usage_errors(tmp_path: Path, run: Any,
                                                                     plain_terminal: None) -> None:
    path = tmp_path / "two.onnx"
    _two_output_graph(path)
    X = np.random.default_rng(1).random((40, 3))
    np.savez(tmp_path / "train.npz", X=X[:20], y=np.arange(20) % 2)
    np.savez(tmp_path / "holdout.npz", X=X[20:], y=np.arange(20) % 2)
    base = ["audit", "-m", path, "--train", tmp_path / "train.npz", "--holdout", tmp_path / "holdout.npz", "--no-cache"]
    unknown = run(*base, "--model-format", "caffe")
    assert unknown.code == 2 and "--model-format caffe: unknown" in unknown.err
    bad = run(*base, "--onnx-output", "scores_a", "--ref-epochs", "0")
    assert bad.code == 2 and "--ref-epochs 0: must be 1 or more" in bad.err
