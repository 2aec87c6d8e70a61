"""The rules on constructed evidence: severity tables cell by cell, UNKNOWN without evidence, the
deployment checks, and the differential-privacy override. The tables are written out here by hand
(and in docs/severity.md); the code must agree with both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import privaudit
from privaudit import datasets
from privaudit.ci.controls import parse_guard_config
from privaudit.findings import CheckStatus, Finding, Severity
from privaudit.report.schema import DPClaim, MembershipVerdict, Report
from privaudit.rules import ControlsEvidence, Evidence, Policy, atlas_exf_001, atlas_exf_003, common, evaluate_all

DOC = Path(__file__).resolve().parents[1] / "docs" / "severity.md"
SENS = ("public", "internal", "pii", "health", "financial")
I, L, M, H, C = Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL
MEMBERSHIP = {
    "none": (I, I, I, I, I),
    "weak": (L, L, M, M, M),
    "moderate": (L, M, H, H, H),
    "strong": (M, H, C, C, C),
}
INVERSION = {
    "none": (I, I, I, I, I),
    "weak": (L, M, M, H, H),
    "moderate": (M, H, H, C, C),
    "strong": (H, H, C, C, C),
}


@pytest.fixture(scope="module")
def base() -> Report:
    """A real report of a small audit, whose numbers the tests then overwrite."""
    from sklearn.linear_model import LogisticRegression

    s = datasets.breast_cancer(seed=0)
    model = LogisticRegression(max_iter=5000).fit(s.X_train, s.y_train)
    return privaudit.audit(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), attacks=["loss"],
                           reference_models=0, cache_dir=False, n_bootstrap=0, what_if=False, model_name="m")


def measured(report: Report, *, ratio: float | None = 0.8, status: str = "no_leak", gap: float = 0.0,
             holdout_needed: int | None = None) -> Report:
    """A held-out verdict with exactly this lower bound of TPR/FPR (None: unbounded) and status."""
    v = MembershipVerdict(
        status=status, attack="loss", fpr=0.001, threshold=0.0, confidence=0.95, margin=2.0, selection_members=1000,
        selection_nonmembers=1000, members=1000, nonmembers=1000, true_positives=50, false_positives=1,
        tpr_lower=0.01, fpr_upper=0.01 / ratio if ratio else 0.0, ratio_lower=ratio, epsilon_lower_bound=0.0,
        resolved_fprs=[0.001, 0.01, 0.1], min_resolved_fpr=0.01, holdout_needed=holdout_needed,
        message=f"verdict {status} at ratio {ratio}")  # type: ignore[arg-type]
    m = report.membership.model_copy(update={"verdict": v, "best": "loss", "generalization_gap": gap,
                                             "train_accuracy": 0.9 + gap, "holdout_accuracy": 0.9, "dp_claim": None})
    return report.model_copy(update={"membership": m, "findings": []})


# Lower bounds of TPR/FPR that land on each level with the default policy (margin 2).
POWER: dict[str, dict[str, Any]] = {
    "none": dict(ratio=1.5, status="no_leak"),
    "weak": dict(ratio=2.5, status="leak"),  # above the policy's 2.0, below 3
    "moderate": dict(ratio=5.0, status="leak"),
    "strong": dict(ratio=20.0, status="leak"),
}


def membership(report: Report, sensitivity: str = "internal", controls: ControlsEvidence | None = None,
               policy: Policy | None = None) -> Finding:
    pol = policy or Policy(data_sensitivity=sensitivity)
    return atlas_exf_003.evaluate(Evidence(model_name="m", report=report, policy=pol, controls=controls))


def check(f: Finding, key: str) -> Any:
    return next(c for c in f.checks if c.check == key)


# --- the tables ---------------------------------------------------------------------------------------


def test_tables_in_code_are_the_documented_ones() -> None:
    assert common.SENSITIVITY_COLUMNS == SENS
    assert common.MEMBERSHIP_TABLE == MEMBERSHIP
    assert common.INVERSION_TABLE == INVERSION
    assert common.TPR_RATIO == (10.0, 3.0)
    assert (common.INVERSION_ADVANTAGE, common.ATTRIBUTE_LEAKAGE) == ((0.5, 0.3), (0.2, 0.1))


def _doc_tables() -> list[dict[str, tuple[Severity, ...]]]:
    tables: list[dict[str, tuple[Severity, ...]]] = []
    current: dict[str, tuple[Severity, ...]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in MEMBERSHIP and len(cells) == 6:
            current[cells[0]] = tuple(Severity(c) for c in cells[1:])
        elif current:
            tables.append(current)
            current = {}
    return tables


def test_docs_show_the_same_tables() -> None:
    assert _doc_tables() == [MEMBERSHIP, INVERSION]
    text = DOC.read_text(encoding="utf-8")
    header = "| attack power | " + " | ".join(SENS) + " |"
    assert header in text


@pytest.mark.parametrize("level", list(MEMBERSHIP))
@pytest.mark.parametrize("sensitivity", SENS)
def test_membership_table_cell(base: Report, level: str, sensitivity: str) -> None:
    f = membership(measured(base, **POWER[level]), sensitivity)
    assert check(f, "attack_power").data["level"] == level
    expected = MEMBERSHIP[level][SENS.index(sensitivity)]
    assert f.severity == expected
    assert f.status == ("pass" if level == "none" else "fail")
    assert f.failed is (level != "none")


@pytest.mark.parametrize(("numbers", "level", "status"), [
    (dict(ratio=2.01, status="leak"), "weak", CheckStatus.FAIL),
    (dict(ratio=3.0, status="leak"), "moderate", CheckStatus.FAIL),
    (dict(ratio=10.0, status="leak"), "strong", CheckStatus.FAIL),
    (dict(ratio=None, status="leak"), "strong", CheckStatus.FAIL),  # no false positive can happen: unbounded
    (dict(ratio=2.0, status="no_leak"), "none", CheckStatus.PASS),  # at the margin is not above it
    (dict(ratio=0.3, status="unresolved", holdout_needed=200), "none", CheckStatus.UNKNOWN),
    (dict(ratio=1.2, status="no_leak", gap=0.09), "none", CheckStatus.PASS),  # a gap never lifts attack power
])
def test_membership_power_from_the_lower_bound(base: Report, numbers: dict[str, Any], level: str,
                                               status: CheckStatus) -> None:
    c = check(membership(measured(base, **numbers)), "attack_power")
    assert c.data["level"] == level and c.status == status
    if status == CheckStatus.UNKNOWN:
        assert c.needs == "needs >= 200 holdout records"


def test_policy_moves_the_margin(base: Report) -> None:
    rep = measured(base, ratio=2.5, status="leak")
    assert check(membership(rep), "attack_power").status == CheckStatus.FAIL
    assert check(membership(rep, policy=Policy(max_tpr_ratio=3.0)), "attack_power").status == CheckStatus.PASS


@pytest.mark.parametrize(("gap", "max_gap", "status"), [
    (0.10, 0.02, CheckStatus.FAIL),  # lower bound about 0.05 on ~285 records a side: above 0.02
    (0.03, 0.02, CheckStatus.UNKNOWN),  # above the policy as measured, within chance
    (0.01, 0.02, CheckStatus.PASS),
])
def test_overfitting_is_judged_on_its_lower_bound(base: Report, gap: float, max_gap: float, status: CheckStatus) -> None:
    c = check(membership(measured(base, gap=gap), policy=Policy(max_generalization_gap=max_gap)), "overfitting")
    assert c.status == status, c.evidence
    assert c.data["gap_lower_bound"] < gap


class WithInversion:
    """A report plus the inversion audit's keys (dicts), as the inversion rule reads them."""

    def __init__(self, report: Report, inversion: dict[str, Any] | None = None,
                 attribute_inference: dict[str, Any] | None = None) -> None:
        self._report = report
        self.inversion = inversion
        self.attribute_inference = attribute_inference

    def __getattr__(self, name: str) -> Any:
        return getattr(self._report, name)


def inversion(report: Any, sensitivity: str = "internal", controls: ControlsEvidence | None = None) -> Finding:
    return atlas_exf_001.evaluate(Evidence(model_name="m", report=report, policy=Policy(data_sensitivity=sensitivity),
                                           controls=controls))


# Ten classes (chance 0.1) and 100 reconstructions; the level follows the accuracy's 95 % lower bound
# (one-sided 97.5 %): 30 -> 0.21, 45 -> 0.35, 60 -> 0.50, 80 -> 0.71 recognised.
INV_ACCURACY = {"none": 0.30, "weak": 0.45, "moderate": 0.60, "strong": 0.80}


def _ten_classes(report: Report) -> Report:
    return report.model_copy(update={"model": report.model.model_copy(update={"classes": [str(i) for i in range(10)]})})


def _inverted(accuracy: float, n: int = 100) -> dict[str, Any]:
    return {"mode": "white-box", "attack_accuracy": accuracy, "queries_total": 100, "classes": [{}] * n}


@pytest.mark.parametrize("level", list(INVERSION))
@pytest.mark.parametrize("sensitivity", SENS)
def test_inversion_table_cell(base: Report, level: str, sensitivity: str) -> None:
    rep = WithInversion(_ten_classes(base), inversion=_inverted(INV_ACCURACY[level]))
    f = inversion(rep, sensitivity)
    assert f.severity == INVERSION[level][SENS.index(sensitivity)]
    assert check(f, "inversion_attack").status == (CheckStatus.PASS if level == "none" else CheckStatus.FAIL)
    assert f.status == ("pass" if level == "none" else "fail")


def test_few_reconstructions_are_unknown_not_a_verdict(base: Report) -> None:
    # Two classes, both recognised: chance is 0.5 and two guesses cannot rule it out.
    c = check(inversion(WithInversion(base, inversion=_inverted(1.0, n=2))), "inversion_attack")
    assert c.status == CheckStatus.UNKNOWN and c.needs and "2 reconstructions" in c.needs


def _attribute(leakage: float, n: int) -> dict[str, Any]:
    """A section whose training records beat the baseline on ``leakage`` of ``n`` records more than they lose,
    and whose holdout records win and lose one in ten each (no advantage)."""
    wins, noise = round(leakage * n), n // 10
    return {"column": "age", "leakage": leakage,
            "train": {"advantage": leakage, "wins": wins + noise, "losses": noise, "records": n},
            "holdout": {"advantage": 0.0, "wins": noise, "losses": noise, "records": n}}


@pytest.mark.parametrize(("leakage", "expected"), [(0.04, I), (0.06, H), (0.105, C), (0.21, C)])
def test_attribute_leakage_on_health_data(base: Report, leakage: float, expected: Severity) -> None:
    # On 10 million records the lower bound is the leakage itself.
    f = inversion(WithInversion(base, attribute_inference=_attribute(leakage, 10_000_000)), "health")
    assert f.severity == expected
    assert check(f, "inversion_attack").status == CheckStatus.UNKNOWN


@pytest.mark.parametrize(("leakage", "n", "status"), [(0.12, 100, CheckStatus.UNKNOWN), (0.12, 2000, CheckStatus.FAIL),
                                                       (0.01, 100, CheckStatus.UNKNOWN), (0.01, 5000, CheckStatus.PASS)])
def test_attribute_leakage_is_judged_on_its_lower_bound(base: Report, leakage: float, n: int,
                                                        status: CheckStatus) -> None:
    # 12 of 100 is within chance of no leakage; 240 of 2,000 is not. A small leak on 100 records is no
    # evidence of safety either: a PASS needs a sample that would show a moderate leak.
    c = check(inversion(WithInversion(base, attribute_inference=_attribute(leakage, n)), "health"),
              "attribute_inference")
    assert c.status == status, c.evidence
    assert "at least" in c.evidence


def test_attribute_section_without_counts_is_unknown(base: Report) -> None:
    attr = {"column": "age", "leakage": 0.3, "train": {"advantage": 0.3}, "holdout": {"advantage": 0.0}}
    c = check(inversion(WithInversion(base, attribute_inference=attr), "health"), "attribute_inference")
    assert c.status == CheckStatus.UNKNOWN and c.needs and "re-run" in c.needs


def test_refused_inversion_passes(base: Report) -> None:
    f = inversion(WithInversion(base, inversion={"mode": "refused", "reason": "label-only output"}))
    assert check(f, "inversion_attack").status == CheckStatus.PASS and f.status == "pass"


# --- missing evidence is UNKNOWN, never FAIL ---------------------------------------------------------------


def test_inversion_without_evidence_is_unknown(base: Report) -> None:
    f = inversion(base, "health")
    assert f.status == "unknown" and f.severity == I and not f.failed
    for key in ("inversion_attack", "attribute_inference", "tested", "confidence_exposure", "differential_privacy",
                "query_limits", "probing_monitoring"):
        c = check(f, key)
        assert c.status == CheckStatus.UNKNOWN, key
        assert c.needs, key  # says what would answer it
    assert all(a.answer is None for a in f.audit_questions)


def test_membership_without_deployment_evidence(base: Report) -> None:
    f = membership(measured(base, **POWER["none"]), "health")
    for key in ("confidence_exposure", "differential_privacy", "query_limits", "probing_monitoring"):
        assert check(f, key).status == CheckStatus.UNKNOWN, key
    assert f.status == "pass" and f.severity == I
    assert not any(c.status == CheckStatus.FAIL for c in f.checks)


def test_every_rule_never_fails_on_missing_evidence_alone(base: Report) -> None:
    for f in evaluate_all(Evidence(model_name="m", report=measured(base, **POWER["none"]), policy=Policy(data_sensitivity="financial"))):
        assert not f.failed, f.id


# --- confidence exposure: endpoint or guard config ------------------------------------------------------------


def _served(report: Report, output_mode: str, rounding: int | None = None, k: int | None = None) -> Report:
    model = report.model.model_copy(update={"format": "http", "output_mode": output_mode, "rounding": rounding, "k": k})
    return report.model_copy(update={"model": model})


@pytest.mark.parametrize(("mode", "rounding", "k", "status"), [
    ("label", None, None, CheckStatus.PASS),
    ("top_k", 1, 1, CheckStatus.PASS),
    ("top_k", None, 1, CheckStatus.FAIL),  # top-1 with full precision still leaks confidence
    ("top_k", 1, 3, CheckStatus.FAIL),
    ("probabilities", 2, None, CheckStatus.FAIL),
    ("logits", None, None, CheckStatus.FAIL),
])
def test_confidence_exposure_from_the_endpoint(base: Report, mode: str, rounding: int | None, k: int | None,
                                               status: CheckStatus) -> None:
    f = membership(_served(measured(base, **POWER["none"]), mode, rounding, k))
    c = check(f, "confidence_exposure")
    assert c.status == status and "endpoint" in c.evidence
    assert f.severity == (I if status == CheckStatus.PASS else L)  # no attack, but a missing control: low


def _guard(output: str, k: int | None = None, rnd: int | None = None) -> ControlsEvidence:
    hard: dict[str, Any] = {"output": output}
    if k is not None:
        hard["k"] = k
    if rnd is not None:
        hard["round"] = rnd
    return parse_guard_config({"identity": {"api_keys": {"env": "K"}}, "limits": {"default": "5/second"},
                               "detectors": {"prada": {}}, "hardening": {"default": hard}}, "guard.yaml")


@pytest.mark.parametrize(("guard", "status"), [
    (("label",), CheckStatus.PASS),
    (("top_k", 1, 0), CheckStatus.PASS),
    (("top_k", 2, 1), CheckStatus.FAIL),
    (("probabilities",), CheckStatus.FAIL),
])
def test_confidence_exposure_from_the_guard_config(base: Report, guard: tuple[Any, ...], status: CheckStatus) -> None:
    rep = measured(base, **POWER["none"])
    # The guard's setting wins over what the endpoint was seen returning.
    for served in (rep, _served(rep, "probabilities"), _served(rep, "label")):
        c = check(membership(served, controls=_guard(*guard)), "confidence_exposure")
        assert c.status == status and "guard.yaml" in c.evidence


def test_guard_config_answers_the_control_checks(base: Report) -> None:
    good = membership(measured(base, **POWER["none"]), controls=_guard("label"))
    assert {check(good, k).status for k in ("query_limits", "probing_monitoring", "confidence_exposure")} == {CheckStatus.PASS}
    assert good.status == "pass"
    weak = parse_guard_config({"limits": {"default": "5/second"}}, "guard.yaml")  # no identity, no detectors
    bad = membership(measured(base, **POWER["none"]), controls=weak)
    assert check(bad, "query_limits").status == CheckStatus.FAIL
    assert check(bad, "probing_monitoring").status == CheckStatus.FAIL
    assert check(bad, "confidence_exposure").status == CheckStatus.UNKNOWN  # the guard config sets no hardening
    assert bad.failed and bad.severity == L


# --- differential privacy -------------------------------------------------------------------------------------


def _dp(report: Report, claimed: float, bound: float, verdict: str) -> Report:
    claim = DPClaim(claimed_epsilon=claimed, delta=1e-5, epsilon_lower_bound=bound, attack="loss", confidence=0.95,
                    verdict=verdict, contradicted=verdict == "contradicted", message="test")  # type: ignore[arg-type]
    return report.model_copy(update={"membership": report.membership.model_copy(update={"dp_claim": claim})})


@pytest.mark.parametrize(("level", "sensitivity", "expected"), [
    ("none", "public", H), ("weak", "public", H), ("moderate", "internal", H), ("moderate", "pii", H),
    ("strong", "internal", H), ("strong", "pii", C), ("strong", "public", H),
])
def test_contradicted_dp_claim_is_at_least_high(base: Report, level: str, sensitivity: str, expected: Severity) -> None:
    f = membership(_dp(measured(base, **POWER[level]), 1.0, 2.5, "contradicted"), sensitivity)
    assert check(f, "differential_privacy").status == CheckStatus.FAIL
    assert f.failed and f.severity == expected
    assert f.severity.at_least(H)


def test_dp_claim_consistent_and_over_budget(base: Report) -> None:
    rep = measured(base, **POWER["none"])
    ok = membership(_dp(rep, 1.0, 0.2, "consistent"))
    assert check(ok, "differential_privacy").status == CheckStatus.PASS and ok.status == "pass"
    # a claim the sample could never have refuted is not verified: UNKNOWN, saying what would answer it
    untested = check(membership(_dp(rep, 6.0, 0.0, "untestable")), "differential_privacy")
    assert untested.status == CheckStatus.UNKNOWN and untested.needs
    # within the audit's evidence but above the team's budget: a failed control, not a contradiction
    loose = membership(_dp(rep, 10.0, 0.2, "consistent"))
    assert check(loose, "differential_privacy").status == CheckStatus.FAIL and loose.severity == L
    # only indicative (the split check failed): no raise to high
    hint = membership(_dp(measured(base, **POWER["weak"]), 1.0, 2.5, "indicative"), "public")
    assert check(hint, "differential_privacy").status == CheckStatus.PASS and hint.severity == L


def test_ids_are_stable(base: Report) -> None:
    f = membership(measured(base, **POWER["weak"]))
    assert f.id == "ATLAS-EXF-003/m"
    assert {c.id for c in f.checks} == {f"ATLAS-EXF-003/{c.check}/m" for c in f.checks}
