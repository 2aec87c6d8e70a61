"""Inversion wired into the audit: report keys, the CLI, the HTML images, label-only refusal."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit.cli import main


@pytest.fixture(scope="module")
def digits(tmp_path_factory: Any) -> dict[str, Any]:
    import skops.io as sio
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    X, y = d.data / 16.0, d.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))  # a random split: the file order is by writer, which the split check catches
    tr, ho = order[:900], order[900:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = MLPClassifier((64,), max_iter=200, random_state=0).fit(X[tr], y[tr])
    root = tmp_path_factory.mktemp("digits")
    np.savez(root / "train.npz", X=X[tr], y=y[tr])
    np.savez(root / "holdout.npz", X=X[ho], y=y[ho])
    sio.dump(model, root / "digits.skops")
    return {"root": root, "model": model, "train": (X[tr], y[tr]), "holdout": (X[ho], y[ho])}


def test_report_has_the_stable_inversion_keys(digits: dict[str, Any]) -> None:
    rep = privaudit.audit(digits["model"], digits["train"], digits["holdout"], reference_models=0, attacks=["loss"],
                          inversion=True, image_shape=(8, 8), n_bootstrap=0, cache_dir=False, what_if=False)
    inv = rep.to_dict()["inversion"]
    assert inv["mode"] == "white-box" and inv["attack_accuracy"] >= 0.8
    assert {"queries_total", "seconds", "classes"} <= set(inv)
    assert len(inv["classes"]) == 10
    for c in inv["classes"]:
        assert set(c) >= {"class", "evaluator_prediction", "evaluator_confidence", "queries", "nearest_train_distance",
                          "holdout_reference_distance"}
    exf001 = next(f for f in rep.findings if f.rule_id == "ATLAS-EXF-001")
    assert exf001.status == "fail"
    assert next(c for c in exf001.checks if c.check == "inversion_attack").status.value == "FAIL"


def test_constant_model_is_not_inverted(digits: dict[str, Any]) -> None:
    from sklearn.dummy import DummyClassifier

    const = DummyClassifier(strategy="prior").fit(*digits["train"])
    rep = privaudit.audit(const, digits["train"], digits["holdout"], reference_models=0, attacks=["loss"],
                          inversion=True, image_shape=(8, 8), n_bootstrap=0, cache_dir=False, what_if=False,
                          inversion_budget=300)
    assert rep.inversion is not None and (rep.inversion.attack_accuracy or 0.0) <= 0.3
    check = next(c for f in rep.findings if f.rule_id == "ATLAS-EXF-001" for c in f.checks if c.check == "inversion_attack")
    assert check.status.value == "PASS"


def test_label_only_model_is_refused_with_a_reason(digits: dict[str, Any]) -> None:
    model = digits["model"]

    def labels(X: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(X))

    labels.classes = list(model.classes_)  # type: ignore[attr-defined]
    rep = privaudit.audit(labels, digits["train"], digits["holdout"], reference_models=0, attacks=["loss"],
                          inversion=True, n_bootstrap=0, cache_dir=False)
    assert rep.inversion is not None and rep.inversion.mode == "refused"
    assert rep.inversion.reason and "label" in rep.inversion.reason.lower()


def test_cli_invert_writes_json_and_html_with_pictures(digits: dict[str, Any], tmp_path: Path) -> None:
    root = digits["root"]
    out_json, out_html = tmp_path / "inv.json", tmp_path / "inv.html"
    # main() returns normally on exit code 0 and raises SystemExit otherwise.
    main(["invert", "--model", str(root / "digits.skops"), "--train", str(root / "train.npz"),
          "--holdout", str(root / "holdout.npz"), "--image-shape", "8x8", "--inversion-budget", "400",
          "--trust", "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
          "-o", str(out_json), "-o", str(out_html), "--fail-on", "never"])
    report = json.loads(out_json.read_text())
    assert report["inversion"]["mode"] == "white-box"
    html = out_html.read_text()
    assert html.count('alt="reconstruction of class') == 10
    assert "mean training image" not in html  # class means summarise real records: only with --include-records


def test_cli_rejects_a_bad_image_shape(digits: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    root = digits["root"]
    with pytest.raises(SystemExit) as exc:
        main(["invert", "--model", str(root / "digits.skops"), "--train", str(root / "train.npz"),
              "--holdout", str(root / "holdout.npz"), "--image-shape", "7x7",
              "--trust", "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"])
    assert exc.value.code == 2
    assert "7x7" in capsys.readouterr().err


def test_sensitive_column_gives_the_attribute_inference_section() -> None:
    from sklearn.ensemble import RandomForestClassifier

    from privaudit import datasets

    X, y, names, idx = datasets.warfarin_like(2000, seed=0)
    half = len(X) // 2
    model = RandomForestClassifier(n_estimators=30, bootstrap=False, random_state=0).fit(X[:half], y[:half])
    import pandas as pd

    train = pd.DataFrame(X[:half], columns=list(names)).assign(dose=y[:half])
    holdout = pd.DataFrame(X[half:], columns=list(names)).assign(dose=y[half:])
    rep = privaudit.audit(model, train, holdout, label="dose", reference_models=0, attacks=["loss"], n_bootstrap=0,
                          cache_dir=False, what_if=False, sensitive=names[idx])
    ai = rep.to_dict()["attribute_inference"]
    assert ai["column"] == names[idx]
    assert set(ai["train"]) == {"accuracy", "baseline_accuracy", "advantage", "mcc", "g_mean", "records", "wins", "losses"}
    assert ai["leakage"] == pytest.approx(ai["train"]["advantage"] - ai["holdout"]["advantage"])
    assert ai["leakage"] > 0.05  # the forest memorised its training records' genotypes
    check = next(c for f in rep.findings if f.rule_id == "ATLAS-EXF-001" for c in f.checks if c.check == "attribute_inference")
    assert check.status.value == "FAIL"


def test_what_if_table_gains_inversion_columns(digits: dict[str, Any]) -> None:
    from privaudit.report import markdown

    rep = privaudit.audit(digits["model"], digits["train"], digits["holdout"], reference_models=0, seed=0,
                          attacks=["loss"], inversion=True, image_shape=(8, 8), n_bootstrap=0, cache_dir=False,
                          inversion_budget=1500, inversion_classes=[0, 1, 2])
    rows = {w.serving: w for w in rep.what_if}
    audited, label = rows["as audited"], rows["label only"]
    # Full probabilities from the served model: black-box MI-Face rebuilds recognisable digits.
    assert audited.inversion_mode == "black-box" and (audited.inversion_attack_accuracy or 0) >= 2 / 3
    assert audited.inversion_queries and audited.inversion_queries <= 3 * 1500
    # Label-only serving defeats it, and the row says so instead of a number.
    assert label.inversion_mode == "refused" and label.inversion_attack_accuracy is None
    assert all(w.inversion_mode in ("black-box", "refused") for w in rep.what_if)
    text = markdown.to_markdown(rep)
    assert "Inversion accuracy" in text and "refused" in text
    from privaudit.report import render

    html = render(rep, "report.html")
    assert "Inversion accuracy (black box)" in html and html.count(">refused<") >= 1
