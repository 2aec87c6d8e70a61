"""ATLAS-EXF-003 Membership inference (MITRE ATLAS AML.T0024.000)."""

from __future__ import annotations

from privaudit import metrics, verdict
from privaudit.findings import Check, CheckStatus, Finding, Severity
from privaudit.rules import Evidence, RuleMeta, register_rule
from privaudit.rules import common
from privaudit.rules.examples import LABEL_ONLY_OUTPUT, OPACUS_DP_SGD, PER_PRINCIPAL_LIMITS

RULE = RuleMeta(
    id="ATLAS-EXF-003",
    title="Membership inference",
    atlas_technique="AML.T0024.000",
    base_severity=Severity.MEDIUM,
    description=(
        "Someone with query access can tell whether a given person's record was used to train the model. "
        "For a model trained on patients, customers or employees, that alone discloses something about them."),
    risk=(
        "Models answer more confidently on records they were fitted to than on similar unseen records. The wider "
        "the gap between training and holdout behaviour, and the more of the confidence the API returns, the "
        "more reliably an attacker can single out members."),
    remediation=(
        "Train with differential privacy and state the budget; reduce memorisation (regularisation, early "
        "stopping, more data) until the train-holdout gap is small; serve labels only, or coarse top-1 scores, "
        "for sensitive models; limit and monitor queries per principal; re-run this audit in CI on every model."),
    remediation_examples={"DP-SGD with Opacus": OPACUS_DP_SGD, "Label-only answers": LABEL_ONLY_OUTPUT,
                          "Per-principal limits": PER_PRINCIPAL_LIMITS},
    mitigations=("AML.M0002", "AML.M0004", "AML.M0019", "AML.M0024"),
    audit_questions=(
        "Is differential privacy applied to models trained on sensitive data?",
        "What is the overfitting metric (train-holdout gap)?",
        "Are confidence scores exposed for models trained on sensitive data?",
        "Has the model been tested for membership inference?",
    ),
    references=(
        "https://atlas.mitre.org/techniques/AML.T0024.000",
        "Shokri et al. 2017, Membership Inference Attacks against Machine Learning Models",
        "Carlini et al. 2022, Membership Inference Attacks From First Principles (LiRA)",
        "Zarifzadeh et al. 2024, Low-Cost High-Power Membership Inference Attacks (RMIA)",
        "https://genai.owasp.org/llmrisk/llm022025-sensitive-information-disclosure/",
    ),
)


def _attack_power(ev: Evidence) -> Check:
    m, cid = ev.report.membership, common.check_id(RULE, "attack_power", ev.model_name)
    title = "Membership attacks do no better than chance"
    v = m.verdict
    if v is None:
        return Check(id=cid, check="attack_power", title=title, status=CheckStatus.UNKNOWN,
                     evidence="this report has no held-out membership test", needs="re-run the audit with this version")
    text = v.message
    if not ev.report.split_check.passed:
        text += "; the split check failed, so this may reflect how the data was split rather than the model"
    # The margin is the policy's, so a stored report re-judged under another policy follows that policy.
    if common.proves_leakage(v, ev.policy):
        status = CheckStatus.FAIL
    else:
        status = CheckStatus.UNKNOWN if v.status == "unresolved" else CheckStatus.PASS
    return Check(id=cid, check="attack_power", title=title, status=status, evidence=text,
                 needs=verdict.needs_text(v.holdout_needed) if status == CheckStatus.UNKNOWN else None,
                 data={"level": common.membership_power(m, ev.policy), "best": m.best,
                       "tpr_lower": v.tpr_lower, "fpr_upper": v.fpr_upper, "ratio_lower": v.ratio_lower,
                       "epsilon_lower_bound": v.epsilon_lower_bound, "confidence": v.confidence})


def _overfitting(ev: Evidence) -> Check:
    m, d, pol = ev.report.membership, ev.report.data, ev.policy
    cid = common.check_id(RULE, "overfitting", ev.model_name)
    lower = metrics.accuracy_gap_lower_bound(round(m.train_accuracy * d.train), d.train,
                                             round(m.holdout_accuracy * d.holdout), d.holdout, pol.confidence)
    text = (f"train accuracy {m.train_accuracy:.3f}, holdout {m.holdout_accuracy:.3f}: gap {m.generalization_gap:.3f}, "
            f"at least {lower:.3f} at {pol.confidence:.0%} confidence (policy: at most {pol.max_generalization_gap})")
    if lower > pol.max_generalization_gap:
        status, needs = CheckStatus.FAIL, None
    elif m.generalization_gap <= pol.max_generalization_gap:
        status, needs = CheckStatus.PASS, None
    else:  # above the policy as measured, but the sample cannot tell it from chance
        status, needs = CheckStatus.UNKNOWN, "more train and holdout records, to tell the gap from chance"
    return Check(id=cid, check="overfitting", title="Train-holdout accuracy gap within policy", status=status,
                 evidence=text, needs=needs, data={"gap": m.generalization_gap, "gap_lower_bound": lower})


@register_rule(RULE)
def evaluate(ev: Evidence) -> Finding:
    m = ev.report.membership
    pol = ev.policy
    level = common.membership_power(m, pol)
    power = _attack_power(ev)
    checks: list[Check] = [
        power,
        _overfitting(ev),
        common.confidence_exposure(RULE, ev),
        common.differential_privacy(RULE, ev),
        Check(id=common.check_id(RULE, "tested", ev.model_name), check="tested",
              title="A membership-inference test ran on this model version", status=CheckStatus.PASS,
              evidence=(f"{len(m.attacks)} attacks ran on model "
                        f"{(ev.report.provenance.sha256.get('model') or 'in memory')[:12]}")),
        common.query_limits(RULE, ev),
        common.probing_monitoring(RULE, ev),
    ]
    severity = common.severity_from_table(common.MEMBERSHIP_TABLE, level, pol.data_sensitivity)
    reason = f"attack power {level} on {pol.data_sensitivity} data"
    if level != "none" and m.verdict is not None:
        reason += f" (TPR provably at least {m.verdict.ratio_lower or float('inf'):.1f}x the FPR)"
    failed = [c.check for c in checks if c.status == CheckStatus.FAIL]
    if level == "none" and failed:
        severity, reason = Severity.LOW, f"no leakage shown by the attacks, but a check failed: {', '.join(failed)}"
    dp = m.dp_claim
    if dp is not None and dp.contradicted and not severity.at_least(Severity.HIGH):
        severity, reason = Severity.HIGH, reason + "; a differential-privacy claim is contradicted by the audit"
    answers = [
        common.answer(RULE.audit_questions[0], checks, ["differential_privacy"]),
        common.answer(RULE.audit_questions[1], checks, ["overfitting"]),
        common.answer(RULE.audit_questions[2], checks, ["confidence_exposure"]),
        common.answer(RULE.audit_questions[3], checks, ["tested", "attack_power"]),
    ]
    summary = f"Membership inference: {power.evidence}."
    return common.finding(RULE, ev, checks, severity, reason, summary, answers, core=("attack_power",))
