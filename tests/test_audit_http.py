"""Black-box audits of a memorising model behind a real local HTTP server (uvicorn + Starlette)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from servers import Recorder, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import privaudit
from privaudit import cli, datasets
from privaudit.attacks.membership.label_only import PERTURBATIONS
from privaudit.errors import ConfigError, QueryBudgetExceeded

CLASSES = [0, 1, 2, 3]
N_LABEL = 100  # records per side for the label-only tests: label_only sends 24 queries per record


@dataclass(frozen=True)
class Case:
    model: Any
    train: tuple[np.ndarray, np.ndarray]
    holdout: tuple[np.ndarray, np.ndarray]
    feature_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.train[0]) + len(self.holdout[0])

    def small(self, k: int = N_LABEL) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        return (self.train[0][:k], self.train[1][:k]), (self.holdout[0][:k], self.holdout[1][:k])


@pytest.fixture(scope="module")
def case() -> Case:
    """A random forest fitted to certainty on noisy records: its training half is easy to spot."""
    from sklearn.ensemble import RandomForestClassifier

    s = datasets.purchase_like(1200, n_features=40, n_classes=4, flip=0.3, seed=3)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(s.X_train, s.y_train)
    assert list(model.classes_) == CLASSES
    return Case(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), s.feature_names)


def model_app(model: Any, rec: Recorder, stderr_at_first_request: dict[str, str]) -> Starlette:
    """One model served four ways: full probabilities, rounded, top-1, and label only.

    On each route's first request the app notes what had been written to stderr so far (the tests
    capture it in memory), which shows what the user had been told before any record left.
    """

    async def rows(request: Request, route: str) -> np.ndarray:
        if route not in stderr_at_first_request:
            getvalue = getattr(sys.stderr, "getvalue", None)
            stderr_at_first_request[route] = getvalue() if getvalue is not None else ""
        instances = (await request.json())["instances"]
        rec.batches[route].append(len(instances))
        return np.asarray(instances, dtype=np.float64)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def probabilities(request: Request) -> Response:
        return JSONResponse({"predictions": model.predict_proba(await rows(request, "v1")).tolist()})

    async def rounded(request: Request) -> Response:
        p = np.round(model.predict_proba(await rows(request, "rounded")), 1)
        return JSONResponse({"predictions": p.tolist()})

    async def top1(request: Request) -> Response:
        p = model.predict_proba(await rows(request, "top1"))
        best = p.argmax(axis=1)
        return JSONResponse({"predictions": [{str(model.classes_[j]): float(p[i, j])} for i, j in enumerate(best)]})

    async def labels(request: Request) -> Response:
        return JSONResponse({"predictions": [int(c) for c in model.predict(await rows(request, "labels"))]})

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models/m:predict", probabilities, methods=["POST"]),
        Route("/v1/models/rounded:predict", rounded, methods=["POST"]),
        Route("/v1/models/top1:predict", top1, methods=["POST"]),
        Route("/v1/models/labels:predict", labels, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def first_stderr() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def base(case: Case, recorder: Recorder, first_stderr: dict[str, str]) -> Iterator[str]:
    with serve(model_app(case.model, recorder, first_stderr)) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh(recorder: Recorder, first_stderr: dict[str, str]) -> None:
    recorder.reset()
    first_stderr.clear()


def _audit(url: str, train: Any, holdout: Any, **kw: Any) -> privaudit.Report:
    kw.setdefault("reference_models", 2)
    return privaudit.audit(url, train, holdout, cache_dir=False, seed=0, n_bootstrap=20, jobs=1, **kw)


# --- output modes ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_kserve_v1_probabilities_membership_found_with_surrogates(base: str, case: Case, recorder: Recorder) -> None:
    url = base + "/v1/models/m:predict"
    report = privaudit.audit(url, case.train, case.holdout, reference_models=2, cache_dir=False, seed=0)
    m = report.membership
    best = next(a for a in m.attacks if a.name == m.best)
    assert best.auc > 0.8, [(a.name, a.auc) for a in m.attacks]
    assert report.model.format == "http"
    assert report.model.path == url
    assert report.model.output_mode == "probabilities" and report.model.rounding is None
    assert m.reference_recipe is not None and "surrogate" in m.reference_recipe
    assert m.reference_models_trained == 2
    assert {a.name for a in m.attacks} == {"ensemble_online", "rmia_online", "lira_online", "rmia_offline", "lira_offline", "shadow", "loss"}
    assert report.data.train == len(case.train[0]) and report.data.holdout == len(case.holdout[0])
    # the score attacks send nothing: the endpoint saw each record exactly once
    assert recorder.rows("v1") == case.n
    assert all(a.queries == 0 for a in m.attacks)


def test_rounded_probabilities_are_detected(base: str, case: Case) -> None:
    report = _audit(base + "/v1/models/rounded:predict", case.train, case.holdout, attacks=["loss", "rmia_offline"])
    assert report.model.output_mode == "probabilities"
    assert report.model.rounding == 1
    assert {a.name for a in report.membership.attacks} == {"loss", "rmia_offline"}


def test_top1_endpoint_with_classes(base: str, case: Case, recorder: Recorder) -> None:
    report = _audit(base + "/v1/models/top1:predict", case.train, case.holdout, attacks=["loss", "rmia_offline"],
                    http={"classes": CLASSES})
    assert report.model.output_mode == "top_k"
    assert report.model.k == 1
    assert report.model.classes == [str(c) for c in CLASSES]
    assert {a.name for a in report.membership.attacks} == {"loss", "rmia_offline"}
    assert recorder.rows("top1") == case.n


def test_label_only_endpoint_runs_the_label_only_attack(base: str, case: Case, recorder: Recorder) -> None:
    train, holdout = case.small()
    n = len(train[0]) + len(holdout[0])
    report = _audit(base + "/v1/models/labels:predict", train, holdout,
                    http={"classes": CLASSES, "batch_size": 400})
    assert report.model.output_mode == "label"
    attacks = {a.name: a for a in report.membership.attacks}
    assert "label_only" in attacks, report.membership.skipped
    assert attacks["label_only"].queries == n * PERTURBATIONS
    assert attacks["label_only"].auc > 0.6
    assert recorder.rows("labels") == n + n * PERTURBATIONS


# --- query budget -----------------------------------------------------------------------------------


def test_budget_below_the_records_refuses_before_sending_anything(base: str, case: Case, recorder: Recorder) -> None:
    with pytest.raises(QueryBudgetExceeded, match="--max-queries"):
        _audit(base + "/v1/models/m:predict", case.train, case.holdout, attacks=["loss"],
               http={"max_queries": case.n - 1})
    assert recorder.rows("v1") == 0


def test_budget_for_predictions_only_skips_label_only(base: str, case: Case, recorder: Recorder) -> None:
    train, holdout = case.small()
    n = len(train[0]) + len(holdout[0])
    report = _audit(base + "/v1/models/labels:predict", train, holdout,
                    http={"classes": CLASSES, "max_queries": n + 50})
    assert report.model.output_mode == "label"
    skipped = {s.name: s.reason for s in report.membership.skipped}
    assert "label_only" in skipped, report.membership
    assert re.search(r"max[-_]queries", skipped["label_only"]), skipped["label_only"]
    assert str(n * PERTURBATIONS) in skipped["label_only"]
    assert [a.name for a in report.membership.attacks] == ["loss"]
    assert recorder.rows("labels") == n  # not one perturbed record was sent


def test_unknown_attack_is_refused_before_querying_the_endpoint(base: str, case: Case, recorder: Recorder) -> None:
    with pytest.raises(ConfigError, match="lira_onlin"):
        _audit(base + "/v1/models/m:predict", case.train, case.holdout, attacks=["loss", "lira_onlin"])
    assert recorder.rows("v1") == 0  # a typo must not cost a full pass of queries


# --- command line -----------------------------------------------------------------------------------


def _csv(path: Path, data: tuple[np.ndarray, np.ndarray], names: tuple[str, ...]) -> Path:
    df = pd.DataFrame(data[0], columns=list(names))
    df["cluster"] = data[1]
    df.to_csv(path, index=False)
    return path


def test_cli_announces_the_queries_before_sending_them(base: str, case: Case, recorder: Recorder, tmp_path: Path,
                                                     first_stderr: dict[str, str], capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    train, holdout = case.small()
    n = len(train[0]) + len(holdout[0])
    out = tmp_path / "r.json"
    argv = ["audit", "--model", base + "/v1/models/labels:predict",
            "--train", str(_csv(tmp_path / "train.csv", train, case.feature_names)),
            "--holdout", str(_csv(tmp_path / "holdout.csv", holdout, case.feature_names)),
            "--label", "cluster", "--classes", ",".join(map(str, CLASSES)), "--batch-size", "400",
            "--reference-models", "0", "--no-cache", "-o", str(out)]
    code: Any = 0
    try:
        cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    stdout, stderr = capsys.readouterr()
    assert code in (0, None), stderr
    text = stdout + stderr
    first = re.search(rf"\b{n} queries\b", text)
    extra = re.search(rf"\b{n * PERTURBATIONS} more queries\b", text)
    assert first is not None, text
    assert extra is not None, text
    assert first.start() < extra.start()  # the initial count is announced before label_only's
    # ...and before the first record reached the endpoint
    assert re.search(rf"\b{n} queries\b", first_stderr["labels"]), first_stderr
    assert f"{n * PERTURBATIONS} more queries" not in first_stderr["labels"]  # snapshot taken early, not at the end
    assert recorder.rows("labels") == n + n * PERTURBATIONS
    report = privaudit.Report.from_json(out.read_text())
    assert report.model.format == "http" and report.model.output_mode == "label"
    assert {a.name for a in report.membership.attacks} == {"loss", "label_only"}
