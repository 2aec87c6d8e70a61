"""The command line, driven in-process through ``privaudit.cli.main`` (plus one real subprocess).

Every user mistake must end with exit code 2 (3: nothing auditable), one ``error:`` line on stderr
naming the file/column/rows, no traceback, and no clobbered report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from privaudit import cli, datasets
from privaudit.errors import DataError
from tests.conftest import Run

LABEL = "diagnosis"
ADAM = "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"
FAST = ["--reference-models", "2", "--jobs", "1"]


def _quiet_fit(model: Any, X: Any, y: Any) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


@dataclass(frozen=True)
class Files:
    """Breast-cancer halves written as files, and a LogisticRegression fitted on the train half."""

    dir: Path
    train: Path
    holdout: Path
    train_pq: Path
    holdout_pq: Path
    train_npz: Path
    holdout_npz: Path
    model: Path
    n_train: int
    n_holdout: int
    names: tuple[str, ...]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    from sklearn.linear_model import LogisticRegression

    d = tmp_path_factory.mktemp("cli-data")
    s = datasets.breast_cancer(seed=0)
    names = s.feature_names
    frames = {}
    for part, X, y in (("train", s.X_train, s.y_train), ("holdout", s.X_holdout, s.y_holdout)):
        df = pd.DataFrame(X, columns=list(names))
        df[LABEL] = y
        df.to_csv(d / f"{part}.csv", index=False)
        df.to_parquet(d / f"{part}.parquet", index=False)
        np.savez(d / f"{part}.npz", X=X, y=y)
        frames[part] = df
    model = _quiet_fit(LogisticRegression(max_iter=200), frames["train"].drop(columns=[LABEL]), s.y_train)
    sio.dump(model, d / "m.skops")
    return Files(d, d / "train.csv", d / "holdout.csv", d / "train.parquet", d / "holdout.parquet",
                 d / "train.npz", d / "holdout.npz", d / "m.skops", len(s.X_train), len(s.X_holdout), names)


@pytest.fixture(autouse=True)
def _plain_terminal(plain_terminal: None) -> None:
    pass




def _audit(f: Files, *extra: Any, model: Any = None, train: Any = None, holdout: Any = None) -> list[Any]:
    return ["audit", "--model", model or f.model, "--train", train or f.train, "--holdout", holdout or f.holdout,
            "--label", LABEL, *FAST, *extra]


def assert_user_error(r: Run, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one non-empty line on stderr, starting with error:, containing every needle."""
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.err + r.out
    lines = [line for line in r.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.err}"
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def _report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.fixture
def module_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write a Python module into tmp_path and make it importable; forgotten again afterwards."""
    made: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        made.append(name)
        return name

    yield write
    for name in made:
        sys.modules.pop(name, None)


LABEL_ONLY_SOURCE = """
    import numpy as np

    def predict(X):
        # A label-only "model": thresholds the first feature (mean radius).
        return (np.asarray(X)[:, 0] < 14.0).astype(np.int64)

    predict.classes = [0, 1]
"""


# --- happy paths --------------------------------------------------------------------------------


def test_audit_csv_writes_a_complete_json_report(run: Any, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "-o", out))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    rep = _report(out)
    assert rep["schema_version"] == 1
    m = rep["membership"]
    names = [a["name"] for a in m["attacks"]]
    assert names and m["best"] in names
    assert set(names) == {"ensemble_online", "rmia_online", "lira_online", "rmia_offline", "lira_offline", "shadow", "loss"}
    for a in m["attacks"]:
        assert 0.0 <= a["auc"] <= 1.0
    assert rep["model"]["output_mode"] == "probabilities"
    assert rep["model"]["format"] == "skops"
    assert rep["data"]["train"] == files.n_train
    assert rep["data"]["holdout"] == files.n_holdout
    assert rep["data"]["label"] == LABEL
    assert m["reference_models_trained"] == 2
    assert str(out) in r.out  # "wrote r.json"


def test_report_records_the_command_line_it_was_given(run: Any, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = [str(a) for a in _audit(files, "--no-cache", "--attacks", "loss", "-o", out)]
    r = run(*argv)
    assert r.code == 0, r.err
    assert _report(out)["provenance"]["command_line"] == ["privaudit", *argv]


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_parquet_and_npz_inputs(run: Any, files: Files, tmp_path: Path, fmt: str) -> None:
    train, holdout = (files.train_pq, files.holdout_pq) if fmt == "parquet" else (files.train_npz, files.holdout_npz)
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "--attacks", "loss", "-o", out, train=train, holdout=holdout))
    assert r.code == 0, r.err
    rep = _report(out)
    assert rep["data"]["train"] == files.n_train and rep["data"]["holdout"] == files.n_holdout
    assert rep["data"]["train_source"] == str(train)
    assert rep["model"]["output_mode"] == "probabilities"
    assert [a["name"] for a in rep["membership"]["attacks"]] == ["loss"]


def test_claimed_epsilon_gives_a_dp_verdict(run: Any, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "--attacks", "loss,rmia_online", "--claimed-epsilon", "1.0", "-o", out))
    assert r.code == 0, r.err
    dp = _report(out)["membership"]["dp_claim"]
    assert dp is not None
    assert dp["claimed_epsilon"] == 1.0
    assert dp["verdict"] in ("consistent", "contradicted", "indicative")
    assert dp["message"]
    assert "DP claim" in r.out


def test_reference_scores_are_cached_between_runs(run: Any, files: Files, tmp_path: Path) -> None:
    cache = tmp_path / "cache-here"
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run(*_audit(files, "--cache-dir", cache, "-o", first)).code == 0
    assert run(*_audit(files, "--cache-dir", cache, "-o", second)).code == 0
    assert _report(first)["membership"]["reference_models_trained"] == 2
    assert _report(second)["membership"]["reference_models_trained"] == 0
    assert len(list(cache.glob("*.npy"))) == 2
    a, b = _report(first)["membership"]["attacks"], _report(second)["membership"]["attacks"]
    assert [x["auc"] for x in a] == [x["auc"] for x in b]  # cached scores give the same answer


def test_callable_model_module_attr(run: Any, files: Files, tmp_path: Path, module_in: Any) -> None:
    name = module_in("pa_cli_proba", f"""
        import pandas as pd
        import skops.io

        _model = skops.io.load({str(files.model)!r})

        def predict_proba(X):
            # The fitted model knows its column names; give them back to keep sklearn quiet.
            return _model.predict_proba(pd.DataFrame(X, columns=_model.feature_names_in_))
    """)
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "-o", out, model=f"{name}:predict_proba"))
    assert r.code == 0, r.err
    rep = _report(out)
    assert rep["model"]["format"] == "callable"
    assert rep["model"]["output_mode"] == "probabilities"
    assert rep["model"]["classes"] == ["0", "1"]
    assert "surrogate" in rep["membership"]["reference_recipe"]
    assert rep["data"]["train"] == files.n_train


def test_joblib_model_loads_with_allow_pickle(run: Any, files: Files, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(sio.load(files.model), path)
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "--allow-pickle", "--attacks", "loss", "-o", out, model=path))
    assert r.code == 0, r.err
    assert _report(out)["model"]["format"] == "pickle"


@pytest.fixture(scope="module")
def mlp_skops(files: Files) -> Path:
    from sklearn.neural_network import MLPClassifier

    df = pd.read_csv(files.train)
    model = _quiet_fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
                       df.drop(columns=[LABEL]), df[LABEL])
    path = files.dir / "mlp.skops"
    sio.dump(model, path)
    assert sio.get_untrusted_types(file=path) == [ADAM]
    return path


def test_trusting_the_listed_skops_type_loads_the_model(run: Any, files: Files, mlp_skops: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    r = run(*_audit(files, "--no-cache", "--trust", ADAM, "--attacks", "loss", "-o", out, model=mlp_skops))
    assert r.code == 0, r.err
    assert _report(out)["model"]["format"] == "skops"


@pytest.mark.slow
def test_demo(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the demo writes privaudit-demo.html into the working directory
    r = run("demo")
    assert (tmp_path / "privaudit-demo.html").is_file()
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert "Membership inference audit" in r.out
    text = " ".join(r.out.split())
    assert "DP claim" not in text  # nobody claimed differential privacy
    assert "demo-readmission-mlp: ATLAS-EXF-003 FAIL (high); attack_power FAIL" in text
    assert "overfitting FAIL" in text
    assert "demo-readmission-logreg: ATLAS-EXF-003 PASS (info); attack_power PASS" in text
    assert "TPR@x%FPR:" in text and "eps lower bound / max:" in text  # the table's legend


# --- user errors: exit 2, one line ----------------------------------------------------------------


def test_missing_file(run: Any, files: Files, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert_user_error(run(*_audit(files, "--no-cache", train=missing)), 2, str(missing), "no such file")


def test_missing_model_file(run: Any, files: Files, tmp_path: Path) -> None:
    missing = tmp_path / "gone.skops"
    assert_user_error(run(*_audit(files, "--no-cache", model=missing)), 2, str(missing))


def test_empty_csv(run: Any, files: Files, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_user_error(run(*_audit(files, "--no-cache", holdout=empty)), 2, str(empty), "empty")


def test_header_only_csv(run: Any, files: Files, tmp_path: Path) -> None:
    header = tmp_path / "header.csv"
    header.write_text(",".join([*files.names, LABEL]) + "\n")
    assert_user_error(run(*_audit(files, "--no-cache", holdout=header)), 2, str(header), "no data rows")


def test_label_column_missing(run: Any, files: Files) -> None:
    r = run("audit", "--model", files.model, "--train", files.train, "--holdout", files.holdout,
            "--label", "outcome", *FAST, "--no-cache")
    assert_user_error(r, 2, str(files.train), "'outcome'", "no label column")


def test_mismatched_columns_between_train_and_holdout(run: Any, files: Files, tmp_path: Path) -> None:
    dropped = files.names[3]
    holdout = tmp_path / "holdout-fewer.csv"
    pd.read_csv(files.holdout).drop(columns=[dropped]).to_csv(holdout, index=False)
    assert_user_error(run(*_audit(files, "--no-cache", holdout=holdout)), 2, str(holdout), repr(dropped))


def test_missing_values_for_a_model_that_cannot_take_nan(run: Any, files: Files, tmp_path: Path) -> None:
    col = files.names[0]
    df = pd.read_csv(files.train)
    df.loc[[3, 17], col] = np.nan
    train = tmp_path / "train-gaps.csv"
    df.to_csv(train, index=False)
    assert ",," in train.read_text() or "\n," in train.read_text()  # really blank cells
    assert_user_error(run(*_audit(files, "--no-cache", train=train)), 2, str(train), repr(col), "rows 3, 17")


def test_labels_the_model_does_not_know(run: Any, files: Files, tmp_path: Path) -> None:
    df = pd.read_csv(files.holdout)
    df.loc[[2, 5], LABEL] = 7
    holdout = tmp_path / "holdout-labels.csv"
    df.to_csv(holdout, index=False)
    assert_user_error(run(*_audit(files, "--no-cache", holdout=holdout)), 2,
                      str(holdout), repr(LABEL), "7", "rows 2, 5")


def test_joblib_model_refused_without_allow_pickle(run: Any, files: Files, tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump(sio.load(files.model), path)
    line = assert_user_error(run(*_audit(files, "--no-cache", model=path)), 2, str(path), "--allow-pickle")
    assert "skops" in line


def test_untrusted_skops_type_is_refused_and_named(run: Any, files: Files, mlp_skops: Path) -> None:
    line = assert_user_error(run(*_audit(files, "--no-cache", model=mlp_skops)), 2, str(mlp_skops), ADAM)
    assert "--trust" in line


def test_regressor_is_not_a_classifier(run: Any, files: Files, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    df = pd.read_csv(files.train)
    path = tmp_path / "reg.skops"
    sio.dump(LinearRegression().fit(df.drop(columns=[LABEL]), df[LABEL]), path)
    assert_user_error(run(*_audit(files, "--no-cache", model=path)), 2, str(path), "not a classifier")


def test_unknown_attack_name(run: Any, files: Files) -> None:
    assert_user_error(run(*_audit(files, "--no-cache", "--attacks", "loss,lira_onlin")), 2,
                      "lira_onlin", "--attacks")


def test_unsupported_output_extension(run: Any, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "r.pdf"
    assert_user_error(run(*_audit(files, "--no-cache", "-o", out)), 2, str(out), ".json")
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--frobnicate"], ["--seed", "abc"]], ids=["unknown-option", "bad-integer"])
def test_usage_errors_exit_2(run: Any, files: Files, extra: list[str]) -> None:
    r = run(*_audit(files, "--no-cache", *extra))
    assert r.code == 2, r.err
    assert "Traceback" not in r.err + r.out
    assert "internal error" not in r.err
    assert extra[0] in r.err


def test_no_arguments_shows_help_without_an_internal_error(run: Any) -> None:
    r = run()
    assert r.code in (0, 2), r.err
    assert "internal error" not in r.err and "Traceback" not in r.err
    assert "Usage" in r.out + r.err and "audit" in r.out + r.err


def test_missing_required_option_exits_2(run: Any, files: Files) -> None:
    r = run("audit", "--train", files.train, "--holdout", files.holdout, "--label", LABEL)
    assert r.code == 2, r.err
    assert "internal error" not in r.err
    assert "--model" in r.err


def test_debug_shows_the_traceback_instead(run: Any, files: Files, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="no such file"):
        cli.main([str(a) for a in _audit(files, "--no-cache", "--debug", train=missing)])


def test_failed_run_does_not_clobber_an_existing_report(run: Any, files: Files, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")
    r = run(*_audit(files, "--no-cache", "-o", out, holdout=tmp_path / "nope.csv"))
    assert r.code == 2
    assert out.read_text() == "old"
    # also when the failure comes late, after the target has been queried
    df = pd.read_csv(files.holdout)
    df.loc[0, LABEL] = 9
    bad = tmp_path / "late.csv"
    df.to_csv(bad, index=False)
    assert run(*_audit(files, "--no-cache", "-o", out, holdout=bad)).code == 2
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".r.json")] == []  # no temp file left


# --- nothing auditable: exit 3 ----------------------------------------------------------------------


def test_label_only_callable_with_score_attacks_is_nothing_auditable(run: Any, files: Files, module_in: Any) -> None:
    name = module_in("pa_cli_labels", LABEL_ONLY_SOURCE)
    r = run(*_audit(files, "--no-cache", "--attacks", "lira_online", model=f"{name}:predict"))
    assert r.code == 3, r.err
    assert "Traceback" not in r.err + r.out
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error:") and "lira_online" in last and "label" in last


def test_installed_command_prints_no_traceback(files: Files, tmp_path: Path) -> None:
    """The real console script, in a fresh process, with the callable module in its working directory."""
    (tmp_path / "pa_cli_sub.py").write_text(textwrap.dedent(LABEL_ONLY_SOURCE))
    out = tmp_path / "r.json"
    out.write_text("old")
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("PRIVAUDIT_DEBUG", None)
    proc = subprocess.run(
        ["privaudit", *map(str, _audit(files, "--no-cache", "--attacks", "lira_online", "-o", out,
                                       model="pa_cli_sub:predict"))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no attack could run")
    assert out.read_text() == "old"
