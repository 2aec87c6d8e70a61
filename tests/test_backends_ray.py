"""Reference models on a local Ray instance: same numbers as the local backend, one put of the pool,
the cache filled as results arrive, retries, and a one-line error naming the model that failed.

One Ray instance (2 CPUs, no dashboard) serves the whole session; the trainers below run inside Ray's
workers, which import this module by name, and leave marker files in a directory the driver chose.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import privaudit
from privaudit.audit.backends import BackendOptions, ReferenceTrainingError, make_backend
from privaudit.audit.reference import ScoreCache, recipe_from_trainer, train_reference_models
from tests.conftest import Case, forest_trainer

pytestmark = pytest.mark.xdist_group("ray")  # one Ray instance per test process; keep these tests together
MARKERS = "PRIVAUDIT_TEST_RAY_MARKERS"


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import ray

    markers = tmp_path_factory.mktemp("ray-markers")
    os.environ[MARKERS] = str(markers)  # set before ray.init, so every worker inherits it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield markers
    finally:
        ray.shutdown()
        os.environ.pop(MARKERS, None)


def _marker_dir(name: str) -> Path:
    path = Path(os.environ[MARKERS]) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def fails_once_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Fails the first time it is asked for a given model (seed), then trains what forest_trainer trains."""
    marker = _marker_dir("fails-once") / str(seed)
    if not marker.exists():
        marker.write_text("failed once")
        raise RuntimeError(f"transient failure for seed {seed}")
    return forest_trainer(X, y, seed)


def always_fails_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Records each attempt, then fails."""
    with open(_marker_dir("always-fails") / str(seed), "a") as f:
        f.write("attempt\n")
    raise ValueError("the trainer cannot fit this data")


def resources_trainer(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Records the resources Ray assigned to the task it runs in."""
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources()
    (_marker_dir("resources") / str(seed)).write_text(json.dumps(assigned))
    return forest_trainer(X, y, seed)


def _comparable(report: privaudit.Report) -> dict[str, Any]:
    d = json.loads(report.to_json_text())
    d["provenance"].pop("created_at", None)
    for a in d["membership"]["attacks"]:
        a.pop("seconds")  # wall time, the only thing allowed to differ
    return d


def _audit(case: Case, cache: Path, **kw: Any) -> privaudit.Report:
    return privaudit.audit(case.model, case.train, case.holdout, reference_models=4, seed=3, n_bootstrap=30,
                           cache_dir=cache, **kw)


def test_an_audit_on_ray_gives_the_local_backend_report(ray_session: Path, memorised: Case, tmp_path: Path) -> None:
    local = _audit(memorised, tmp_path / "local", jobs=2)
    on_ray = _audit(memorised, tmp_path / "ray", backend="ray")
    assert on_ray.membership.reference_models_trained == local.membership.reference_models_trained == 4
    assert _comparable(on_ray) == _comparable(local)  # every number, verdict and finding
    assert on_ray.membership.records_at_risk == local.membership.records_at_risk
    assert len(local.membership.records_at_risk) > 0  # a memorising model: the comparison covers real records
    # Ray's results went into the score cache, in the very entries the local backend reads.
    again = _audit(memorised, tmp_path / "ray", jobs=1)
    assert again.membership.reference_models_trained == 0


def _pool(case: Case) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([case.train[0], case.holdout[0]]), np.r_[case.train[1], case.holdout[1]].astype(np.int64)


def test_the_pool_is_put_once_and_progress_follows_completions(ray_session: Path, memorised: Case,
                                                                monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ray

    X, y = _pool(memorised)
    puts: list[Any] = []
    real_put = ray.put

    def counting_put(value: Any, **kw: Any) -> Any:
        puts.append(value)
        return real_put(value, **kw)

    monkeypatch.setattr(ray, "put", counting_put)
    recipe = recipe_from_trainer("tests.conftest:forest_trainer", target_fingerprint="t")
    seen: list[tuple[int, int]] = []
    cache = ScoreCache(tmp_path)
    refs = train_reference_models(recipe, X, y, 8, 6, seed=0, cache=cache, on_progress=lambda d, t: seen.append((d, t)),
                                  backend=make_backend("ray", BackendOptions(jobs=2)))
    assert sum(1 for v in puts if isinstance(v, np.ndarray) and v.shape == X.shape) == 1  # not one per model
    assert len(puts) == 3  # the rows, the labels and the training halves; nothing else
    assert seen == [(k, 6) for k in range(7)]  # 0 cached, then one step per finished model
    assert refs.trained == 6 and len(list(tmp_path.glob("*.npy"))) == 6


def test_a_failed_task_is_retried_and_gives_the_same_numbers(ray_session: Path, memorised: Case, tmp_path: Path) -> None:
    X, y = _pool(memorised)
    flaky = recipe_from_trainer("tests.test_backends_ray:fails_once_trainer", target_fingerprint="t")
    steady = recipe_from_trainer("tests.conftest:forest_trainer", target_fingerprint="t")
    on_ray = train_reference_models(flaky, X, y, 8, 4, seed=5, backend=make_backend("ray"))
    local = train_reference_models(steady, X, y, 8, 4, seed=5, jobs=1)
    failed_once = sorted(p.name for p in (ray_session / "fails-once").iterdir())
    from privaudit.audit.reference import model_seed

    assert failed_once == sorted(str(model_seed(5, k)) for k in range(4))  # every model failed once ...
    np.testing.assert_array_equal(on_ray.probabilities, local.probabilities)  # ... and its retry trained it


def test_a_task_that_keeps_failing_is_reported_in_one_line(ray_session: Path, memorised: Case) -> None:
    X, y = _pool(memorised)
    recipe = recipe_from_trainer("tests.test_backends_ray:always_fails_trainer", target_fingerprint="t")
    with pytest.raises(ReferenceTrainingError) as err:
        # One task in flight, so model 0 is the one that exhausts its retries.
        train_reference_models(recipe, X, y, 8, 4, seed=0, backend=make_backend("ray", BackendOptions(jobs=1)))
    assert str(err.value) == ("reference model 0 failed on Ray after 3 attempts: "
                              "ValueError: the trainer cannot fit this data")
    from privaudit.audit.reference import model_seed

    attempts = (ray_session / "always-fails" / str(model_seed(0, 0))).read_text().splitlines()
    assert len(attempts) == 3  # the first try and two retries


def test_the_cli_reports_a_failing_trainer_in_one_line(ray_session: Path, run: Any, tmp_path: Path,
                                                       plain_terminal: None) -> None:
    from tests.conftest import write_breast_cancer

    train, holdout, frame = write_breast_cancer(tmp_path, "label")
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from tests.conftest import quiet_fit

    model = quiet_fit(LogisticRegression(), frame.drop(columns="label"), frame["label"])
    sio.dump(model, tmp_path / "model.skops")
    result = run("audit", "--model", tmp_path / "model.skops", "--train", train, "--holdout", holdout, "--label", "label",
                 "-k", "2", "--seed", "1", "--trainer", "tests.test_backends_ray:always_fails_trainer", "--backend", "ray", "--jobs", "1")
    assert result.code == 2
    # stderr holds the progress lines and then the error, in one line and without a traceback. (Ray's own
    # notices of each retry, with the worker's traceback, go to stdout as Ray prints them.)
    errors = [line for line in result.err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert errors == ["error: reference model 0 failed on Ray after 3 attempts: ValueError: the trainer cannot fit this data"]
    assert result.err.rstrip().splitlines()[-1] == errors[0]


def test_declared_resources_reach_the_task(ray_session: Path, memorised: Case) -> None:
    X, y = _pool(memorised)
    recipe = recipe_from_trainer("tests.test_backends_ray:resources_trainer", target_fingerprint="t")
    train_reference_models(recipe, X, y, 8, 2, seed=0, backend=make_backend("ray", BackendOptions(cpus=2)))
    from privaudit.audit.reference import model_seed

    for k in range(2):
        assigned = json.loads((ray_session / "resources" / str(model_seed(0, k))).read_text())
        assert assigned.get("CPU") == 2.0 and "GPU" not in assigned
