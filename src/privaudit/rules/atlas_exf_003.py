"""ATLAS-EXF-003 Membership inference (MITRE ATLAS AML.T0024.000)."""

from __future__ import annotations

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


@register_rule(RULE)
def evaluate(ev: Evidence) -> Finding:
    m = ev.report.membership
    pol = ev.policy
    level, why = common.membership_power(m, pol)
    best = next((a for a in m.attacks if a.name == m.best), None)
    if best is not None:
        ratio, key = common.tpr_ratio(best)
        power_text = (f"strongest attack {best.name}: AUC {best.auc:.3f}, "
                      + (f"TPR {ratio * float(key):.2%} at {float(key):.1%} FPR, " if ratio is not None else "")
                      + f"epsilon lower bound {best.epsilon_lower_bound:.2f}; power {level} ({why})")
    else:
        power_text = "no attack ran"
    if not ev.report.split_check.passed:
        power_text += "; the split check failed, so these numbers may reflect the split rather than the model"
    checks: list[Check] = [
        Check(id=common.check_id(RULE, "attack_power", ev.model_name), check="attack_power",
              title="Membership attacks do no better than chance",
              status=CheckStatus.PASS if level == "none" else CheckStatus.FAIL, evidence=power_text,
              data={"level": level, "best": m.best}),
        Check(id=common.check_id(RULE, "overfitting", ev.model_name), check="overfitting",
              title="Train-holdout accuracy gap within policy",
              status=CheckStatus.PASS if m.generalization_gap <= pol.max_generalization_gap else CheckStatus.FAIL,
              evidence=(f"train accuracy {m.train_accuracy:.3f}, holdout {m.holdout_accuracy:.3f}, gap "
                        f"{m.generalization_gap:.3f} (policy: at most {pol.max_generalization_gap})"),
              data={"gap": m.generalization_gap}),
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
    if level == "none" and any(c.status == CheckStatus.FAIL for c in checks):
        severity, reason = Severity.LOW, "no measurable attack, but a control is missing"
    dp = m.dp_claim
    if dp is not None and dp.contradicted and not severity.at_least(Severity.HIGH):
        severity, reason = Severity.HIGH, reason + "; a differential-privacy claim is contradicted by the audit"
    answers = [
        common.answer(RULE.audit_questions[0], checks, ["differential_privacy"]),
        common.answer(RULE.audit_questions[1], checks, ["overfitting"]),
        common.answer(RULE.audit_questions[2], checks, ["confidence_exposure"]),
        common.answer(RULE.audit_questions[3], checks, ["tested", "attack_power"]),
    ]
    summary = f"Membership inference: {power_text}."
    return common.finding(RULE, ev, checks, severity, reason, summary, answers, core=("attack_power",))
