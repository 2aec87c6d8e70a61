"""Rate-limited endpoints (issue 11, item 3): the HTTP adapter shrinks its batches on 429 until they fit,
and the guard says when a request can never fit its per-second quota."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from guard_fixtures import CLASSES, FakeMonitor, guard_config, make_keys, serve_guard
from privaudit.errors import EndpointError
from privaudit.guard.app import build_app
from privaudit.models.http import HttpSettings, HttpTarget
from servers import Recorder, iris_app, serve

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
X, Y = load_iris(return_X_y=True)
MODEL = LogisticRegression(max_iter=2000).fit(X, Y)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve(iris_app(MODEL, FEATURES, CLASSES, Recorder())) as base:
        yield base


def test_guard_says_a_request_can_never_fit_the_per_second_quota(tmp_path: Path, upstream: str) -> None:
    keys = make_keys(tmp_path / "keys.yaml", {"alice": "default"})
    cfg = guard_config(tmp_path, upstream, limits={"default": "20/second;1000/minute"})
    with serve_guard(build_app(cfg, monitor=FakeMonitor())) as base:
        big = httpx.post(base + "/v1/models/iris:predict", json={"instances": X[:64].tolist()},
                         headers={"X-API-Key": keys["alice"]})
        small = httpx.post(base + "/v1/models/iris:predict", json={"instances": X[:20].tolist()},
                           headers={"X-API-Key": keys["alice"]})
    assert big.status_code == 429
    message = big.json()["error"]
    assert "never" in message and "64" in message and "20" in message, message
    assert big.headers["retry-after"] == "1"  # a 20-record request fits once the 1 s window has emptied
    assert small.status_code == 200  # the refused request spent nothing


def test_default_batch_size_behind_a_20_rows_per_second_guard_completes(tmp_path: Path, upstream: str) -> None:
    keys = make_keys(tmp_path / "keys.yaml", {"alice": "default"})
    cfg = guard_config(tmp_path, upstream, limits={"default": "20/second"})
    with serve_guard(build_app(cfg, monitor=FakeMonitor())) as base:
        settings = HttpSettings.from_dict({"headers": {"X-API-Key": keys["alice"]}, "classes": CLASSES})
        with HttpTarget(base + "/v1/models/iris:predict", settings) as target:
            assert target.settings.batch_size == 64
            start = time.monotonic()
            out = target.predict(X[:100])
            elapsed = time.monotonic() - start
    np.testing.assert_allclose(out, MODEL.predict_proba(X[:100]), atol=1e-9)
    assert target.queries == 100
    assert elapsed >= 100 / 20 - 1.5  # the guard's rate was honoured, not dodged


def _always_429() -> Starlette:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def refuse(request: Request) -> Response:
        return JSONResponse({"error": "rate limit exceeded"}, status_code=429, headers={"Retry-After": "0"})

    return Starlette(routes=[Route("/health", health), Route("/m:predict", refuse, methods=["POST"])])


def test_a_single_record_refused_for_the_whole_retry_budget_names_batch_size_and_rate() -> None:
    with serve(_always_429()) as base:
        with HttpTarget(base + "/m:predict", HttpSettings.from_dict({"retries": 2, "backoff": 0.0})) as target:
            with pytest.raises(EndpointError) as info:
                target.predict(X[:8])
            sent = target.requests_sent
    message = str(info.value)
    assert "--batch-size" in message and "--rate" in message, message
    assert sent == 3 + 3  # 8 -> 4 -> 2 -> 1 record per request, then the 1-record request 3 times


# --- protocol mismatch (item 12) ---------------------------------------------------------------------


def _v1_only() -> Starlette:
    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def predict(request: Request) -> Response:
        body = await request.json()
        try:
            rows = body["instances"]
        except KeyError as exc:  # what a hand-written KServe v1 server answers to a v2 body
            return PlainTextResponse(f"Internal Server Error: KeyError: {exc}", status_code=500)
        return JSONResponse({"predictions": MODEL.predict_proba(np.asarray(rows)).tolist()})

    return Starlette(routes=[Route("/health", health), Route("/v1/models/m:predict", predict, methods=["POST"])])


def test_a_protocol_mismatch_is_named_at_once_with_the_flag_that_fixes_it() -> None:
    with serve(_v1_only()) as base:
        settings = HttpSettings.from_dict({"protocol": "v2", "backoff": 0.0})
        with HttpTarget(base + "/v1/models/m:predict", settings) as target:
            with pytest.raises(EndpointError) as info:
                target.predict(X[:5])
            assert target.requests_sent == 1  # not retried
        with HttpTarget(base + "/v1/models/m:predict", HttpSettings.from_dict({"protocol": "kserve-v1"})) as fixed:
            assert fixed.predict(X[:5]).shape == (5, 3)
    message = str(info.value)
    assert "sent v2" in message and "--protocol kserve-v1" in message, message


# --- label-only endpoints take their classes from the data (item 2) ----------------------------------


def _frames(names: list[str]) -> tuple[Any, Any]:
    import pandas as pd

    df = pd.DataFrame(X, columns=FEATURES)
    df["species"] = np.asarray(names, dtype=object)[Y]
    order = np.random.default_rng(0).permutation(len(df))
    return df.iloc[order[:75]].reset_index(drop=True), df.iloc[order[75:]].reset_index(drop=True)


@pytest.mark.parametrize("route", ["/labels:predict", "/top2:predict"])
def test_label_answers_take_the_classes_from_the_label_column(upstream: str, route: str) -> None:
    import privaudit

    train, holdout = _frames(list(CLASSES))
    report = privaudit.audit(upstream + route, train, holdout, label="species", attacks=["loss"], reference_models=0,
                             cache_dir=False, what_if=False, n_bootstrap=20)
    assert sorted(report.model.classes) == sorted(CLASSES)
    assert report.model.output_mode == ("label" if route.startswith("/labels") else "top_k")
    assert report.membership.train_accuracy > 0.9  # labels were matched to the right classes


def test_labels_the_data_lacks_name_the_classes_flag(upstream: str) -> None:
    import privaudit
    from privaudit.errors import PrivauditError

    train, holdout = _frames(["a", "b", "c"])
    with pytest.raises(PrivauditError) as info:
        privaudit.audit(upstream + "/labels:predict", train, holdout, label="species", attacks=["loss"],
                        reference_models=0, cache_dir=False, what_if=False)
    message = str(info.value)
    assert "--classes" in message and any(repr(c) in message for c in CLASSES), message
