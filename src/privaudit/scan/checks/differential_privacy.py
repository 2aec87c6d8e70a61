"""differential_privacy: the model behind the endpoint was trained with DP within the policy's budget.

Evidence: the ``privacy:dp-epsilon`` tag or label (a number, or ``none``), and the DP claim of a
joined privaudit audit report (whose verdict may contradict the claim). No evidence: UNKNOWN.
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import Deployment
from privaudit.scan.model import as_number

META = CheckMeta(
    key="differential_privacy", title="Trained with differential privacy within the policy's epsilon",
    reads="the privacy:dp-epsilon tag or label; the DP claim and verdict of a joined privaudit report",
    aws_operations=("ListTags",),
)
EPSILON_TAGS = ("privacy:dp-epsilon", "privacy.privaudit.io/dp-epsilon", "privaudit.io/dp-epsilon")


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    ep, limit = dep.endpoint, ctx.policy.max_epsilon
    claim = getattr(getattr(ctx.audit, "membership", None), "dp_claim", None)
    if claim is not None and claim.contradicted:
        return [outcome(META, CheckStatus.FAIL, f"report {ctx.audit_source}: claimed epsilon {claim.claimed_epsilon:g} is "
                                                f"contradicted, lower bound {claim.epsilon_lower_bound:.2f}", [ep])]
    tag = dep.tag(*EPSILON_TAGS)
    if tag is not None:
        eps = as_number(tag)
        if tag.strip().lower() in ("none", "no", "false"):
            return [outcome(META, CheckStatus.FAIL, f"{ep.name} is tagged {EPSILON_TAGS[0]}={tag}: trained without DP", [ep])]
        if eps is None or eps <= 0:
            return [outcome(META, CheckStatus.UNKNOWN, f"{ep.name}: tag {EPSILON_TAGS[0]}={tag!r} is not a positive number",
                            [ep], needs=f"set {EPSILON_TAGS[0]} to the training epsilon, e.g. 3, or none")]
        ok = eps <= limit
        extra = f"; report {ctx.audit_source} finds the claim {claim.verdict}" if claim is not None else ""
        return [outcome(META, CheckStatus.PASS if ok else CheckStatus.FAIL,
                        f"{ep.name} is tagged {EPSILON_TAGS[0]}={tag} (policy allows up to {limit:g}){extra}", [ep],
                        data={"claimed_epsilon": eps})]
    if claim is not None:
        ok = claim.claimed_epsilon <= limit
        return [outcome(META, CheckStatus.PASS if ok else CheckStatus.FAIL,
                        f"report {ctx.audit_source}: epsilon {claim.claimed_epsilon:g} claimed, {claim.verdict} with the "
                        f"measured lower bound {claim.epsilon_lower_bound:.2f} (policy allows up to {limit:g})", [ep])]
    return [outcome(META, CheckStatus.UNKNOWN, f"no differential-privacy evidence for {ep.name}", [ep],
                    needs=f"tag the endpoint {EPSILON_TAGS[0]}=EPSILON (or none), or join an audit run with "
                          "--claimed-epsilon via --reports DIR")]
