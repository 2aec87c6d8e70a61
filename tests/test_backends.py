"""Backend selection and its errors; the local backend through the protocol. (Ray itself: test_backends_ray.py.)"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit.audit.backends import BackendOptions, TrainingJob, make_backend, registry
from privaudit.errors import ConfigError
from privaudit.audit.reference import fit_and_score, in_masks, model_seed, recipe_from_estimator, train_reference_models
from tests.conftest import Case


def _job(n_models: int = 4, seed: int = 0) -> tuple[TrainingJob, Any]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] + 0.5 * rng.normal(size=120) > 0).astype(np.int64)
    recipe = recipe_from_estimator(LogisticRegression(), target_fingerprint="t", feature_names=None)
    job = TrainingJob(fit_and_score, recipe, X, y, in_masks(y, n_models, seed),
                      tuple(model_seed(seed, k) for k in range(n_models)), 2)
    return job, recipe


def test_both_backends_are_registered() -> None:
    assert {"local", "ray"} <= set(registry())


def test_local_backend_trains_each_requested_model_on_its_half_with_its_seed() -> None:
    job, _ = _job()
    got = dict(make_backend("local", BackendOptions(jobs=1)).run(job, [3, 1]))
    assert sorted(got) == [1, 3]
    for k, probs in got.items():
        expected = fit_and_score(job.recipe, job.X, job.y, job.masks[k], job.seeds[k], 2)
        np.testing.assert_array_equal(probs, expected)
    assert not np.array_equal(got[1], got[3])  # complementary halves give different models


def test_an_explicit_local_backend_gives_what_the_default_gives() -> None:
    job, recipe = _job()
    default = train_reference_models(recipe, job.X, job.y, 2, 4, seed=0, jobs=1)
    chosen = train_reference_models(recipe, job.X, job.y, 2, 4, seed=0, backend=make_backend("local", BackendOptions(jobs=2)))
    np.testing.assert_array_equal(default.probabilities, chosen.probabilities)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("spark", BackendOptions(), "--backend spark: unknown backend; choose from local, ray"),
    ("local", BackendOptions(address="ray://head:10001"), "--ray-address: only used with --backend ray"),
    ("local", BackendOptions(gpus=1), "--ref-cpus/--ref-gpus reserve resources on Ray"),
    ("ray", BackendOptions(cpus=-1), "--ref-cpus -1: must be 0 or more"),
])
def test_bad_backend_options_are_refused_in_one_line(name: str, options: BackendOptions, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_backend(name, options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, memorised: Case) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when the extra is not installed
    with pytest.raises(ConfigError) as err:
        privaudit.audit(memorised.model, memorised.train, memorised.holdout, reference_models=2, backend="ray")
    assert str(err.value) == '--backend ray: Ray is not installed; install it with pip install "privaudit[ray]"'


def test_on_a_core_install_the_cli_says_how_to_get_ray(tmp_path: Any) -> None:
    from tests.conftest import write_breast_cancer
    from tests.coreonly import run_core_only

    train, holdout, _ = write_breast_cancer(tmp_path, "label")
    # Ray is not importable here, as after `pip install privaudit`. The backend is checked before the
    # model is even looked for, so no work is spent on a run that could not train its reference models.
    proc = run_core_only(["audit", "--model", "model.skops", "--train", str(train), "--holdout", str(holdout),
                          "--label", "label", "--backend", "ray"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ['error: --backend ray: Ray is not installed; install it with pip install "privaudit[ray]"'], lines
