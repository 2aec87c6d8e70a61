"""``privaudit scan``: find model deployments in infrastructure code and live AWS accounts, and
judge the ATLAS-EXF-003/001 controls on each.

parse (terraform, cloudformation, kubernetes, guardfile; aws) -> graph -> checks -> rules.deployment
-> findings in a :class:`~privaudit.report.scan_schema.ScanReport`, which the usual writers, gate,
baseline and suppressions take. python-hcl2 and boto3 are imported only when needed (the ``scan`` extra).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from privaudit import __version__
from privaudit.ci.policy import Suppression, apply_suppressions
from privaudit.errors import NothingAuditable
from privaudit.report.scan_schema import DeploymentReport, GraphEdge, ScanProvenance, ScanReport
from privaudit.rules import SENSITIVITIES, Policy, rules
from privaudit.rules.deployment import DeploymentEvidence, evaluate_deployment
from privaudit.scan import graph, loader
from privaudit.scan.checks import Context, run_checks
from privaudit.scan.reports import ReportStore

SENSITIVITY_TAGS = ("privaudit:data-sensitivity", "privacy:data-sensitivity", "privaudit.io/data-sensitivity",
                    "data-sensitivity", "data_sensitivity")


@dataclass(frozen=True)
class AwsOptions:
    """What the live reader reads: a profile, regions (default: the profile's), an endpoint URL (moto, LocalStack)."""

    profile: str | None = None
    regions: tuple[str, ...] = ()
    endpoint_url: str | None = None
    max_workers: int = 8
    show_progress: bool = False
    session: Any = None  # a boto3 Session to use instead of one made from ``profile`` (tests, embedding)


@dataclass(frozen=True)
class ScanConfig:
    paths: tuple[Path, ...] = ()
    aws: AwsOptions | None = None
    policy: Policy = field(default_factory=Policy)
    reports_dir: Path | None = None
    jobs: int | None = None
    command_line: tuple[str, ...] = ()


def _sensitivity(dep: Any, policy: Policy) -> tuple[str, str, str | None]:
    value = dep.tag(*SENSITIVITY_TAGS)
    if value is None:
        return policy.data_sensitivity, "policy", None
    v = value.strip().lower()
    if v not in SENSITIVITIES:
        return policy.data_sensitivity, "policy", (f"{dep.endpoint.where}: data-sensitivity tag {value!r} is not one of "
                                                   f"{', '.join(SENSITIVITIES)}; the policy's {policy.data_sensitivity} was used")
    return v, f"tag on {dep.endpoint.name}", None


def inline_suppressions(deployments: Sequence[Any], rule_ids: Sequence[str]) -> list[Any]:
    """``# privaudit:skip=CHECK reason`` on any resource of a deployment, as policy suppressions.
    CHECK may be a check key (every rule), RULE/check, a full check id, or a rule id (the whole finding)."""

    out = []
    for dep in deployments:
        for res in dep.resources:
            for skip in res.skips:
                c = skip.check
                if c in rule_ids:
                    ids = [f"{c}/{dep.name}"]
                elif c.count("/") >= 2:
                    ids = [c]
                elif "/" in c:
                    ids = [f"{c}/{dep.name}"]
                else:
                    ids = [f"{r}/{c}/{dep.name}" for r in rule_ids]
                out += [Suppression(id=i, reason=f"{skip.reason} (inline in {res.where})", expires=_dt.date.max) for i in ids]
    return list({s.id: s for s in out}.values())


def scan(config: ScanConfig) -> Any:
    """Scan the configured paths (and AWS account); returns a ScanReport with inline suppressions applied."""

    start = time.perf_counter()
    resources, files = loader.load_resources(list(config.paths), config.jobs) if config.paths else ([], 0)
    denied: dict[str, dict[str, str]] = {}
    warnings: list[str] = []
    if config.aws is not None:
        from privaudit.scan.aws import read_account

        live = read_account(config.aws)
        resources += live.resources
        denied = live.denied
        warnings += live.warnings
    store = ReportStore(config.reports_dir)
    warnings += store.warnings
    # Live resources are linked region by region (names repeat across regions); files all together.
    groups: dict[str | None, list[Any]] = {}
    for r in resources:
        groups.setdefault(r.region if r.arn else None, []).append(r)
    deployments = [d for _region, group in sorted(groups.items(), key=lambda kv: kv[0] or "") for d in graph.build(group)]
    graph.unique_names(deployments)
    deps_out, findings = [], []
    for dep in deployments:
        region = dep.endpoint.region
        if region is not None:
            dep.denied = {**denied.get("*", {}), **denied.get(region, {})}
        sensitivity, sens_source, problem = _sensitivity(dep, config.policy)
        if problem:
            warnings.append(problem)
        audit, audit_src, report_problem = store.join(dep)
        ctx = Context(policy=config.policy, audit=audit, audit_source=audit_src, reports_dir=config.reports_dir,
                      report_problem=report_problem)
        ev = DeploymentEvidence(deployment_id=dep.id, name=dep.name, kind=dep.kind, outcomes=tuple(run_checks(dep, ctx)),
                                policy=config.policy, data_sensitivity=sensitivity, sensitivity_source=sens_source,
                                audit_findings=tuple(audit.findings) if audit is not None else (), audit_source=audit_src)
        findings += evaluate_deployment(ev)
        ep = dep.endpoint
        deps_out.append(DeploymentReport(
            id=dep.id, name=dep.name, kind=dep.kind, source=ep.type, file=ep.file, line=ep.line, arn=ep.arn,
            region=ep.region, data_sensitivity=sensitivity, sensitivity_source=sens_source, audit_report=audit_src,
            paths=[p.label() for p in dep.paths], resources=[r.ref() for r in dep.resources],
            edges=[GraphEdge(source=a, target=b, label=lbl) for a, b, lbl in dep.edges]))
    regions = sorted({r for r in (config.aws.regions if config.aws else ())})
    report = ScanReport(
        provenance=ScanProvenance(privaudit_version=__version__, command_line=list(config.command_line),
                                  created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  paths=[str(p) for p in config.paths], aws_regions=regions, files_read=files,
                                  resources_read=len(resources), seconds=round(time.perf_counter() - start, 3)),
        deployments=deps_out, findings=findings, warnings=warnings)
    unlisted = sorted(region for region, ops in denied.items() if "ListEndpoints" in ops)
    if unlisted and not deployments:

        raise NothingAuditable(f"--aws: sagemaker:ListEndpoints was denied in {', '.join(unlisted)} and no deployment "
                               "was found elsewhere; grant the read-only policy in docs/scan.md")
    inline = inline_suppressions(deployments, list(rules()))
    return apply_suppressions(report, inline) if inline else report


__all__ = ["AwsOptions", "ScanConfig", "scan"]
