"""HttpTarget against a real uvicorn server serving an iris LogisticRegression."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from servers import TOKEN, Recorder, iris_app, serve
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from privaudit.errors import ConfigError, DataError, EndpointError, QueryBudgetExceeded
from privaudit.models import LoadOptions, load_model
from privaudit.models._http_protocols import WireFormat, decode
from privaudit.models.http import HttpSettings, HttpTarget
from privaudit.target import Target

IRIS = load_iris()
X = IRIS.data.astype(np.float64)
NAMES = list(IRIS.target_names)  # setosa, versicolor, virginica
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MODEL = LogisticRegression(max_iter=1000).fit(X, IRIS.target)
PROBA = MODEL.predict_proba(X)
FAST = {"backoff": 0.01}  # keep retry tests quick; the schedule itself is tested separately


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def base(recorder: Recorder) -> Iterator[str]:
    with serve(iris_app(MODEL, FEATURES, NAMES, recorder)) as url:
        yield url


@pytest.fixture(autouse=True)
def fresh(recorder: Recorder) -> None:
    recorder.reset()  # per-test counters: "fails the first 2 times" means per test


@pytest.fixture
def make(base: str) -> Iterator[Any]:
    """Build targets that are closed at the end of the test, whatever happens."""
    made: list[HttpTarget] = []

    def build(path: str, **settings: Any) -> HttpTarget:
        target = HttpTarget(base + path, HttpSettings.from_dict(settings))
        made.append(target)
        return target

    yield build
    for t in made:
        t.close()


# --- protocols ----------------------------------------------------------------------------------


def test_kserve_v1_matches_predict_proba(make: Any, recorder: Recorder) -> None:
    t = make("/v1/models/iris:predict")
    assert t.protocol == "kserve-v1"
    with pytest.raises(EndpointError, match="--classes"):
        t.classes  # noqa: B018 -- unknown until the first answer
    out = t.predict(X)
    assert isinstance(t, Target)
    assert out.dtype == np.float64 and out.shape == (150, 3)
    np.testing.assert_allclose(out, PROBA)
    np.testing.assert_array_equal(t.classes, [0, 1, 2])  # inferred from the answer's width
    assert t.queries == 150 and t.requests_sent == 3
    assert sorted(recorder.batches["v1"]) == [22, 64, 64]  # concurrent: arrival order varies


def test_v2_picked_automatically_from_the_url(make: Any, recorder: Recorder) -> None:
    t = make("/v2/models/iris/infer", batch_size=50, classes=NAMES)
    assert t.protocol == "v2"
    np.testing.assert_allclose(t.predict(X), PROBA)  # the probabilities output, not the labels one
    assert recorder.batches["v2"] == [50, 50, 50]
    assert list(t.classes) == NAMES


def test_custom_json_api_with_dotted_paths(make: Any, recorder: Recorder) -> None:
    t = make("/api/score", protocol="custom", input_field="data.rows", output_field="result.scores", batch_size=100)
    np.testing.assert_allclose(t.predict(X), PROBA)
    assert sorted(recorder.batches["custom"]) == [50, 100]


def test_custom_api_with_rows_as_objects(make: Any, recorder: Recorder) -> None:
    t = make(
        "/api/score", protocol="custom", input_field="data.rows", output_field="result.scores",
        row_format="dict", feature_names=FEATURES,
    )
    np.testing.assert_allclose(t.predict(X[:10]), PROBA[:10])
    with pytest.raises(DataError, match="feature_names"):
        t.predict(X[:3, :2])


def test_top_k_answers_become_nan_for_missing_classes(make: Any) -> None:
    t = make("/top2:predict", classes=NAMES)
    out = t.predict(X)
    assert out.shape == (150, 3)
    assert np.all(np.isnan(out).sum(axis=1) == 1)  # exactly one class left out per record
    top2 = np.argsort(-PROBA, axis=1)[:, :2]
    np.testing.assert_allclose(np.take_along_axis(out, top2, axis=1), np.take_along_axis(PROBA, top2, axis=1))


def test_label_only_answers_become_class_indices(make: Any) -> None:
    t = make("/labels:predict", classes=NAMES)
    out = t.predict(X)
    assert out.dtype == np.int64 and out.shape == (150,)
    np.testing.assert_array_equal(out, PROBA.argmax(axis=1))


@pytest.mark.parametrize("path", ["/labels:predict", "/top2:predict"])
def test_labels_without_classes_ask_for_them(make: Any, path: str) -> None:
    with pytest.raises(EndpointError, match="--classes"):
        make(path).predict(X[:5])


def test_unknown_label_is_reported(make: Any) -> None:
    with pytest.raises(EndpointError, match="not among the classes .*--classes"):
        make("/labels:predict", classes=["setosa", "versicolor", "other"]).predict(X)


def test_loader_registered_for_http_urls(base: str) -> None:
    loaded = load_model(base + "/v1/models/iris:predict", LoadOptions(http={"batch_size": 75}))
    target = loaded.target
    try:
        assert loaded.format == "http" and isinstance(target, HttpTarget)
        np.testing.assert_allclose(target.predict(X), PROBA)
        assert target.requests_sent == 2
    finally:
        target.close()


def test_records_json_cannot_carry_are_refused(make: Any, recorder: Recorder) -> None:
    bad = X[:4].copy()
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make("/v1/models/iris:predict").predict(bad)
    assert recorder.rows("v1") == 0


@pytest.mark.parametrize(
    ("rows", "classes", "expected"),
    [
        ([[0.2, 0.8], [None, 1.0]], None, [[0.2, 0.8], [np.nan, 1.0]]),
        ([1, 0.0, "1"], [0, 1], [1, 0, 1]),  # JSON spellings of one label all find the class
        ([{"1": 0.7}, {"0": 0.6, "1": 0.4}], [0, 1], [[np.nan, 0.7], [0.6, 0.4]]),
        ([[{"label": "b", "score": 0.9}]], ["a", "b", "c"], [[np.nan, 0.9, np.nan]]),  # Hugging Face style
    ],
)
def test_decode_answer_shapes(rows: list[Any], classes: list[Any] | None, expected: list[Any]) -> None:
    out, _ = decode(rows, None if classes is None else np.asarray(classes))
    np.testing.assert_array_equal(out, np.asarray(expected))


def test_v2_label_tensor_and_malformed_answers() -> None:
    wire = WireFormat("v2")
    label_out = {"outputs": [{"name": "predict", "shape": [3, 1], "datatype": "INT64", "data": [2, 0, 1]}]}
    assert wire.extract(label_out, 3) == [2, 0, 1]
    with pytest.raises(EndpointError, match="sent 2 records but got 3"):
        wire.extract(label_out, 2)
    with pytest.raises(EndpointError, match="outputs"):
        wire.extract({"predictions": [1]}, 1)
    with pytest.raises(EndpointError, match="mixes"):
        decode([[0.1, 0.9], 1], np.asarray([0, 1]))


# --- batching, concurrency, pacing, budget ------------------------------------------------------


def test_concurrency_keeps_input_order(make: Any, recorder: Recorder) -> None:
    t = make("/shuffled:predict", batch_size=10, concurrency=4)
    np.testing.assert_allclose(t.predict(X), PROBA)
    assert recorder.batches["shuffled"] == [10] * 15
    assert recorder.peak_in_flight > 1  # really concurrent
    assert t.queries == 150 and t.requests_sent == 15


def test_rate_cap_paces_records(make: Any) -> None:
    t = make("/v1/models/iris:predict", batch_size=10, concurrency=4, rate=100)
    start = time.monotonic()
    np.testing.assert_allclose(t.predict(X[:40]), PROBA[:40])
    assert time.monotonic() - start >= 0.28  # 4 batches of 10 at 100 records/s: sent at 0, .1, .2, .3 s


def test_max_queries_refuses_before_sending(make: Any, recorder: Recorder) -> None:
    t = make("/v1/models/iris:predict", max_queries=100, batch_size=32)
    t.predict(X[:60])
    with pytest.raises(QueryBudgetExceeded, match="--max-queries 100"):
        t.predict(X[60:110])
    assert recorder.rows("v1") == 60 and t.queries == 60
    t.predict(X[60:100])  # exactly reaching the cap is allowed
    assert recorder.rows("v1") == 100 and t.queries == 100


# --- failures -----------------------------------------------------------------------------------


def test_503_is_retried_and_counted(make: Any, recorder: Recorder) -> None:
    t = make("/flaky:predict", **FAST)
    np.testing.assert_allclose(t.predict(X[:20]), PROBA[:20])
    assert recorder.calls["flaky"] == 3 and t.requests_sent == 3
    assert t.queries == 20  # the retried batch counts once


def test_429_honours_retry_after(make: Any) -> None:
    t = make("/throttled:predict", **FAST)
    start = time.monotonic()
    t.predict(X[:5])
    # The refused 5-record request is resent as requests of at most 2 (halved): 2 + 2 + 1.
    assert time.monotonic() - start >= 0.29 and t.requests_sent == 1 + 3


def test_retries_give_up_with_the_last_error(make: Any, recorder: Recorder) -> None:
    t = make("/down:predict", retries=2, **FAST)
    with pytest.raises(EndpointError, match=r"failed 3 time\(s\).*HTTP 503: overloaded"):
        t.predict(X[:5])
    assert recorder.calls["down"] == 3 and t.queries == 0


def test_400_fails_at_once_quoting_the_body(make: Any, recorder: Recorder) -> None:
    t = make("/bad:predict", retries=4, backoff=5)
    start = time.monotonic()
    with pytest.raises(EndpointError, match="HTTP 400") as info:
        t.predict(X[:5])
    assert time.monotonic() - start < 1.0 and recorder.calls["bad"] == 1
    message = str(info.value)
    assert "expected 5 features" in message and "\n" not in message


def test_connection_refused_is_retried_then_reported() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with HttpTarget(f"http://127.0.0.1:{port}/v1/models/m:predict", HttpSettings(retries=1, backoff=0.01)) as t:
        with pytest.raises(EndpointError, match="ConnectError"):
            t.predict(X[:2])
        assert t.requests_sent == 2


# --- auth ---------------------------------------------------------------------------------------


def test_bearer_token_from_env(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_TOKEN", TOKEN)
    t = make("/auth:predict", auth_env="IRIS_TOKEN")
    np.testing.assert_allclose(t.predict(X[:8]), PROBA[:8])
    assert TOKEN not in repr(t)


def test_value_with_scheme_is_sent_as_is(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_TOKEN", f"Bearer {TOKEN}")
    np.testing.assert_allclose(make("/auth:predict", auth_env="IRIS_TOKEN").predict(X[:3]), PROBA[:3])


def test_custom_auth_header_is_sent_raw(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IRIS_KEY", TOKEN)
    t = make("/apikey:predict", auth_env="IRIS_KEY", auth_header="X-Api-Key")
    np.testing.assert_allclose(t.predict(X[:3]), PROBA[:3])


def test_wrong_credential_fails_without_leaking_it(make: Any, monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    monkeypatch.setenv("IRIS_TOKEN", "wrong-token")
    with pytest.raises(EndpointError, match="HTTP 401.*IRIS_TOKEN") as info:
        make("/auth:predict", auth_env="IRIS_TOKEN").predict(X[:3])
    assert "wrong-token" not in str(info.value) and recorder.calls["auth"] == 1


def test_missing_auth_env_is_a_config_error(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IRIS_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="IRIS_TOKEN"):
        load_model(base + "/auth:predict", LoadOptions(http={"auth_env": "IRIS_TOKEN"}))


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"batchsize": 10}, "unknown HTTP setting 'batchsize'"),
        ({"protocol": "grpc"}, "protocol"),
        ({"batch_size": 0}, "--batch-size"),
        ({"concurrency": True}, "concurrency"),
        ({"timeout": "soon"}, "timeout"),
        ({"rate": -1}, "rate"),
        ({"input_field": "data.rows"}, "--protocol custom"),
        ({"protocol": "custom", "row_format": "dict"}, "feature_names"),
        ({"classes": ["a", "a"]}, "classes"),
        ({"headers": {"X-Team": 3}}, "headers"),
    ],
)
def test_bad_settings_are_config_errors(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        HttpSettings.from_dict(raw)


def test_settings_accept_strings_from_a_command_line() -> None:
    s = HttpSettings.from_dict({"batch_size": "16", "rate": "2.5", "max_queries": "1000", "headers": {"X-Team": "a"}})
    assert (s.batch_size, s.rate, s.max_queries, s.headers) == (16, 2.5, 1000, (("X-Team", "a"),))


def test_loader_ignores_other_specs_and_rejects_bad_keys(base: str) -> None:
    from privaudit.models.http import load_http

    assert load_http("model.skops", LoadOptions()) is None
    with pytest.raises(ConfigError, match="unknown HTTP setting 'retry'"):
        load_model(base + "/v1/models/iris:predict", LoadOptions(http={"retry": 3}))


def test_backoff_is_seeded_and_exponential() -> None:
    def schedule() -> list[float]:
        with HttpTarget("http://127.0.0.1:9/x", HttpSettings(backoff=1.0, seed=7)) as t:
            return [t._backoff(a, None) for a in range(4)]

    first, second = schedule(), schedule()
    assert first == second
    for attempt, delay in enumerate(first):
        assert 2**attempt / 2 <= delay <= 2**attempt
