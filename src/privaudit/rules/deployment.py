"""Rules on deployment evidence (``privaudit scan``): the same ATLAS-EXF-003/001 metadata, severity
tables, remediation and framework mappings as an audit, applied to what a scan found about one
model endpoint.

The scan computes each control once per deployment (:class:`ControlOutcome`); this module turns the
outcomes into each rule's checks and finding. When a privaudit audit report of the same model is
joined, its attack checks come along (renamed to the deployment) and set the attack power; without
one the power is not measured, and the severity assumes the tables' "moderate" row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privaudit.findings import Check, CheckStatus, Finding, Severity
from privaudit.rules import Evidence, Policy, RuleMeta, rules
from privaudit.rules import common

# Rule id -> (severity table, the audit's attack checks, question index -> check keys that answer it).
RULE_TABLES: dict[str, tuple[dict[str, tuple[Severity, ...]], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "ATLAS-EXF-003": (common.MEMBERSHIP_TABLE, ("attack_power", "overfitting"),
                      (("differential_privacy",), ("overfitting",), ("confidence_exposure",), ("tested", "attack_power"))),
    "ATLAS-EXF-001": (common.INVERSION_TABLE, ("inversion_attack", "attribute_inference"),
                      (("differential_privacy",), ("query_limits",), ("tested", "inversion_attack", "attribute_inference"),
                       ("probing_monitoring", "capture_encryption"))),
}
DEPLOYMENT_CHECKS = ("query_limits", "confidence_exposure", "probing_monitoring", "capture_encryption")
UNMEASURED_LEVEL = "moderate"


@dataclass(frozen=True)
class ControlOutcome:
    """One scan check's verdict on one deployment, with the resources and place it rests on."""

    check: str
    title: str
    status: CheckStatus
    evidence: str
    needs: str | None = None
    resources: tuple[str, ...] = ()  # addresses or ARNs of the resources read
    location: dict[str, Any] | None = None  # {"file", "line"} or {"arn"}: where a reader should look
    rule_id: str | None = None  # None: the same outcome for every rule
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentEvidence:
    """Everything the rules may use about one deployed model: the control outcomes, the data
    sensitivity (and where it came from), the policy, and a joined audit report's findings."""

    deployment_id: str
    name: str
    kind: str
    outcomes: tuple[ControlOutcome, ...]
    policy: Policy = field(default_factory=Policy)
    data_sensitivity: str = "internal"
    sensitivity_source: str = "policy default"
    audit_findings: tuple[Finding, ...] = ()
    audit_source: str | None = None


def _check(rule: RuleMeta, name: str, o: ControlOutcome) -> Check:
    data = dict(o.data)
    if o.resources:
        data["resources"] = list(o.resources)
    if o.location:
        data["location"] = dict(o.location)
    return Check(id=common.check_id(rule, o.check, name), check=o.check, title=o.title, status=o.status,
                 evidence=o.evidence, needs=o.needs, data=data)


def _level(rule: RuleMeta, audit: Finding | None, attack_keys: tuple[str, ...]) -> tuple[str, str]:
    if audit is None:
        return UNMEASURED_LEVEL, f"attack power not measured (no audit report joined), assumed {UNMEASURED_LEVEL}"
    attack = [c for c in audit.checks if c.check in attack_keys]
    failing = [c for c in attack if c.status == CheckStatus.FAIL]
    if not failing:
        if any(c.status == CheckStatus.PASS for c in attack):
            return "none", "the joined audit measured no attack above chance"
        return UNMEASURED_LEVEL, f"the joined audit has no attack evidence for {rule.id}, assumed {UNMEASURED_LEVEL}"
    level = next((str(c.data["level"]) for c in failing if c.data.get("level") in common.LEVELS), UNMEASURED_LEVEL)
    return level, f"the joined audit measured attack power {level}"


def evaluate_deployment(ev: DeploymentEvidence) -> list[Finding]:
    """One finding per rule for the deployment, through the rules' own :func:`common.finding`."""
    out = []
    policy = Policy(**{**ev.policy.__dict__, "data_sensitivity": ev.data_sensitivity})
    base_ev = Evidence(model_name=ev.name, report=None, policy=policy)
    for rule_id, (meta, _fn) in rules().items():
        if rule_id not in RULE_TABLES:  # a rule with no deployment side
            continue
        table, attack_keys, question_keys = RULE_TABLES[rule_id]
        audit = next((f for f in ev.audit_findings if f.rule_id == rule_id), None)
        checks: list[Check] = []
        if audit is not None:
            for c in audit.checks:
                if c.check in attack_keys:
                    checks.append(c.model_copy(update={"id": common.check_id(meta, c.check, ev.name),
                                                       "data": {**c.data, "from_report": ev.audit_source}}))
        checks += [_check(meta, ev.name, o) for o in ev.outcomes if o.rule_id in (None, rule_id)]
        level, level_reason = _level(meta, audit, attack_keys)
        severity = common.severity_from_table(table, level, ev.data_sensitivity)
        reason = f"{level_reason}; {ev.data_sensitivity} data ({ev.sensitivity_source})"
        failing = [c for c in checks if c.status == CheckStatus.FAIL]
        if level == "none" and failing:
            severity, reason = Severity.LOW, f"no measurable attack, but a control is missing; {ev.data_sensitivity} data"
        answers = [common.answer(q, checks, list(keys)) for q, keys in zip(meta.audit_questions, question_keys)]
        summary = (f"{meta.title} exposure of deployment {ev.name} ({ev.kind}): "
                   + (", ".join(f"{c.check} {c.status.value}" for c in checks) or "no checks") + ".")
        found = common.finding(meta, base_ev, checks, severity, reason, summary, answers, core=DEPLOYMENT_CHECKS)
        # A deployment passes only when every deployment control is known to hold; one PASS among
        # UNKNOWNs is not enough to call the endpoint safe.
        open_controls = [c for c in checks if c.check in DEPLOYMENT_CHECKS and c.status != CheckStatus.PASS]
        if found.status == "pass" and open_controls:
            found = found.model_copy(update={"status": "unknown"})
        out.append(found)
    return out
