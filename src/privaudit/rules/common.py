"""Pieces several rules share: attack-power levels, the severity tables, and deployment-control checks.

The tables here are the ones documented in docs/severity.md; tests check them cell by cell.
"""

from __future__ import annotations

import math
from typing import Any

from privaudit.findings import AuditAnswer, Check, CheckStatus, Finding, Severity
from privaudit.rules import ControlsEvidence, Evidence, Policy, RuleMeta, mappings_for

LEVELS = ("none", "weak", "moderate", "strong")
S = Severity
# Rows: attack power; columns: data sensitivity public, internal, pii, health, financial.
MEMBERSHIP_TABLE: dict[str, tuple[Severity, ...]] = {
    "none": (S.INFO, S.INFO, S.INFO, S.INFO, S.INFO),
    "weak": (S.LOW, S.LOW, S.MEDIUM, S.MEDIUM, S.MEDIUM),
    "moderate": (S.LOW, S.MEDIUM, S.HIGH, S.HIGH, S.HIGH),
    "strong": (S.MEDIUM, S.HIGH, S.CRITICAL, S.CRITICAL, S.CRITICAL),
}
INVERSION_TABLE: dict[str, tuple[Severity, ...]] = {
    "none": (S.INFO, S.INFO, S.INFO, S.INFO, S.INFO),
    "weak": (S.LOW, S.MEDIUM, S.MEDIUM, S.HIGH, S.HIGH),
    "moderate": (S.MEDIUM, S.HIGH, S.HIGH, S.CRITICAL, S.CRITICAL),
    "strong": (S.HIGH, S.HIGH, S.CRITICAL, S.CRITICAL, S.CRITICAL),
}
SENSITIVITY_COLUMNS = ("public", "internal", "pii", "health", "financial")

# Attack-power thresholds: (strong, moderate). "weak" uses the policy's own pass limits. Membership power
# is read from the held-out test's lower bound of TPR/FPR, never from a point estimate.
TPR_RATIO = (10.0, 3.0)
INVERSION_ADVANTAGE = (0.5, 0.3)
ATTRIBUTE_LEAKAGE = (0.2, 0.1)


def severity_from_table(table: dict[str, tuple[Severity, ...]], level: str, sensitivity: str) -> Severity:
    return table[level][SENSITIVITY_COLUMNS.index(sensitivity)]


def level_of(value: float | None, strong: float, moderate: float, weak: float) -> int:
    """0 none, 1 weak, 2 moderate, 3 strong for one measurement against its thresholds."""
    if value is None:
        return 0
    if value >= strong:
        return 3
    if value >= moderate:
        return 2
    if value > weak:
        return 1
    return 0


def membership_power(membership: Any, policy: Policy) -> str:
    """The attack-power level the held-out test proved: none unless it rejected "no leakage"."""
    v = membership.verdict
    if not proves_leakage(v, policy):
        return "none"
    ratio = math.inf if v.ratio_lower is None else v.ratio_lower
    return LEVELS[max(level_of(ratio, *TPR_RATIO, policy.max_tpr_ratio), 1)]


def proves_leakage(verdict: Any, policy: Policy) -> bool:
    """Did the held-out test show TPR's lower bound above the policy's margin times FPR's upper bound?"""
    if verdict is None or verdict.attack is None:
        return False
    ratio = math.inf if verdict.ratio_lower is None else verdict.ratio_lower
    return bool(ratio > policy.max_tpr_ratio)


def check_id(rule: RuleMeta, check: str, model_name: str) -> str:
    return f"{rule.id}/{check}/{model_name}"


def confidence_exposure(rule: RuleMeta, ev: Evidence) -> Check:
    """Does the deployed API expose confidence scores? Known from an endpoint audit or the guard config."""
    model = ev.report.model
    cid = check_id(rule, "confidence_exposure", ev.model_name)
    title = "Confidence scores are not exposed to callers"
    if ev.controls is not None and ev.controls.hardening_output is not None:
        kind, rnd, k = ev.controls.hardening_output, ev.controls.hardening_round, ev.controls.hardening_k
        source = f"guard config {ev.controls.source}"
    elif model.format == "http":
        kind, rnd, k = model.output_mode, model.rounding, model.k
        source = "the audited endpoint"
    else:
        return Check(id=cid, check="confidence_exposure", title=title, status=CheckStatus.UNKNOWN,
                     evidence=f"the audited model file outputs {model.output_mode}; how the deployment serves it is not known",
                     needs="audit the live endpoint, or pass --guard-config with the serving policy")
    hardened = kind == "label" or (kind == "top_k" and (k or 99) <= 1 and (rnd is not None and rnd <= 1))
    detail = f"{source} returns {kind}" + (f" (top-{k})" if k else "") + (f", rounded to {rnd} decimals" if rnd is not None else "")
    return Check(id=cid, check="confidence_exposure", title=title,
                 status=CheckStatus.PASS if hardened else CheckStatus.FAIL, evidence=detail,
                 data={"output": kind, "rounding": rnd, "k": k})


def _controls_check(rule: RuleMeta, ev: Evidence, key: str, title: str, ok: bool | None, evidence: str, needs: str) -> Check:
    cid = check_id(rule, key, ev.model_name)
    if ok is None:
        return Check(id=cid, check=key, title=title, status=CheckStatus.UNKNOWN, evidence="no deployment configuration given", needs=needs)
    return Check(id=cid, check=key, title=title, status=CheckStatus.PASS if ok else CheckStatus.FAIL, evidence=evidence)


def query_limits(rule: RuleMeta, ev: Evidence) -> Check:
    c: ControlsEvidence | None = ev.controls
    return _controls_check(rule, ev, "query_limits", "Queries are limited per principal (not per IP)",
                           None if c is None else c.per_principal_limits,
                           "" if c is None else f"{c.source}: {c.limit_description}",
                           "pass --guard-config with the inference guard's configuration")


def probing_monitoring(rule: RuleMeta, ev: Evidence) -> Check:
    c = ev.controls
    return _controls_check(rule, ev, "probing_monitoring", "Inference traffic is monitored for systematic probing",
                           None if c is None else c.probing_detection,
                           "" if c is None else (f"{c.source}: detectors {', '.join(c.detectors)}" if c.detectors else f"{c.source}: no detectors configured"),
                           "pass --guard-config with the inference guard's configuration")


def differential_privacy(rule: RuleMeta, ev: Evidence) -> Check:
    cid = check_id(rule, "differential_privacy", ev.model_name)
    title = "Trained with differential privacy, within policy, not contradicted by the audit"
    dp = ev.report.membership.dp_claim
    if dp is None:
        return Check(id=cid, check="differential_privacy", title=title, status=CheckStatus.UNKNOWN,
                     evidence="no differential-privacy claim was given",
                     needs="pass --claimed-epsilon (and --delta) if the model was trained with DP")
    within = dp.claimed_epsilon <= ev.policy.max_epsilon
    ok = within and dp.verdict != "contradicted"
    text = (f"epsilon claimed {dp.claimed_epsilon:g} (policy allows up to {ev.policy.max_epsilon:g}); {dp.message}")
    status = CheckStatus.PASS if ok else CheckStatus.FAIL
    needs = None
    if ok and dp.verdict == "untestable":  # within policy, but nothing here could have refuted it
        status, needs = CheckStatus.UNKNOWN, "more records, or the training run's privacy accounting, to check the claim"
    return Check(id=cid, check="differential_privacy", title=title, status=status, needs=needs,
                 evidence=text, data={"claimed_epsilon": dp.claimed_epsilon, "epsilon_lower_bound": dp.epsilon_lower_bound,
                                      "verdict": dp.verdict})


def finding(rule: RuleMeta, ev: Evidence, checks: list[Check], severity: Severity, severity_reason: str, summary: str,
            answers: list[AuditAnswer], core: tuple[str, ...]) -> Finding:
    """Assemble a Finding: it fails when any check fails; without a FAIL it is "unknown" until one of
    the rule's ``core`` (attack) checks has evidence, so missing evidence never reads as a pass."""
    statuses = {c.status for c in checks}
    core_known = any(c.status in (CheckStatus.PASS, CheckStatus.FAIL) for c in checks if c.check in core)
    if CheckStatus.FAIL in statuses:
        status = "fail"
    elif not core_known:
        status = "unknown"
    else:
        status = "pass"
    if status != "fail":
        severity = Severity.INFO
    examples = "\n\n".join(f"{name}:\n{code}" for name, code in rule.remediation_examples.items())
    return Finding(
        id=f"{rule.id}/{ev.model_name}", rule_id=rule.id, title=rule.title, status=status, severity=severity,
        base_severity=rule.base_severity, severity_reason=severity_reason, atlas_technique=rule.atlas_technique,
        model_name=ev.model_name, summary=summary, checks=checks, audit_questions=answers,
        remediation=rule.remediation + ("\n\n" + examples if examples else ""), mitigations=list(rule.mitigations),
        mappings=mappings_for(rule.id), references=list(rule.references))


def answer(question: str, checks: list[Check], keys: list[str]) -> AuditAnswer:
    """Answer an audit question from the checks that bear on it; unanswered if they are all UNKNOWN."""
    relevant = [c for c in checks if c.check in keys]
    known = [c for c in relevant if c.status in (CheckStatus.PASS, CheckStatus.FAIL)]
    if not known:
        needs = "; ".join(c.needs for c in relevant if c.needs) or None
        return AuditAnswer(question=question, answer=None, checks=keys, needs=needs)
    return AuditAnswer(question=question, answer=" ".join(f"{c.evidence}." for c in known), checks=keys)
