"""Reports a newcomer reads (issue 11): CI-log width, Markdown cut between words and escaped,
console text that holds user data printed literally."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

import privaudit
from privaudit import datasets
from privaudit.report import render
from privaudit.report.console import render_summary
from privaudit.report.schema import Report
from tests.conftest import quiet_fit

ATTACKS = ["ensemble_online", "rmia_online", "lira_offline", "loss"]


@pytest.fixture(scope="module")
def report() -> Report:
    from sklearn.linear_model import LogisticRegression

    s = datasets.breast_cancer(seed=0)
    model = quiet_fit(LogisticRegression(max_iter=300), s.X_train, s.y_train)
    return privaudit.audit(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), reference_models=2,
                           attacks=ATTACKS, cache_dir=False, n_bootstrap=0, jobs=1, seed=0, model_name="demo")


def test_summary_table_in_a_ci_log_never_cuts_an_attack_name(report: Report, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    render_summary(report, Console(file=out, force_terminal=False, color_system=None))  # not a terminal: 80 wide
    text = out.getvalue()
    assert "…" not in text
    table = [line for line in text.splitlines() if line.startswith(("│", "┃"))]
    for name in ATTACKS:
        assert any(name in line for line in table), (name, text)


def test_summary_table_keeps_attack_names_whole_in_a_narrow_columns(report: Report, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out = io.StringIO()
    render_summary(report, Console(file=out, force_terminal=False, color_system=None))
    for name in ATTACKS:
        assert name in out.getvalue()


def test_markdown_summary_is_cut_between_words(report: Report) -> None:
    long = " ".join(f"word{i:03d}" for i in range(60))
    text = render(report.model_copy(update={"warnings": [long]}), "comment.md")
    line = next(line for line in text.splitlines() if line.startswith("- warning:"))
    shown = line.removeprefix("- warning: ").removesuffix("…")
    assert line.endswith("…") and len(shown) < len(long)
    assert all(word in long.split() for word in shown.split()), line  # no word cut in half


def test_markdown_escapes_user_strings(report: Report) -> None:
    evil = "<img src=x onerror=alert(1)> **bold** [link](http://x) a|b"
    text = render(report.model_copy(update={"model_name": "m`x<b>", "warnings": [evil]}), "comment.md")
    assert "<img" not in text and "<b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt; \\*\\*bold\\*\\* \\[link\\](http://x) a\\|b" in text
    assert "m\\`x&lt;b&gt;" in text.splitlines()[0]


def test_a_column_named_like_rich_markup_is_printed_literally(run: Any, tmp_path: Path) -> None:
    s = datasets.breast_cancer(seed=0)
    for part, X, y in (("train", s.X_train, s.y_train), ("holdout", s.X_holdout, s.y_holdout)):
        df = pd.DataFrame(X[:, :2], columns=["[/bold red]", "b\x1b[31m"])
        df["label"] = y
        df.to_csv(tmp_path / f"{part}.csv", index=False)
    # The label column is misnamed: a data error, found before the (missing) model is even looked for.
    r = run("audit", "--model", "nowhere.skops", "--train", tmp_path / "train.csv", "--holdout", tmp_path / "holdout.csv",
            "--label", "[bold]diagnosis")
    assert r.code == 2, r.err
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert "'[/bold red]'" in lines[0] and "[bold]diagnosis" in lines[0], lines[0]
    assert "\x1b" not in lines[0], lines[0]  # the escape character itself never reaches the terminal
