"""Pieces several rules share: attack-power levels, the severity tables, and deployment-control checks.

The tables here are the ones documented in docs/severity.md; tests check them cell by cell.
"""

from __future__ import annotations

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

# Attack-power thresholds: (strong, moderate). "weak" uses the policy's own pass limits.
TPR_RATIO = (10.0, 3.0)
AUC = (0.75, 0.60)
EPSILON = (2.0, 0.5)
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


def tpr_ratio(attack: Any) -> tuple[float | None, str]:
    """TPR divided by the FPR it was measured at, at 0.1 % FPR when resolvable, else at 1 %."""
    for key in ("0.001", "0.01"):
        tpr = attack.tpr_at_fpr.get(key)
        if tpr is not None:
            return tpr / float(key), key
    return None, ""


def membership_power(membership: Any, policy: Policy) -> tuple[str, str]:
    """The attack-power level of the strongest measurement, and a sentence saying which one set it."""
    best_level, reason = 0, "no attack beat chance"
    for a in membership.attacks:
        ratio, key = tpr_ratio(a)
        candidates = [
            (level_of(ratio, *TPR_RATIO, policy.max_tpr_ratio),
             f"{a.name}: TPR at {float(key):.1%} FPR is {ratio:.1f}x the FPR" if ratio is not None else ""),
            (level_of(a.auc, *AUC, policy.max_auc), f"{a.name}: AUC {a.auc:.3f}"),
            (level_of(a.epsilon_lower_bound, *EPSILON, 0.0), f"{a.name}: epsilon lower bound {a.epsilon_lower_bound:.2f}"),
        ]
        for lvl, why in candidates:
            if lvl > best_level:
                best_level, reason = lvl, why
    gap = membership.generalization_gap
    if best_level == 0 and gap > policy.max_generalization_gap:
        best_level, reason = 1, f"generalization gap {gap:.3f} above the policy's {policy.max_generalization_gap}"
    return LEVELS[best_level], reason


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
    text = f"epsilon claimed {dp.claimed_epsilon:g} (policy allows up to {ev.policy.max_epsilon:g}), lower bound measured {dp.epsilon_lower_bound:.3f} -- {dp.verdict}"
    return Check(id=cid, check="differential_privacy", title=title, status=CheckStatus.PASS if ok else CheckStatus.FAIL,
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
