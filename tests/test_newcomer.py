"""What a newcomer hits off the happy path (issue 11): each test failed before its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.coreonly import run_core_only


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


# --- 1. a core-only install ------------------------------------------------------------------------


def test_core_install_answers_a_usage_error_with_exit_2_and_one_line(tmp_path: Path) -> None:
    proc = run_core_only(["audit", "--model", "m.skops", "--holdout", "h.csv"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    line = _one_error_line(proc.stderr)
    assert "--train" in line and "privaudit audit --help" in line, line


def test_core_install_runs_the_demo(tmp_path: Path) -> None:
    proc = run_core_only(["demo", "--jobs", "1", "-o", "demo.json", "-o", "demo.html"], tmp_path)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "demo.json").is_file() and (tmp_path / "demo.html").is_file()


# --- 9. switches shown as switches ------------------------------------------------------------------


@pytest.mark.parametrize("command", [["audit"], ["demo"], ["invert"]])
def test_help_shows_switches_without_a_value(run: Any, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    r = run(*command, "--help")
    assert r.code == 0, r.err
    assert "<bool>" not in r.out
    assert "--debug" in r.out


def test_a_value_after_a_switch_says_it_takes_none(run: Any, tmp_path: Path) -> None:
    r = run("audit", "--model", "m.skops", "--train", "t.csv", "--holdout", "h.csv", "--allow-pickle", "true")
    assert r.code == 2
    line = _one_error_line(r.err)
    assert "--allow-pickle" in line and "switch" in line, line


# --- 6. a callable's numpy classes -------------------------------------------------------------------


def test_callable_with_a_numpy_classes_attribute(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privaudit.models.pycallable import CallableTarget

    def predict(X: Any) -> Any:
        return np.where(np.asarray(X)[:, 0] > 0, "yes", "no")

    predict.classes = np.array(["no", "yes"])  # type: ignore[attr-defined]
    target = CallableTarget(predict)
    assert list(target.classes) == ["no", "yes"]
    assert target.predict(np.array([[1.0], [-1.0], [2.0]])).tolist() == [1, 0, 1]


# --- 11. --model mod:attr leaves sys.path as it was ---------------------------------------------------


def test_model_module_import_restores_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from privaudit.models.pycallable import resolve

    (tmp_path / "pa_i11_model.py").write_text("def predict(X):\n    return X\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    before = list(sys.path)
    try:
        assert callable(resolve("pa_i11_model:predict"))
        assert sys.path == before
    finally:
        sys.modules.pop("pa_i11_model", None)


# --- 8. outputs are checked before any work -----------------------------------------------------------


@pytest.fixture
def bc_files(tmp_path: Path) -> tuple[Path, Path]:
    from tests.conftest import write_breast_cancer

    train, holdout, _ = write_breast_cancer(tmp_path, "diagnosis")
    return train, holdout


@pytest.mark.parametrize("kind", ["directory", "missing-folder", "under-a-file", "not-utf8"])
def test_bad_output_paths_fail_before_the_model_is_touched(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           bc_files: tuple[Path, Path], kind: str) -> None:
    import os
    import sys

    (tmp_path / "pa_i11_marker.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('loaded').touch()\n"
        "def predict(X):\n    return X[:, :2]\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile.txt").write_text("x")
    (tmp_path / "adir.json").mkdir()
    out = {"directory": "adir.json", "missing-folder": "no/such/folder/r.json", "under-a-file": "afile.txt/r.json",
           "not-utf8": os.fsdecode(b"r\xff.json")}[kind]
    try:
        r = run("audit", "--model", "pa_i11_marker:predict", "--train", bc_files[0], "--holdout", bc_files[1],
                "--label", "diagnosis", "-o", out)
    finally:
        sys.modules.pop("pa_i11_marker", None)
    assert r.code == 2, r.err
    line = _one_error_line(r.err)
    assert "-o" in line, line
    assert not (tmp_path / "loaded").exists()  # refused before the model was imported, let alone queried


# --- 5. random forests are not "rounded"; the what-if table never disappears silently -----------------


def _forest_case() -> tuple[Any, Any, Any]:
    from sklearn.ensemble import RandomForestClassifier

    from privaudit import datasets

    s = datasets.breast_cancer(seed=0)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(s.X_train, s.y_train)
    return model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout)


def test_a_local_random_forest_is_read_unrounded_and_gets_its_what_if_table() -> None:
    import privaudit

    model, train, holdout = _forest_case()
    probs = model.predict_proba(train[0])
    assert np.allclose(probs, np.round(probs, 2))  # on a 0.01 grid: 100 trees vote
    report = privaudit.audit(model, train, holdout, attacks=["loss"], reference_models=0, cache_dir=False,
                             n_bootstrap=0, jobs=1)
    assert report.model.rounding is None
    assert report.what_if, "the what-if table was dropped"


def test_a_black_box_that_rounds_is_detected_and_the_missing_table_is_explained() -> None:
    import privaudit

    model, train, holdout = _forest_case()

    def served(X: Any) -> Any:  # a callable is a black box: it could round, and this one does
        return np.round(model.predict_proba(X), 1)

    report = privaudit.audit(served, train, holdout, attacks=["loss"], reference_models=0, cache_dir=False,
                             n_bootstrap=0, jobs=1)
    assert report.model.rounding == 1
    assert not report.what_if
    assert any("what-if" in w and "round" in w for w in report.warnings), report.warnings


# --- 4. pipelines that encode text columns themselves ------------------------------------------------


def _text_frames(tmp_path: Path) -> tuple[Path, Path, Any]:
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"age": rng.integers(20, 80, n).astype(float), "income": rng.normal(50, 15, n),
                       "city": rng.choice(["Lyon", "Oslo", "Porto", "Riga"], n)})
    df["label"] = ((df["age"] > 50) ^ (df["city"] == "Oslo")).astype(int)
    df.iloc[:200].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[200:].to_csv(tmp_path / "holdout.csv", index=False)
    return tmp_path / "train.csv", tmp_path / "holdout.csv", pd.read_csv(tmp_path / "train.csv")


def _text_pipeline() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                ("num", StandardScaler(), ["age", "income"])])
    return make_pipeline(encode, LogisticRegression(max_iter=500))


def test_a_pipeline_that_one_hot_encodes_text_is_audited_from_the_cli(run: Any, tmp_path: Path) -> None:
    import joblib

    train, holdout, df = _text_frames(tmp_path)
    model = _text_pipeline().fit(df.drop(columns=["label"]), df["label"])
    joblib.dump(model, tmp_path / "pipe.joblib")
    out = tmp_path / "r.json"
    r = run("audit", "--model", tmp_path / "pipe.joblib", "--allow-pickle", "--train", train, "--holdout", holdout,
            "--label", "label", "--reference-models", "2", "--jobs", "1", "--no-cache", "--attacks", "loss,rmia_online",
            "-o", out)
    assert r.code in (0, 1), r.err
    import json

    report = json.loads(out.read_text())
    expected = float(np.mean(model.predict(df.drop(columns=["label"])) == df["label"]))
    assert abs(report["membership"]["train_accuracy"] - expected) < 1e-12  # the model saw the real city names
    assert "Pipeline" in report["membership"]["reference_recipe"]
    assert report["membership"]["reference_models_trained"] == 2


def test_text_is_still_refused_for_a_model_that_needs_numbers(tmp_path: Path) -> None:
    import privaudit
    from privaudit.errors import DataError

    train, holdout, df = _text_frames(tmp_path)
    from sklearn.linear_model import LogisticRegression

    numeric = LogisticRegression().fit(df[["age", "income"]].to_numpy(), df["label"])

    def predict(X: Any) -> Any:
        return numeric.predict_proba(np.asarray(X)[:, :2])

    with pytest.raises(DataError, match="'city' has text .*the model needs numbers"):
        privaudit.audit(predict, train, holdout, label="label", attacks=["loss"], reference_models=0, cache_dir=False)



def test_text_is_refused_for_a_model_with_named_columns_but_no_encoder(tmp_path: Path) -> None:
    # A forest fitted on a DataFrame has named columns, yet cannot read 'Oslo': a clean refusal, not a crash.
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    import privaudit
    from privaudit.errors import DataError

    train, holdout, df = _text_frames(tmp_path)
    codes = df.assign(city=pd.factorize(df["city"])[0].astype(float))
    forest = RandomForestClassifier(10, random_state=0).fit(codes.drop(columns=["label"]), codes["label"])
    with pytest.raises(DataError, match="'city' has text .*the model needs numbers"):
        privaudit.audit(forest, train, holdout, label="label", attacks=["loss"], reference_models=0, cache_dir=False)


def test_infinity_is_refused_even_for_models_that_take_missing_values(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    import privaudit
    from privaudit.errors import DataError

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), np.r_[np.zeros(30), np.ones(30)].astype(int)
    forest = RandomForestClassifier(10, random_state=0).fit(X, y)  # its tags allow nan
    X_bad = X[:30].copy()
    X_bad[4, 0] = np.inf
    with pytest.raises(DataError, match="infinite value"):
        privaudit.audit(forest, (X_bad, y[:30]), (X[30:], y[30:]), attacks=["loss"], reference_models=0,
                        cache_dir=False)

# --- 10. docs that can work ------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]


def test_ci_docs_install_from_the_repository_at_a_pinned_commit() -> None:
    import re

    text = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs
    for line in installs:  # no package named privaudit is published; every install names the repository
        assert not re.search(r"pip install\s+['\"]?privaudit(\[[^\]]*\])?['\"]?\s*$", line), line
    assert re.search(r"git\+https://\S+/privaudit@", text), "no install line from the repository"
    assert "pin" in text.lower() and "git rev-parse HEAD" in text


def test_sarif_names_no_home_page_that_does_not_exist() -> None:
    import json

    import privaudit
    from privaudit.report import render

    model, train, holdout = _forest_case()
    report = privaudit.audit(model, train, holdout, attacks=["loss"], reference_models=0, cache_dir=False,
                             n_bootstrap=0, jobs=1)
    driver = json.loads(render(report, "r.sarif"))["runs"][0]["tool"]["driver"]
    # privaudit is not published on PyPI and has no web home yet; SARIF makes informationUri optional.
    assert "informationUri" not in driver, driver.get("informationUri")


def test_readme_says_how_to_get_a_cpu_only_torch() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_a_text_pipeline_through_the_api_with_dataframes(tmp_path: Path) -> None:
    import pandas as pd

    import privaudit

    train, holdout, df = _text_frames(tmp_path)
    model = _text_pipeline().fit(df.drop(columns=["label"]), df["label"])
    report = privaudit.audit(model, pd.read_csv(train), pd.read_csv(holdout), label="label", attacks=["loss"],
                             reference_models=0, cache_dir=False, n_bootstrap=0, jobs=1)
    expected = float(np.mean(model.predict(df.drop(columns=["label"])) == df["label"]))
    assert abs(report.membership.train_accuracy - expected) < 1e-12


def test_a_stray_word_in_a_numeric_column_is_refused_not_an_internal_error(tmp_path: Path) -> None:
    # A model fitted on a DataFrame (named columns, no encoder) and a train file whose 'bmi' holds one
    # word in record 6: the first record reads fine, the sixth would crash the model mid-audit.
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    import privaudit
    from privaudit import datasets
    from privaudit.errors import DataError

    d = datasets.readmission_like(400, seed=0)
    names = list(d.feature_names)
    model = LogisticRegression(max_iter=2000).fit(pd.DataFrame(d.X_train, columns=names), d.y_train)
    train = pd.DataFrame(d.X_train, columns=names).assign(label=d.y_train).astype({"bmi": object})
    train.loc[6, "bmi"] = "abc"
    train.to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(d.X_holdout, columns=names).assign(label=d.y_holdout).to_csv(tmp_path / "holdout.csv", index=False)
    with pytest.raises(DataError, match="'bmi' has text .*the model needs numbers"):
        privaudit.audit(model, str(tmp_path / "train.csv"), str(tmp_path / "holdout.csv"), label="label",
                        attacks=["loss"], reference_models=0, cache_dir=False)


def test_a_column_read_as_text_in_one_file_and_numbers_in_the_other_keeps_one_category_per_value() -> None:
    # 'zone' is text in train ("X1" among numbers) and plain numbers in holdout: 10.0 and "10" must be
    # the same category, or every holdout record reaches the model as a value it never saw (a false leak).
    import pandas as pd

    from privaudit.data import load_data
    from privaudit.textcolumns import encode_text

    tr = pd.DataFrame({"zone": ["10", "X1", "20", "10"], "a": [1.0, 2, 3, 4], "y": [0, 1, 0, 1]})
    ho = pd.DataFrame({"zone": [10.0, 20.0, 30.0], "a": [1.0, 2, 3], "y": [0, 1, 1]})
    train = load_data(tr, label="y", name="train", allow_text=True)
    holdout = load_data(ho, label="y", name="holdout", allow_text=True)
    coded_tr, coded_ho, codec = encode_text(train, holdout)
    assert codec is not None
    values = dict(codec.categories)[0]
    assert values.count("10") == 1 and 10.0 not in values[1:] and set(values) == {"10", "20", "X1", 30.0}
    assert list(codec.frame(coded_ho.X)["zone"]) == ["10", "20", 30.0]
    assert coded_tr.X[0, 0] == coded_ho.X[0, 0]
