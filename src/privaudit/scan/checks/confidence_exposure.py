"""confidence_exposure: callers get labels (or a coarse top-1), not confidence scores.

FAIL where the deployment returns scores: KServe sklearn/xgboost/lightgbm with ``PREDICT_PROBA``,
a Seldon SKLEARN_SERVER on ``predict_proba`` (its default), SageMaker Clarify online explanations
(``ExplainerConfig``), a guard serving probabilities. PASS where a guard, a Seldon server on
``predict``, or a transformer declared with ``privaudit:output=label|top1`` serves labels or top-1.
Otherwise UNKNOWN: the container's output is not visible in infrastructure code.
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import Deployment

META = CheckMeta(
    key="confidence_exposure", title="Confidence scores are not exposed to callers",
    reads="guard.yaml hardening; KServe predictor format and PREDICT_PROBA; Seldon server and method; SageMaker "
          "ExplainerConfig; the privaudit:output tag or annotation",
    aws_operations=("DescribeEndpoint", "DescribeEndpointConfig"),
)
HARDENED = {"label", "labels", "top1", "top-1", "top_1"}
OUTPUT_TAGS = ("privaudit:output", "privaudit.io/output")


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    ep = dep.endpoint
    for g in dep.guards:
        c = g.props["controls"]
        if c.hardening_output is not None:
            hardened = c.hardening_output == "label" or (c.hardening_output == "top_k" and (c.hardening_k or 99) <= 1)
            detail = f"guard {g.name} serves {c.hardening_output}" + (f" (top-{c.hardening_k})" if c.hardening_k else "")
            return [outcome(META, CheckStatus.PASS if hardened else CheckStatus.FAIL, detail, [g])]
    declared = dep.tag(*OUTPUT_TAGS)
    if declared is not None:
        ok = declared.strip().lower() in HARDENED
        return [outcome(META, CheckStatus.PASS if ok else CheckStatus.FAIL,
                        f"{ep.name} is tagged {OUTPUT_TAGS[0]}={declared}" + ("" if ok else ": callers get scores"), [ep])]
    p = ep.props
    if ep.kind == "kserve":
        if p.get("proba") is True and p.get("format") in ("sklearn", "xgboost", "lightgbm"):
            return [outcome(META, CheckStatus.FAIL, f"KServe {p['format']} predictor with PREDICT_PROBA=true returns "
                                                    "class probabilities", [ep])]
    if ep.kind == "seldon" and p.get("implementation") == "SKLEARN_SERVER":
        method = p.get("method") or "predict_proba"
        if method == "predict":
            return [outcome(META, CheckStatus.PASS, "Seldon SKLEARN_SERVER with method=predict returns labels", [ep])]
        return [outcome(META, CheckStatus.FAIL, f"Seldon SKLEARN_SERVER with method={method}"
                        + (" (its default)" if not p.get("method") else "") + " returns class probabilities", [ep])]
    explainers = [c for c in dep.configs if c.props.get("explainer")]
    if explainers:
        return [outcome(META, CheckStatus.FAIL, f"endpoint config {explainers[0].name} has a Clarify online explainer: "
                                                "answers carry explanations and the scores behind them", explainers)]
    return [outcome(META, CheckStatus.UNKNOWN, f"what {ep.name}'s container returns is not visible in its configuration",
                    [ep], needs=f"put a guard with hardening in front, or tag the endpoint {OUTPUT_TAGS[0]}=label|top1|"
                               "probabilities, or audit the live endpoint (privaudit audit --model https://...)")]
