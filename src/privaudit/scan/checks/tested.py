"""tested: a privaudit audit of the served model exists (joined from ``--reports DIR`` by model
name, or named by the ``privaudit:report`` tag).

Per rule: ATLAS-EXF-003 needs membership attacks in the report, ATLAS-EXF-001 an inversion or
attribute-inference section. FAIL when the deployment says it was not tested
(``privaudit:report=none``) or when ``--reports DIR`` -- the team's register of audits -- holds no
report for it. Without ``--reports`` and without a tag: UNKNOWN.
"""

from __future__ import annotations

from privaudit.findings import CheckStatus
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.checks import CheckMeta, Context, outcome, register_check
from privaudit.scan.graph import Deployment

META = CheckMeta(key="tested", title="The deployed model was audited with privaudit",
                 reads="a privaudit JSON report in --reports DIR with the deployment's model name, or the "
                       "privaudit:report tag naming one", aws_operations=("ListTags",))
REPORT_TAGS = ("privaudit:report", "privaudit.io/report")


def _per_rule(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    report, src, ep = ctx.audit, ctx.audit_source, dep.endpoint
    m = report.membership
    inv = report.inversion is not None or report.attribute_inference is not None
    return [
        outcome(META, CheckStatus.PASS if m.attacks else CheckStatus.UNKNOWN,
                f"report {src}: {len(m.attacks)} membership attacks ran on model {report.model_name}", [ep],
                rule_id="ATLAS-EXF-003", needs=None if m.attacks else "re-run privaudit audit with membership attacks"),
        outcome(META, CheckStatus.PASS if inv else CheckStatus.UNKNOWN,
                f"report {src}: " + ("inversion evidence present" if inv else "no inversion or attribute-inference test"),
                [ep], rule_id="ATLAS-EXF-001", needs=None if inv else "run privaudit audit --inversion or --sensitive COLUMN"),
    ]


@register_check(META)
def run(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    ep = dep.endpoint
    if ctx.audit is not None:
        return _per_rule(dep, ctx)
    tag = dep.tag(*REPORT_TAGS)
    if tag is not None and tag.strip().lower() in ("none", "no", "false"):
        return [outcome(META, CheckStatus.FAIL, f"{ep.name} is tagged {REPORT_TAGS[0]}={tag}: never audited", [ep])]
    if ctx.report_problem:
        return [outcome(META, CheckStatus.UNKNOWN, ctx.report_problem, [ep],
                        needs=f"pass --reports DIR holding the report the {REPORT_TAGS[0]} tag names")]
    if ctx.reports_dir is not None:
        return [outcome(META, CheckStatus.FAIL, f"no privaudit report for model {dep.name} in {ctx.reports_dir}", [ep],
                        needs=f"run privaudit audit --model-name {dep.name} -o {ctx.reports_dir}/{dep.name}.json")]
    return [outcome(META, CheckStatus.UNKNOWN, f"no audit evidence for {ep.name}", [ep],
                    needs=f"pass --reports DIR with privaudit JSON reports, or tag the endpoint {REPORT_TAGS[0]}=FILE")]
