"""Re-running an unchanged audit reuses its stored results; any change to what they depend on does not."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit import datasets
from privaudit.audit import splitcheck
from tests.conftest import Case

AUDIT = sys.modules["privaudit.audit.stages.attacks"]  # the stage that runs the attacks


def _count_attack_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = AUDIT.run_attack

    def counting(spec: Any, ctx: Any) -> Any:
        calls.append(spec.name)
        return original(spec, ctx)

    monkeypatch.setattr(AUDIT, "run_attack", counting)
    return calls


def _comparable(report: privaudit.Report) -> dict[str, Any]:
    d = json.loads(report.to_json_text())
    d["provenance"].pop("created_at", None)
    d["membership"].pop("reference_models_trained")  # 4 on the first run, 0 once they come from the cache
    for a in d["membership"]["attacks"]:
        a.pop("seconds")  # a recomputed attack takes its own time; everything else must match
    return d


def _run(case: Case, cache: Path, **kw: Any) -> privaudit.Report:
    return privaudit.audit(case.model, case.train, case.holdout, reference_models=4, seed=0, n_bootstrap=30,
                           cache_dir=cache, **kw)


def test_rerun_reuses_results_and_gives_the_same_report(memorised: Case, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    first = _run(memorised, tmp_path)
    calls = _count_attack_runs(monkeypatch)
    second = _run(memorised, tmp_path)
    assert calls == []  # nothing recomputed: scores, reports and what-if rows came from the cache
    assert second.membership.reference_models_trained == 0
    assert _comparable(second) == _comparable(first)
    assert second.what_if and [r.model_dump() for r in second.what_if] == [r.model_dump() for r in first.what_if]


def test_changed_options_model_or_references_recompute(memorised: Case, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _run(memorised, tmp_path)
    calls = _count_attack_runs(monkeypatch)
    other = _run(memorised, tmp_path, delta=1e-4)  # another δ changes every ε bound
    assert sorted(calls) == sorted(a.name for a in other.membership.attacks)

    calls.clear()
    from sklearn.ensemble import RandomForestClassifier

    retrained = Case(RandomForestClassifier(n_estimators=30, random_state=7).fit(*memorised.train),
                     memorised.train, memorised.holdout)
    _run(retrained, tmp_path)
    assert calls, "a different model must not reuse the old model's results"

    # Reference scores lost (e.g. the cache was pruned): they are retrained, so the stored
    # results, computed from the old arrays, are not trusted.
    _run(memorised, tmp_path)
    calls.clear()
    for f in tmp_path.glob("*.npy"):
        f.unlink()
    again = _run(memorised, tmp_path)
    assert again.membership.reference_models_trained == 4 and calls


def test_damaged_entries_are_recomputed(memorised: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _run(memorised, tmp_path)
    for f in tmp_path.glob("analysis-*/*"):
        f.write_bytes(b"\x00garbage")
    calls = _count_attack_runs(monkeypatch)
    second = _run(memorised, tmp_path)
    assert calls and _comparable(second) == _comparable(first)


def test_split_check_result_is_cached_by_data_and_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = datasets.purchase_like(1200, n_features=20, n_classes=3, flip=0.3, seed=3)
    first = splitcheck.check_split(s.X_train, s.X_holdout, seed=0, cache_dir=tmp_path, data_key="abc")
    assert first.passed and first.auc is not None and abs(first.auc - 0.5) < 0.1  # one population, randomly split
    assert len(list(tmp_path.glob("split-*.json"))) == 1

    def fail(*a: Any, **k: Any) -> Any:
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(splitcheck, "_measure", fail)
    assert splitcheck.check_split(s.X_train, s.X_holdout, seed=0, cache_dir=tmp_path, data_key="abc") == first
    with pytest.raises(AssertionError):  # another seed or other data is not a hit
        splitcheck.check_split(s.X_train, s.X_holdout, seed=1, cache_dir=tmp_path, data_key="abc")
    with pytest.raises(AssertionError):
        splitcheck.check_split(s.X_train, s.X_holdout, seed=0, cache_dir=tmp_path, data_key="abd")
    monkeypatch.undo()
    next(tmp_path.glob("split-*.json")).write_text("{not json")
    assert splitcheck.check_split(s.X_train, s.X_holdout, seed=0, cache_dir=tmp_path, data_key="abc") == first


def test_split_check_with_early_stopping_still_sees_a_shift() -> None:
    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(1500, 10))
    X_holdout = rng.normal(size=(1500, 10))
    X_holdout[:, 3] += 0.8  # one feature drifted between the files
    result = splitcheck.check_split(X_train, X_holdout, seed=0)
    assert not result.passed and result.auc is not None and result.auc > 0.65
