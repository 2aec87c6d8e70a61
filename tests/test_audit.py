"""The audit end to end through the Python API: report contents, determinism, DP verdicts, split check."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import privaudit
from privaudit.errors import ConfigError, NothingAuditable
from privaudit.target import OutputMode, apply_output_mode
from tests.conftest import Case


def test_public_api_is_pinned() -> None:
    assert sorted(privaudit.__all__) == ["Report", "__version__", "audit", "load_data", "load_model"]


@pytest.fixture(scope="module")
def report(memorised: Case, tmp_path_factory: Any) -> privaudit.Report:
    return privaudit.audit(memorised.model, memorised.train, memorised.holdout, reference_models=4, seed=0,
                           n_bootstrap=50, cache_dir=tmp_path_factory.mktemp("c"))


def test_report_has_the_stable_keys(report: privaudit.Report) -> None:
    d = report.to_dict()
    assert d["schema_version"] == 1
    assert {"privaudit_version", "libraries", "seed", "command_line", "sha256"} <= set(d["provenance"])
    assert d["model"]["output_mode"] == "probabilities" and d["model"]["rounding"] is None and d["model"]["k"] is None
    assert d["data"] == {**d["data"], "train": 800, "holdout": 800}
    assert {"auc", "duplicates", "passed"} <= set(d["split_check"])
    m = d["membership"]
    for a in m["attacks"]:
        assert set(a["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001"}
        assert a["tpr_at_fpr"]["0.0001"] is None  # 800 non-members cannot resolve 0.01 % FPR
        assert a["tpr_at_fpr_detail"]["0.01"]["fpr_achieved"] <= 0.01
        for key in ("advantage", "ppv", "epsilon_lower_bound", "epsilon_max_measurable", "reference_models",
                    "queries", "seconds", "per_class"):
            assert key in a
    assert m["best"] in {a["name"] for a in m["attacks"]}
    assert len(m["records_at_risk"]) == 100
    assert all(r["set"] == "train" and 0 <= r["index"] < 800 for r in m["records_at_risk"])
    assert m["generalization_gap"] == pytest.approx(m["train_accuracy"] - m["holdout_accuracy"])


def test_best_is_the_attack_the_verdict_chose_and_judged(report: privaudit.Report) -> None:
    v = report.membership.verdict
    assert v is not None and v.status == "leak" and report.membership.best == v.attack
    finding = next(f for f in report.findings if f.rule_id == "ATLAS-EXF-003")
    # the summary names that one attack and no other, with the bounds it rests on
    others = [a.name for a in report.membership.attacks if a.name != v.attack and a.name not in v.attack]
    assert v.attack in finding.summary and not any(f" {o} " in finding.summary for o in others)
    assert "TPR >=" in finding.summary and "FPR <=" in finding.summary


def test_records_at_risk_are_really_the_exposed_ones(memorised: Case, report: privaudit.Report) -> None:
    # The forest is most certain on the records it fitted; the riskiest rows must be members with
    # risk near 1, and the report never carries their feature values.
    # Each risk is a lower bound on the precision of calling members at that score: above the prior.
    risks = [r.risk for r in report.membership.records_at_risk]
    assert risks == sorted(risks, reverse=True) and risks[0] > 0.9
    assert all(r > report.membership.member_prior for r in risks)
    assert all(r.index < len(memorised.train[0]) for r in report.membership.records_at_risk)
    text = report.to_json_text()
    row = memorised.train[0][report.membership.records_at_risk[0].index]
    assert json.dumps(row.tolist()) not in text


def _strip_timing(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip_timing(v) for k, v in d.items() if k not in ("seconds", "created_at")}
    if isinstance(d, list):
        return [_strip_timing(v) for v in d]
    return d


def test_same_inputs_and_seed_give_the_same_report(memorised: Case, tmp_path: Any) -> None:
    kw: dict[str, Any] = dict(reference_models=2, seed=3, n_bootstrap=20, command_line=["x"])
    a = privaudit.audit(memorised.model, memorised.train, memorised.holdout, cache_dir=tmp_path / "a", **kw)
    b = privaudit.audit(memorised.model, memorised.train, memorised.holdout, cache_dir=tmp_path / "b", **kw)
    assert _strip_timing(a.to_dict()) == _strip_timing(b.to_dict())


def test_overfit_model_contradicts_a_small_epsilon_claim(report: privaudit.Report, memorised: Case) -> None:
    rep = privaudit.audit(memorised.model, memorised.train, memorised.holdout, reference_models=2, seed=0,
                          n_bootstrap=0, claimed_epsilon=0.1, cache_dir=False)
    dp = rep.membership.dp_claim
    assert dp is not None and dp.verdict == "contradicted" and dp.contradicted
    assert dp.epsilon_lower_bound > 0.1


def test_unseen_model_is_consistent_with_its_claim(unseen: Case) -> None:
    rep = privaudit.audit(unseen.model, unseen.train, unseen.holdout, reference_models=2, seed=0, n_bootstrap=0,
                          claimed_epsilon=0.5, cache_dir=False)
    assert rep.membership.dp_claim is not None and rep.membership.dp_claim.verdict == "consistent"


def test_shifted_split_fails_the_split_check_and_makes_verdicts_indicative(memorised: Case) -> None:
    X_ho, y_ho = memorised.holdout
    shifted = (X_ho.copy(), y_ho)
    shifted[0][:, :10] = 1.0 - shifted[0][:, :10] * 0  # ten columns constant in holdout only
    rep = privaudit.audit(memorised.model, memorised.train, shifted, reference_models=2, seed=0, n_bootstrap=0,
                          claimed_epsilon=0.1, cache_dir=False, attacks=["loss"])
    assert not rep.split_check.passed and rep.split_check.auc is not None and rep.split_check.auc > 0.9
    assert rep.membership.dp_claim is not None and rep.membership.dp_claim.verdict == "indicative"
    assert any("split" in w for w in rep.warnings)


def test_duplicates_across_files_are_counted(memorised: Case) -> None:
    X_tr, y_tr = memorised.train
    X_ho, y_ho = memorised.holdout
    X_ho = np.vstack([X_ho[:-20], X_tr[:20]])
    y_ho = np.concatenate([y_ho[:-20], y_tr[:20]])
    rep = privaudit.audit(memorised.model, memorised.train, (X_ho, y_ho), reference_models=0, seed=0,
                          n_bootstrap=0, cache_dir=False, attacks=["loss"])
    assert rep.split_check.duplicates == 20 and not rep.split_check.passed


class Hardened:
    """A callable target serving a fitted model through a fixed output policy."""

    def __init__(self, model: Any, mode: OutputMode) -> None:
        self.model, self.mode, self.classes = model, mode, list(model.classes_)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(apply_output_mode(self.model.predict_proba(X), self.mode))


@pytest.mark.parametrize("mode", [OutputMode("probabilities", rounding=1), OutputMode("top_k", rounding=2, k=1),
                                  OutputMode("label")])
def test_output_mode_is_detected_and_attacks_adapt(memorised: Case, mode: OutputMode) -> None:
    rep = privaudit.audit(Hardened(memorised.model, mode), memorised.train, memorised.holdout,
                          reference_models=2, seed=0, n_bootstrap=0, cache_dir=False,
                          trainer="tests.conftest:forest_trainer")
    assert (rep.model.output_mode, rep.model.rounding, rep.model.k) == (mode.kind, mode.rounding, mode.k)
    names = {a.name for a in rep.membership.attacks}
    if mode.kind == "label":
        assert names == {"loss", "label_only"}
    else:
        assert {"rmia_online", "lira_offline"} <= names
    # The forest memorised its training half: even hardened outputs leak membership.
    assert max(a.auc for a in rep.membership.attacks) > 0.8


def test_no_runnable_attack_is_nothing_auditable(memorised: Case) -> None:
    with pytest.raises(NothingAuditable):
        privaudit.audit(Hardened(memorised.model, OutputMode("label")), memorised.train, memorised.holdout,
                        reference_models=2, attacks=["lira_online"], cache_dir=False)


def test_unknown_attack_is_a_config_error(memorised: Case) -> None:
    with pytest.raises(ConfigError, match="nope"):
        privaudit.audit(memorised.model, memorised.train, memorised.holdout, attacks=["nope"], cache_dir=False)


def test_report_json_round_trips(report: privaudit.Report, tmp_path: Any) -> None:
    path = tmp_path / "r.json"
    report.to_json(str(path))
    again = privaudit.Report.from_json(path.read_text())
    assert again.to_dict() == report.to_dict()
