"""SARIF 2.1.0 for GitHub code scanning: one rule per privaudit rule, one result per failed finding.

GitHub needs every result to point at a file in the repository. A model audited from a local file
points at that file (relative to the working directory); an endpoint, or a model outside the
working directory, points at ``WriteOptions.sarif_location`` (the CLI passes the policy file or
README.md). Results carry a fingerprint derived from the finding id (``<rule>/<model name>``), so
retraining the same model updates the existing alert instead of opening a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from privaudit.findings import SECURITY_SEVERITY, CheckStatus, Finding, Severity
from privaudit.report import WriteOptions, register_writer
from privaudit.report.schema import Report
from privaudit.rules import mappings_for, rules

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"
FINGERPRINT_KEY = "privauditFindingId/v1"
MAX_TAGS = 10
DEFAULT_LOCATION = "README.md"  # used only when the model is not a local file and no sarif_location was given

LEVELS = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note",
          Severity.INFO: "note"}


def level_for(severity: Severity) -> str:
    return LEVELS[severity]


def _pascal(title: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in title.replace("-", " ").split())


def _fence_language(code: str) -> str:
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    return "yaml" if ".yaml" in first or ".yml" in first else "python"


def _link(ref: str) -> str:
    return f"<{ref}>" if ref.startswith(("http://", "https://")) else ref


def _help(meta: Any, mappings: dict[str, list[str]]) -> tuple[str, str]:
    """Plain-text and Markdown help for a rule, from its metadata."""
    text = [meta.description, "", f"Risk: {meta.risk}", "", f"Remediation: {meta.remediation}"]
    md = [f"**{meta.title}** (MITRE ATLAS {meta.atlas_technique})", "", meta.description, "", "## Risk", "",
          meta.risk, "", "## Remediation", "", meta.remediation]
    for name, code in meta.remediation_examples.items():
        text += ["", f"{name}:", code]
        md += ["", f"**{name}**", "", f"```{_fence_language(code)}", code, "```"]
    if meta.mitigations:
        text += ["", "ATLAS mitigations: " + ", ".join(meta.mitigations)]
        md += ["", "ATLAS mitigations: " + ", ".join(f"`{m}`" for m in meta.mitigations)]
    if meta.audit_questions:
        text += ["", "Audit questions:"] + [f"- {q}" for q in meta.audit_questions]
        md += ["", "## Audit questions", ""] + [f"- {q}" for q in meta.audit_questions]
    if mappings:
        text += ["", "Frameworks:"] + [f"- {fw}: {', '.join(reqs)}" for fw, reqs in sorted(mappings.items())]
        md += ["", "## Frameworks", ""] + [f"- {fw}: {', '.join(reqs)}" for fw, reqs in sorted(mappings.items())]
    if meta.references:
        text += ["", "References:"] + [f"- {r}" for r in meta.references]
        md += ["", "## References", ""] + [f"- {_link(r)}" for r in meta.references]
    return "\n".join(text), "\n".join(md)


def _tags(technique: str, mappings: dict[str, list[str]]) -> list[str]:
    """GitHub shows at most 10 tags per rule, so the most useful come first: the ATLAS technique, the
    framework requirements, and last the ATLAS mitigations."""
    tags = ["security", "privacy", f"mitre-atlas/{technique}"]
    mitigations: list[str] = []
    for framework, requirements in sorted(mappings.items()):
        for req in requirements:
            (mitigations if req.startswith("AML.M") else tags).append(f"{framework}/{req}")
    return list(dict.fromkeys(tags + mitigations))[:MAX_TAGS]


def _rule_finding(report: Any, rule_id: str) -> Finding | None:
    """The finding that sets a rule's severity: the worst failed one, else any one for the rule.
    ``report`` is anything with ``findings`` (or the findings themselves)."""
    items: Sequence[Finding] = getattr(report, "findings", report)
    mine = [f for f in items if f.rule_id == rule_id]
    failed = [f for f in mine if f.status == "fail"]
    if failed:
        return max(failed, key=lambda f: f.severity.rank)
    return mine[0] if mine else None


def _descriptor(meta: Any, finding: Finding | None) -> dict[str, Any]:
    mappings = finding.mappings if finding is not None else mappings_for(meta.id)
    severity = finding.severity if finding is not None and finding.status == "fail" else meta.base_severity
    text, markdown = _help(meta, mappings)
    return {
        "id": meta.id,
        "name": _pascal(meta.title),
        "shortDescription": {"text": f"{meta.title} (MITRE ATLAS {meta.atlas_technique})"},
        "fullDescription": {"text": meta.description},
        "help": {"text": text, "markdown": markdown},
        "defaultConfiguration": {"level": level_for(meta.base_severity)},
        "properties": {
            "security-severity": SECURITY_SEVERITY[severity],
            "tags": _tags(meta.atlas_technique, mappings),
            "precision": "medium",
        },
    }


def _location_uri(report: Report, options: WriteOptions) -> str:
    path = report.model.path
    if path and report.model.format != "http" and "://" not in path and (
            report.model.format in ("skops", "pickle") or Path(path).is_file()):
        try:
            rel = os.path.relpath(os.path.abspath(path), os.getcwd())
        except ValueError:  # another drive on Windows
            rel = ""
        if rel and rel != ".." and not rel.startswith(".." + os.sep) and not os.path.isabs(rel):
            return Path(rel).as_posix()
    return options.sarif_location or DEFAULT_LOCATION


def _message(finding: Finding) -> str:
    lines = [finding.summary]
    failing = [c for c in finding.checks if c.status == CheckStatus.FAIL]
    if failing:
        lines += ["", "Failing checks:"] + [f"- {c.check}: {c.title} -- {c.evidence}" for c in failing]
    lines += ["", f"Severity {finding.severity.value}: {finding.severity_reason}."]
    return "\n".join(lines)


def _check_counts(finding: Finding) -> dict[str, int]:
    return {s.value: sum(c.status == s for c in finding.checks) for s in CheckStatus}


def location(uri: str, line: int = 1, arn: str | None = None) -> dict[str, Any]:
    """A SARIF location: a file and line, plus the cloud resource (ARN) as a logical location."""
    loc: dict[str, Any] = {"physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": max(1, line)}}}
    if arn:
        loc["logicalLocations"] = [{"fullyQualifiedName": arn, "kind": "resource"}]
    return loc


def _result(finding: Finding, index: int, locations: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(locations, str):  # a file path (the monitor's SARIF passes one)
        locations = [location(locations)]
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": index,
        "level": level_for(finding.severity),
        "message": {"text": _message(finding)},
        "locations": locations[:1],
        "partialFingerprints": {FINGERPRINT_KEY: hashlib.sha256(finding.id.encode("utf-8")).hexdigest()},
        "properties": {
            "findingId": finding.id,
            "model": finding.model_name,
            "severity": finding.severity.value,
            "security-severity": SECURITY_SEVERITY[finding.severity],
            "severityReason": finding.severity_reason,
            "checks": _check_counts(finding),
            "failingChecks": [c.check for c in finding.checks if c.status == CheckStatus.FAIL],
        },
    }
    if len(locations) > 1:
        result["relatedLocations"] = [{"id": i, **loc} for i, loc in enumerate(locations[1:], start=1)]
    if finding.suppressed:
        result["suppressions"] = [{"kind": "external",
                                   "justification": finding.suppression_reason or "suppressed by policy"}]
    return result


def build_log(findings: Sequence[Finding], locate: Callable[[Finding], list[dict[str, Any]]], *, version: str,
              automation_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    """The one SARIF builder: rule descriptors from the rule registry, one result per failed finding
    at the locations ``locate`` gives (the first is primary, the rest related)."""

    metas = [meta for meta, _fn in rules().values()]
    index = {meta.id: i for i, meta in enumerate(metas)}
    descriptors = [_descriptor(meta, _rule_finding(findings, meta.id)) for meta in metas]
    results = []
    for finding in findings:
        if finding.status != "fail":
            continue
        if finding.rule_id not in index:  # a rule this version does not know (report from another version)
            continue
        results.append(_result(finding, index[finding.rule_id], locate(finding)))
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "privaudit", "version": version, "semanticVersion": version,
                            "rules": descriptors}},  # no informationUri: privaudit has no published home page yet
        "automationDetails": {"id": automation_id},
        "invocations": [{"executionSuccessful": True}],
        "results": results,
        "properties": properties,
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def to_sarif(report: Report, options: WriteOptions | None = None) -> dict[str, Any]:
    """The SARIF log as a dict (see :func:`render` for the text)."""
    options = options or WriteOptions()
    uri = _location_uri(report, options)
    model_name = report.model_name or "model"
    return build_log(report.findings, lambda _f: [location(uri)], version=report.provenance.privaudit_version,
                     automation_id=f"privaudit/{model_name}/",
                     properties={"schemaVersion": report.schema_version, "modelName": model_name,
                                 "modelSha256": report.provenance.sha256.get("model"),
                                 "createdAt": report.provenance.created_at})


def scan_locations(report: Any, finding: Finding, fallback: str) -> list[dict[str, Any]]:
    """Where a scan finding points: the resource behind its first failing check (file and line, or
    the ARN with ``fallback`` as the file GitHub needs), then the deployment's endpoint."""
    out: list[dict[str, Any]] = []
    for c in finding.checks:
        where = c.data.get("location") if c.status == CheckStatus.FAIL else None
        if isinstance(where, dict):
            loc = location(str(where["file"]), int(where.get("line") or 1)) if where.get("file") else \
                location(fallback, 1, str(where.get("arn")))
            if loc not in out:
                out.append(loc)
    dep = report.deployment_for(finding)
    if dep is not None:
        loc = location(dep.file, dep.line or 1) if dep.file else location(fallback, 1, dep.arn or dep.id)
        if loc not in out:
            out.append(loc)
    return out or [location(fallback)]


def to_sarif_scan(report: Any, options: WriteOptions | None = None) -> dict[str, Any]:
    """SARIF for a ScanReport, through the same :func:`build_log`."""
    options = options or WriteOptions()
    fallback = options.sarif_location or DEFAULT_LOCATION
    return build_log(report.findings, lambda f: scan_locations(report, f, fallback),
                     version=report.provenance.privaudit_version, automation_id="privaudit/scan/",
                     properties={"schemaVersion": report.schema_version, "reportKind": "scan",
                                 "deployments": len(report.deployments), "createdAt": report.provenance.created_at})


@register_writer("sarif", ".sarif", ".sarif.json")
def render(report: Report, options: WriteOptions) -> str:
    return json.dumps(to_sarif(report, options), indent=2, ensure_ascii=False) + "\n"


@register_writer("sarif", ".sarif", ".sarif.json", kind="scan")
def render_scan(report: Any, options: WriteOptions) -> str:
    return json.dumps(to_sarif_scan(report, options), indent=2, ensure_ascii=False) + "\n"


def to_sarif_monitor(report: Any, options: WriteOptions | None = None) -> dict[str, Any]:
    """SARIF for a MonitorReport (privaudit monitor): results point at the first log when it lies under the
    working directory, else at ``--sarif-location`` or README.md."""
    options = options or WriteOptions()
    uri = options.sarif_location
    if uri is None and report.sources:
        rel = os.path.relpath(os.path.abspath(report.sources[0]), os.getcwd())
        uri = Path(rel).as_posix() if not rel.startswith("..") and not os.path.isabs(rel) else None
    where = [location(uri or DEFAULT_LOCATION)]
    return build_log(report.findings, lambda _f: where, version=report.privaudit_version,
                     automation_id=f"privaudit-monitor/{report.model_name}/",
                     properties={"kind": report.kind, "modelName": report.model_name, "records": report.records,
                                 "queriesPerSecond": report.throughput.queries_per_second,
                                 "createdAt": report.created_at})


@register_writer("sarif", ".sarif", ".sarif.json", kind="monitor")
def render_monitor(report: Any, options: WriteOptions) -> str:
    return json.dumps(to_sarif_monitor(report, options), indent=2, ensure_ascii=False) + "\n"
