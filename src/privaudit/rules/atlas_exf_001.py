"""ATLAS-EXF-001 Model inversion (MITRE ATLAS AML.T0024.001).

Its attack evidence comes from the inversion audit (report keys ``inversion`` and
``attribute_inference``); when those are absent the attack checks are UNKNOWN.
"""

from __future__ import annotations

from typing import Any

from privaudit import metrics
from privaudit.findings import Check, CheckStatus, Finding, Severity
from privaudit.rules import Evidence, RuleMeta, register_rule
from privaudit.rules import common
from privaudit.rules.examples import LABEL_ONLY_OUTPUT, OPACUS_DP_SGD, PER_PRINCIPAL_LIMITS

RULE = RuleMeta(
    id="ATLAS-EXF-001",
    title="Model inversion",
    atlas_technique="AML.T0024.001",
    base_severity=Severity.HIGH,
    description=(
        "Someone with query access rebuilds what the model learned about its training data: what a class looks "
        "like (a face, a typical patient of a diagnosis) or a sensitive attribute of a person they already know."),
    risk=(
        "Many crafted queries, each nudging the input towards higher confidence, can recover recognisable "
        "features of training records. Unlimited query access and detailed confidence scores make it cheap."),
    remediation=(
        "Train with differential privacy; serve labels or coarse scores only; limit queries per principal "
        "(API key or token subject, not IP address); log inference traffic and alert on systematic probing; "
        "aggregate outputs where the use case allows."),
    remediation_examples={"DP-SGD with Opacus": OPACUS_DP_SGD, "Label-only answers": LABEL_ONLY_OUTPUT,
                          "Per-principal limits": PER_PRINCIPAL_LIMITS},
    mitigations=("AML.M0002", "AML.M0004", "AML.M0019", "AML.M0024"),
    audit_questions=(
        "What is the privacy budget (epsilon) of models trained with differential privacy?",
        "What is the query-rate limit per principal?",
        "Has the model been tested against inversion attacks?",
        "How is systematic probing detected?",
    ),
    references=(
        "https://atlas.mitre.org/techniques/AML.T0024.001",
        "Fredrikson, Jha, Ristenpart 2015, Model Inversion Attacks that Exploit Confidence Information",
        "Fredrikson et al. 2014, Privacy in Pharmacogenetics",
        "https://genai.owasp.org/llmrisk/llm022025-sensitive-information-disclosure/",
    ),
)


def _inversion_level(inv: Any, attr: Any, n_classes: int, ev: Evidence) -> tuple[str, list[Check]]:
    pol = ev.policy
    checks = []
    levels = [0]
    cid = common.check_id(RULE, "inversion_attack", ev.model_name)
    if inv is None:
        checks.append(Check(id=cid, check="inversion_attack", title="Class reconstructions are not recognisable",
                            status=CheckStatus.UNKNOWN, evidence="no inversion attack ran",
                            needs="run the audit with --inversion"))
    elif inv.get("mode") == "refused":
        checks.append(Check(id=cid, check="inversion_attack", title="Class reconstructions are not recognisable",
                            status=CheckStatus.PASS, evidence=f"inversion not possible: {inv.get('reason', 'label-only output')}"))
    else:
        acc = float(inv.get("attack_accuracy") or 0.0)
        chance = 1.0 / max(n_classes, 1)
        n = len(inv.get("classes") or []) or n_classes  # one reconstruction per inverted class
        hits = round(acc * n)
        # The evaluator's accuracy is a binomial count over n reconstructions: the level follows its
        # lower confidence bound, so a lucky handful of guesses is not a finding.
        acc_low = float(metrics.rate_bounds(hits, n, 0, n, pol.confidence)[0])
        best_low = float(metrics.rate_bounds(n, n, 0, n, pol.confidence)[0])
        adv_low = acc_low - chance
        lvl = common.level_of(adv_low, *common.INVERSION_ADVANTAGE, pol.max_inversion_advantage)
        text = (f"{inv.get('mode')} inversion: an independent evaluator recognised {hits} of {n} reconstructions "
                f"({acc:.0%}; at least {acc_low:.0%} at {pol.confidence:.0%} confidence, chance {chance:.0%}) with "
                f"{inv.get('queries_total', 0)} queries")
        if lvl:
            status, needs = CheckStatus.FAIL, None
            levels.append(lvl)
        elif best_low - chance <= pol.max_inversion_advantage:
            status, needs = CheckStatus.UNKNOWN, (f"{n} reconstructions cannot show recognition beyond chance by "
                                                  f"{pol.max_inversion_advantage:g}; invert more classes")
        else:
            status, needs = CheckStatus.PASS, None
        checks.append(Check(id=cid, check="inversion_attack", title="Class reconstructions are not recognisable",
                            status=status, evidence=text, needs=needs,
                            data={"attack_accuracy": acc, "accuracy_lower_bound": acc_low,
                                  "reconstructions": n}))
    cid = common.check_id(RULE, "attribute_inference", ev.model_name)
    if attr is None:
        checks.append(Check(id=cid, check="attribute_inference", title="A sensitive attribute cannot be inferred via the model",
                            status=CheckStatus.UNKNOWN, evidence="no attribute-inference attack ran",
                            needs="run the audit with --sensitive COLUMN"))
    else:
        lvl, check = attribute_check(attr, cid, pol)
        levels.append(lvl)
        checks.append(check)
    return common.LEVELS[max(levels)], checks


def attribute_check(attr: Any, cid: str, pol: Any) -> tuple[int, Check]:
    """Leakage is the training records' advantage over the best model-free baseline minus the holdout
    records'. Its level follows a lower confidence bound from the per-record win and loss counts, and a PASS
    needs a sample on which a moderate leak would have shown."""
    leak = float(attr.get("leakage") or 0.0)
    tr, ho = attr["train"], attr["holdout"]
    title = "A sensitive attribute cannot be inferred via the model"
    text = (f"column {attr.get('column')}: advantage over the best baseline {tr['advantage']:+.3f} on training "
            f"records, {ho['advantage']:+.3f} on holdout records; leakage {leak:+.3f}")
    counts = [part.get(k) for part in (tr, ho) for k in ("wins", "losses", "records")]
    if any(c is None for c in counts):
        return 0, Check(id=cid, check="attribute_inference", title=title, status=CheckStatus.UNKNOWN, evidence=text,
                        needs="re-run the audit with this privaudit version (the section lacks per-record counts)",
                        data={"leakage": leak})
    low, half = metrics.advantage_difference_bounds(*(int(c) for c in counts), confidence=pol.confidence)  # type: ignore[misc, arg-type]
    lvl = common.level_of(low, *common.ATTRIBUTE_LEAKAGE, pol.max_attribute_leakage)
    text += f" (at least {low:+.3f} at {pol.confidence:.0%} confidence)"
    moderate = common.ATTRIBUTE_LEAKAGE[1]
    if lvl:
        status, needs = CheckStatus.FAIL, None
    elif leak > pol.max_attribute_leakage or half > moderate - pol.max_attribute_leakage:
        status, needs = CheckStatus.UNKNOWN, (f"{tr['records']} training and {ho['records']} holdout records cannot "
                                              f"tell a leakage of {moderate:g} from none; audit more records")
    else:
        status, needs = CheckStatus.PASS, None
    return lvl, Check(id=cid, check="attribute_inference", title=title, status=status, evidence=text, needs=needs,
                      data={"leakage": leak, "leakage_lower_bound": low})


@register_rule(RULE)
def evaluate(ev: Evidence) -> Finding:
    report = ev.report
    inv = getattr(report, "inversion", None)
    attr = getattr(report, "attribute_inference", None)
    inv = inv.model_dump() if inv is not None and hasattr(inv, "model_dump") else inv
    attr = attr.model_dump() if attr is not None and hasattr(attr, "model_dump") else attr
    level, checks = _inversion_level(inv, attr, len(report.model.classes), ev)  # type: ignore[union-attr]
    ran = inv is not None or attr is not None
    checks += [
        common.confidence_exposure(RULE, ev),
        common.differential_privacy(RULE, ev),
        Check(id=common.check_id(RULE, "tested", ev.model_name), check="tested",
              title="An inversion test ran on this model version",
              status=CheckStatus.PASS if ran else CheckStatus.UNKNOWN,
              evidence="inversion evidence is in this report" if ran else "no inversion test in this report",
              needs=None if ran else "run the audit with --inversion or --sensitive COLUMN"),
        common.query_limits(RULE, ev),
        common.probing_monitoring(RULE, ev),
    ]
    severity = common.severity_from_table(common.INVERSION_TABLE, level, ev.policy.data_sensitivity)
    reason = f"inversion power {level} on {ev.policy.data_sensitivity} data"
    if level == "none" and any(c.status == CheckStatus.FAIL for c in checks):
        severity, reason = Severity.LOW, "no measured inversion, but a control is missing"
    answers = [
        common.answer(RULE.audit_questions[0], checks, ["differential_privacy"]),
        common.answer(RULE.audit_questions[1], checks, ["query_limits"]),
        common.answer(RULE.audit_questions[2], checks, ["tested", "inversion_attack", "attribute_inference"]),
        common.answer(RULE.audit_questions[3], checks, ["probing_monitoring"]),
    ]
    summary = "Model inversion: " + "; ".join(c.evidence for c in checks[:2]) + "."
    return common.finding(RULE, ev, checks, severity, reason, summary, answers,
                          core=("inversion_attack", "attribute_inference"))
