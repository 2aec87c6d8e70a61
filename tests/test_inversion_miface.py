"""MI-Face model inversion with known answers on scikit-learn's bundled 8x8 digits.

A digits MLP must give up recognisable class images (white box and through a live HTTP server,
whatever the output hardening short of labels); a constant model must give up nothing; analytic
gradients must match finite differences.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from servers import Recorder, serve
from sklearn.datasets import load_digits, make_classification
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from privaudit.attacks.inversion import (
    LABEL_ONLY_REASON,
    ClassReconstruction,
    InversionResult,
    MIFaceConfig,
    run_inversion,
    to_report_dict,
    white_box_gradient,
)
from privaudit.attacks.inversion.evaluate import model_family, score, time_to_reconstruct, train_evaluator
from privaudit.attacks.inversion.miface import log_odds_cost, nes_gradient, total_variation, white_box_oracle
from privaudit.errors import ConfigError
from privaudit.models.http import HttpSettings, HttpTarget
from privaudit.models.pycallable import CallableTarget

SHAPE = (8, 8)
REPORT_KEYS = {"mode", "reason", "attack_accuracy", "attack_accuracy_top5", "queries_total", "seconds", "classes"}
CLASS_KEYS = {"class", "evaluator_prediction", "evaluator_confidence", "queries", "nearest_train_distance",
              "holdout_reference_distance"}


def fit(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    # One BLAS thread: on two cores a threaded MLP fit is ten times slower, not faster.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


@pytest.fixture(scope="module")
def digits() -> dict[str, Any]:
    d = load_digits()
    X, y = d.data / 16.0, d.target
    Xtr, Xho, ytr, yho = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    mlp = fit(MLPClassifier((64,), max_iter=200, random_state=0), Xtr, ytr)
    evaluator = train_evaluator(Xtr, ytr, target_family=model_family(mlp), seed=0)
    bounds = (Xtr.min(axis=0), Xtr.max(axis=0))  # what an attacker knowing the value ranges searches
    return {"Xtr": Xtr, "ytr": ytr, "Xho": Xho, "yho": yho, "mlp": mlp, "ev": evaluator, "bounds": bounds}


def judge(digits: dict[str, Any], result: InversionResult) -> Any:
    return score(result, digits["ev"], digits["Xtr"], digits["ytr"], digits["Xho"], digits["yho"], image_shape=SHAPE)


# --- white box -----------------------------------------------------------------------------------


def test_white_box_reconstructions_are_recognised(digits: dict[str, Any]) -> None:
    result = run_inversion(digits["mlp"], n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE)
    assert result.mode == "white-box" and result.reason is None
    assert len(result.classes) == 10 and all(c.improved for c in result.classes)
    scores = judge(digits, result)
    assert scores.attack_accuracy is not None and scores.attack_accuracy >= 0.8
    assert scores.attack_accuracy_top5 is not None and scores.attack_accuracy_top5 >= scores.attack_accuracy
    # Probe records are the only queries the Target itself saw; the rest are gradient evaluations.
    assert result.queries_total == 8 + sum(c.queries for c in result.classes)
    for rec in result.classes:
        assert np.all(rec.x >= digits["bounds"][0] - 1e-12) and np.all(rec.x <= digits["bounds"][1] + 1e-12)

    report = to_report_dict(result, scores)
    assert set(report) == REPORT_KEYS
    assert all(set(c) == CLASS_KEYS for c in report["classes"])
    assert report["mode"] == "white-box" and report["queries_total"] == result.queries_total
    assert all(isinstance(c["nearest_train_distance"], float) and c["holdout_reference_distance"] > 0 for c in report["classes"])
    full = to_report_dict(result, scores, include_reconstructions=True)
    assert set(full) == REPORT_KEYS | {"reconstructions"} and len(full["reconstructions"][0]) == 64
    # The evaluator has a feature space (its RBF kernel's), so the second pair of distances exists.
    assert all(s.nearest_train_distance_feature is not None for s in scores.classes)


def test_constant_model_is_not_inverted(digits: dict[str, Any]) -> None:
    dummy = DummyClassifier(strategy="prior").fit(digits["Xtr"], digits["ytr"])
    result = run_inversion(dummy, n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE,
                           max_queries_per_class=3000)
    assert result.mode == "black-box"  # no gradient for a DummyClassifier, so it is queried
    assert not any(c.improved for c in result.classes)
    assert all(c.stop_reason == "flat" for c in result.classes)
    assert len(result.notes) == 10 and all("never improved" in note for note in result.notes)
    # Giving up early: a flat model is not worth the whole query budget.
    assert all(c.queries < 3000 for c in result.classes)
    scores = judge(digits, result)
    assert scores.attack_accuracy is not None and scores.attack_accuracy <= 0.3


def test_constant_callable_with_exact_gradient_is_not_inverted(digits: dict[str, Any]) -> None:
    fixed = np.full(10, 0.1)
    target = CallableTarget(lambda X: np.tile(fixed, (len(X), 1)), classes=np.arange(10))
    result = run_inversion(target, n_classes=10, n_features=64, bounds=(0.0, 1.0), image_shape=SHAPE,
                           gradient_fn=lambda x, c: (0.1, np.zeros_like(x)), classes_to_invert=[0, 5, 9])
    assert result.mode == "white-box"
    assert [c.class_label for c in result.classes] == ["0", "5", "9"]
    assert not any(c.improved for c in result.classes) and all("never improved" in n for n in result.notes)
    assert judge(digits, result).attack_accuracy <= 0.34


def test_smoothed_white_box_reports_point_confidence_and_counts_every_evaluation(digits: dict[str, Any]) -> None:
    mlp, (lo, hi) = digits["mlp"], digits["bounds"]
    result = run_inversion(mlp, n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE, seed=1,
                           classes_to_invert=[3, 7], config=MIFaceConfig(smoothing=0.3, smoothing_samples=5))
    assert result.params["smoothing"] == 0.3 and result.params["smoothing_samples"] == 5
    start = lo + 0.5 * (hi - lo)
    for rec in result.classes:
        # Five evaluations per step, plus one for the confidence at x (the start was the first probe).
        assert rec.queries == 5 * rec.steps + 1
        assert rec.probability == pytest.approx(mlp.predict_proba(rec.x[None])[0, rec.class_index], abs=1e-9)
        assert rec.start_probability == pytest.approx(mlp.predict_proba(start[None])[0, rec.class_index], abs=1e-9)
        assert rec.improved and rec.probability > rec.start_probability
    assert result.queries_total == 8 + sum(c.queries for c in result.classes)
    plain = run_inversion(mlp, n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE, seed=1,
                          classes_to_invert=[3], config=MIFaceConfig(smoothing=0.0))
    assert plain.params["smoothing"] == 0.0 and plain.params["smoothing_samples"] == 0
    assert all(rec.queries == rec.steps for rec in plain.classes)  # one evaluation per step, nothing extra


def test_log_odds_cost_known_values() -> None:
    q = 1.0 / (1.0 + np.exp(-5.0))
    cost, slope = log_odds_cost(np.array([0.5, q, 1.0 - 1e-12, 0.0]), 1e-12, 20.0)
    # log-odds 0, 5, ~27.6 (already past the target), and -27.6 (p floored at 1e-12); the slope is
    # d(-log(p / (1 - p)))/dp = -1 / (p (1 - p)).
    assert cost[0] == pytest.approx(20.0) and slope[0] == pytest.approx(-4.0)
    assert cost[1] == pytest.approx(15.0) and slope[1] == pytest.approx(-1.0 / (q * (1.0 - q)))
    assert cost[2] == 0.0 and slope[2] == 0.0
    assert cost[3] == pytest.approx(20.0 + np.log((1 - 1e-12) / 1e-12))
    # Rounded to 2 decimals, log-odds beyond log(0.995 / 0.005) = 5.29 cannot be seen, so 1.00 meets the target.
    cost, slope = log_odds_cost(np.array([1.0, 0.0, 0.5]), 0.005, 20.0)
    assert cost[0] == 0.0 and slope[0] == 0.0
    assert cost[1] == pytest.approx(np.log(0.995 / 0.005) - np.log(0.005)) and cost[2] == pytest.approx(np.log(0.995 / 0.005))


def test_smoothed_oracle_averages_over_the_neighbourhood() -> None:
    # p = sigmoid(w . x + b): the log-odds are w . x + b exactly, so the cost (their shortfall from the
    # target) has gradient -w at every sample that is short of it, and the neighbourhood average is exact.
    w, b = np.array([0.5, -2.0, 1.0]), 3.0

    def fn(x: np.ndarray, c: int) -> tuple[float, np.ndarray]:
        p = float(1.0 / (1.0 + np.exp(-(w @ x + b))))
        return p, p * (1.0 - p) * w

    lo, span = np.full(3, -10.0), np.full(3, 20.0)
    u = np.array([0.5, 0.5, 0.5])  # x = 0: log-odds b = 3
    point = white_box_oracle(fn, lo, span, target=20.0)
    value, grad, p, spent = point(u, 0)
    assert value == pytest.approx(17.0) and p == pytest.approx(1 / (1 + np.exp(-3.0))) and spent == 1
    assert np.allclose(grad, -w * 20.0)
    # Smoothing by 0.01 of the range is a standard deviation of 0.2 in x: the log-odds of a sample vary by
    # 0.2 * |w| = 0.46, far from the target, so every sample is short of it and pulls along -w.
    smooth = white_box_oracle(fn, lo, span, smoothing=0.01, samples=5000, rng=np.random.default_rng(0), target=20.0)
    value, grad, p, spent = smooth(u, 0)
    assert spent == 5000
    assert np.allclose(grad, -w * 20.0, rtol=1e-6)
    assert value == pytest.approx(17.0, abs=0.03)  # standard error 0.46 / sqrt(5000) = 0.0065
    # Mean confidence over the neighbourhood is below the point's (the sigmoid is concave there).
    assert p < 1 / (1 + np.exp(-3.0)) and p == pytest.approx(1 / (1 + np.exp(-3.0)), abs=0.01)
    # Past the target everywhere: nothing left to climb, the cost and its gradient are 0.
    value, grad, _, _ = white_box_oracle(fn, lo, span, target=2.0)(u, 0)
    assert value == 0.0 and not np.any(grad)


# --- black box over HTTP ------------------------------------------------------------------------


def digits_app(model: Any, rec: Recorder) -> Starlette:
    """The digits model behind KServe v1, in full, rounded, top-3 and label-only dialects."""

    async def rows_of(request: Request, route: str) -> np.ndarray:
        rows = (await request.json())["instances"]
        rec.batches[route].append(len(rows))
        return np.asarray(model.predict_proba(np.asarray(rows, dtype=np.float64)))

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def full(request: Request) -> Response:
        return JSONResponse({"predictions": (await rows_of(request, "full")).tolist()})

    async def rounded(request: Request) -> Response:
        return JSONResponse({"predictions": np.round(await rows_of(request, "rounded"), 2).tolist()})

    async def top3(request: Request) -> Response:
        p = await rows_of(request, "top3")
        best = np.argsort(-p, axis=1)[:, :3]
        return JSONResponse({"predictions": [{str(j): float(p[i, j]) for j in best[i]} for i in range(len(p))]})

    async def labels(request: Request) -> Response:
        return JSONResponse({"predictions": [str(j) for j in (await rows_of(request, "labels")).argmax(1)]})

    return Starlette(routes=[
        Route("/health", health),
        Route("/v1/models/digits:predict", full, methods=["POST"]),
        Route("/v1/models/rounded:predict", rounded, methods=["POST"]),
        Route("/v1/models/top3:predict", top3, methods=["POST"]),
        Route("/v1/models/labels:predict", labels, methods=["POST"]),
    ])


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def base(digits: dict[str, Any], recorder: Recorder) -> Iterator[str]:
    with serve(digits_app(digits["mlp"], recorder)) as url:
        yield url


@pytest.fixture
def http(base: str, recorder: Recorder) -> Iterator[Any]:
    made: list[HttpTarget] = []
    recorder.reset()

    def build(name: str) -> HttpTarget:
        target = HttpTarget(f"{base}/v1/models/{name}:predict", HttpSettings.from_dict({"classes": list(range(10))}))
        made.append(target)
        return target

    yield build
    for t in made:
        t.close()


@pytest.mark.slow
@pytest.mark.parametrize(("route", "kind", "rounding", "k"), [
    ("digits", "probabilities", None, None),
    ("rounded", "probabilities", 2, None),
    ("top3", "top_k", None, 3),
])
def test_black_box_over_http(digits: dict[str, Any], http: Any, recorder: Recorder, route: str, kind: str,
                             rounding: int | None, k: int | None) -> None:
    server_route = "full" if route == "digits" else route
    result = run_inversion(http(route), n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE,
                           classes_to_invert=[0, 1, 2, 3, 4], max_queries_per_class=1000, seed=3)
    assert result.mode == "black-box"
    assert result.output_mode is not None and result.output_mode.kind == kind
    assert result.output_mode.k == k and (rounding is None or result.output_mode.rounding == rounding)
    # Every record the attack paid for reached the server, and nothing more.
    assert result.queries_total == recorder.rows(server_route) == 8 + sum(c.queries for c in result.classes)
    assert all(0 < c.queries <= 1000 for c in result.classes)
    scores = judge(digits, result)
    assert scores.attack_accuracy is not None and scores.attack_accuracy >= 0.6
    assert scores.attack_accuracy_top5 is not None  # the evaluator knows ten classes
    report = to_report_dict(result, scores)
    assert report["mode"] == "black-box" and sum(c["queries"] for c in report["classes"]) == result.queries_total - 8
    assert time_to_reconstruct(report["queries_total"], 60) == pytest.approx(report["queries_total"])


def test_label_only_endpoint_is_refused(digits: dict[str, Any], http: Any, recorder: Recorder) -> None:
    result = run_inversion(http("labels"), n_classes=10, n_features=64, bounds=digits["bounds"])
    assert result.mode == "refused" and result.reason == LABEL_ONLY_REASON
    assert "labels only" in result.reason and not result.classes
    assert result.queries_total == recorder.rows("labels") == 8  # only the probe was spent
    scores = judge(digits, result)
    assert scores.attack_accuracy is None
    report = to_report_dict(result, scores)
    assert set(report) == REPORT_KEYS and report["classes"] == [] and report["attack_accuracy"] is None
    assert report["mode"] == "refused" and report["reason"] == LABEL_ONLY_REASON


def test_seeded_black_box_runs_reproduce(digits: dict[str, Any]) -> None:
    def once(seed: int) -> InversionResult:
        target = CallableTarget(digits["mlp"].predict_proba, classes=np.arange(10))
        return run_inversion(target, n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE,
                             classes_to_invert=[7], max_queries_per_class=400, seed=seed, start="blank")

    a, b, c = once(11), once(11), once(12)
    assert np.array_equal(a.reconstructions, b.reconstructions) and a.queries_total == b.queries_total
    assert not np.array_equal(a.reconstructions, c.reconstructions)


# --- gradients -----------------------------------------------------------------------------------


def finite_difference(model: Any, x: np.ndarray, c: int, h: float = 1e-6) -> np.ndarray:
    eye = np.eye(len(x)) * h
    up = model.predict_proba(x[None] + eye)[:, c]
    down = model.predict_proba(x[None] - eye)[:, c]
    return np.asarray((up - down) / (2 * h))


@pytest.fixture(scope="module")
def tabular() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(300, n_features=6, n_informative=4, n_classes=3, random_state=0)
    return X, y, (y > 0).astype(int)


@pytest.mark.parametrize("make", [
    lambda: MLPClassifier((8, 5), activation="relu", max_iter=300, random_state=0),
    lambda: MLPClassifier((7,), activation="tanh", max_iter=300, random_state=0),
    lambda: MLPClassifier((6,), activation="logistic", max_iter=300, random_state=0),
    lambda: MLPClassifier((6,), activation="identity", max_iter=300, random_state=0),
    lambda: make_pipeline(StandardScaler(), MLPClassifier((8,), activation="tanh", max_iter=300, random_state=0)),
    lambda: LogisticRegression(max_iter=500),
    lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    lambda: make_pipeline(StandardScaler(with_mean=False), MinMaxScaler(), MLPClassifier((8,), max_iter=300, random_state=0)),
], ids=["mlp-relu", "mlp-tanh", "mlp-logistic", "mlp-identity", "pipeline-mlp", "logreg", "pipeline-logreg",
        "pipeline-scalers-mlp"])
@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
def test_analytic_gradients_match_finite_differences(tabular: Any, make: Any, binary: bool) -> None:
    X, y, yb = tabular
    # Scale the raw features up so the pipeline's scaler has real work to do in the chain rule.
    X = X * np.array([1.0, 10.0, 0.1, 3.0, 1.0, 50.0]) + 5.0
    model = fit(make(), X, yb if binary else y)
    fn = white_box_gradient(model)
    assert fn is not None
    rng = np.random.default_rng(0)
    for i in rng.choice(len(X), 4, replace=False):
        x = X[i] + rng.normal(scale=0.05, size=X.shape[1])
        for c in range(len(model.classes_)):
            p, grad = fn(x, c)
            assert p == pytest.approx(model.predict_proba(x[None])[0, c], abs=1e-10)
            assert np.allclose(grad, finite_difference(model, x, c), rtol=1e-4, atol=1e-7)


def test_no_exact_gradient_for_other_models(tabular: Any) -> None:
    X, y, _ = tabular
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    assert white_box_gradient(forest) is None
    assert white_box_gradient(make_pipeline(StandardScaler(), forest)) is None
    with pytest.raises(ConfigError, match="no exact gradient"):
        run_inversion(forest, n_classes=3, n_features=6, bounds=(X.min(0), X.max(0)), mode="white-box")
    # auto mode falls back to queries
    result = run_inversion(forest, n_classes=3, n_features=6, bounds=(X.min(0), X.max(0)), max_queries_per_class=200)
    assert result.mode == "black-box" and result.params["prior"] == "l2_to_start"


@pytest.mark.slow
def test_torch_gradients_and_inversion(digits: dict[str, Any]) -> None:
    import torch  # installed by scripts/test-deps (CPU build); missing, the test fails
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's OpenMP pool next to scikit-learn's spins for seconds on two cores
    try:
        torch_case(torch, digits)
    finally:
        torch.set_num_threads(threads)


def torch_case(torch: Any, digits: dict[str, Any]) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    X = torch.as_tensor(digits["Xtr"], dtype=torch.float32)
    y = torch.as_tensor(digits["ytr"])
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    fn = white_box_gradient(net)
    assert fn is not None

    def proba(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(rows, dtype=torch.float64).float()), -1).double().numpy()

    x = digits["Xho"][0]
    p, grad = fn(x, 3)
    assert p == pytest.approx(proba(x[None])[0, 3], abs=1e-6)
    h = 1e-2  # float32 network: a coarse step keeps rounding noise below the tolerance
    fd = (proba(x[None] + np.eye(64) * h)[:, 3] - proba(x[None] - np.eye(64) * h)[:, 3]) / (2 * h)
    assert np.allclose(grad, fd, rtol=5e-2, atol=2e-3)

    result = run_inversion(net, n_classes=10, n_features=64, bounds=digits["bounds"], image_shape=SHAPE)
    assert result.mode == "white-box"
    assert judge(digits, result).attack_accuracy >= 0.8


# --- maths and evaluation --------------------------------------------------------------------------


def test_total_variation_gradient_and_nes_estimate() -> None:
    rng = np.random.default_rng(1)
    u = rng.random(64)
    value, grad = total_variation(u, SHAPE)
    h = 1e-6
    fd = np.array([(total_variation(u + h * e, SHAPE)[0] - total_variation(u - h * e, SHAPE)[0]) / (2 * h)
                   for e in np.eye(64)])
    assert value > 0 and np.allclose(grad, fd, atol=1e-6)
    assert total_variation(np.zeros(64), SHAPE)[0] == pytest.approx(0.0)
    # NES on a linear function recovers its slope.
    w = rng.normal(size=5)
    noise = rng.standard_normal((4000, 5))
    vals = np.concatenate([(0.1 * noise) @ w, (-0.1 * noise) @ w])
    assert np.allclose(nes_gradient(vals, noise, 0.1), w, atol=0.1)


def test_evaluator_rule_and_distance_yardstick(digits: dict[str, Any]) -> None:
    assert model_family(digits["mlp"]) == "neural" and digits["ev"].kind == "rbf_svm"
    assert model_family(RandomForestClassifier()) == "tree"
    assert model_family(make_pipeline(StandardScaler(), LogisticRegression())) == "linear"
    assert model_family(SVC()) == "kernel" and model_family(object()) == "unknown"
    Xtr, ytr = digits["Xtr"][:300], digits["ytr"][:300]
    trees = train_evaluator(Xtr, ytr, target_family="kernel", seed=0)
    assert trees.kind == "extra_trees"
    # A "reconstruction" that is a training record sits at distance zero, far below the yardstick.
    idx = int(np.flatnonzero(digits["ytr"] == 4)[0])
    copied = InversionResult("white-box", None, (ClassReconstruction("4", 4, digits["Xtr"][idx], 1.0, 0.1, 5, 5,
                                                                     "converged", True),), 5, 0.1)
    for ev in (digits["ev"], trees):
        s = score(copied, ev, digits["Xtr"], digits["ytr"], digits["Xho"], digits["yho"]).classes[0]
        assert s.evaluator_prediction == "4" and s.nearest_train_distance == pytest.approx(0.0, abs=1e-6)
        assert s.holdout_reference_distance > 0.5 and s.closer_than_holdout
        assert s.nearest_train_distance_feature == pytest.approx(0.0, abs=1e-6)
        assert s.holdout_reference_distance_feature is not None and s.holdout_reference_distance_feature > 0
    assert time_to_reconstruct(6000, 100) == pytest.approx(3600.0)
    with pytest.raises(ValueError):
        time_to_reconstruct(10, 0)


def test_bad_arguments_are_refused(digits: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="image shape"):
        run_inversion(digits["mlp"], n_classes=10, n_features=64, image_shape=(7, 7))
    with pytest.raises(ConfigError, match="bounds"):
        run_inversion(digits["mlp"], n_classes=10, n_features=64, bounds=(1.0, 0.0))
    with pytest.raises(ConfigError, match="not one of the model's classes"):
        run_inversion(digits["mlp"], n_classes=10, n_features=64, classes_to_invert=["cat"])
    with pytest.raises(ConfigError, match="n_classes is 3"):
        run_inversion(digits["mlp"], n_classes=3, n_features=64)
