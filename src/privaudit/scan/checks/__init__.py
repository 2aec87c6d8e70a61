"""Scan checks: one module per check, each with its metadata (``META``) beside its ``run``.

``run(deployment, context)`` returns the check's :class:`ControlOutcome` (one, or one per rule when
the rules need different evidence). :func:`run_checks` runs every registered check and turns a
check into UNKNOWN when the live reader was denied an AWS call that feeds it, naming the permission.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from privaudit.findings import CheckStatus
from privaudit.rules import Policy
from privaudit.rules.deployment import ControlOutcome
from privaudit.scan.graph import Deployment
from privaudit.scan.model import Resource

CHECK_MODULES = ("query_limits", "confidence_exposure", "probing_monitoring", "capture_encryption",
                 "differential_privacy", "tested")


@dataclass(frozen=True)
class CheckMeta:
    key: str
    title: str
    reads: str  # what the check looks at, for docs/scan.md and --help
    aws_operations: tuple[str, ...]  # live calls whose denial leaves the check UNKNOWN


@dataclass(frozen=True)
class Context:
    policy: Policy
    audit: Any = None  # privaudit.report.schema.Report joined by model name, or None
    audit_source: str | None = None
    reports_dir: Path | None = None
    report_problem: str | None = None  # e.g. the tag names a report that is not there


RunFn = Callable[[Deployment, Context], list[ControlOutcome]]
_CHECKS: dict[str, tuple[CheckMeta, RunFn]] = {}


def register_check(meta: CheckMeta) -> Callable[[RunFn], RunFn]:
    def deco(fn: RunFn) -> RunFn:
        _CHECKS[meta.key] = (meta, fn)
        return fn

    return deco


def checks() -> dict[str, tuple[CheckMeta, RunFn]]:
    for module in CHECK_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return {k: _CHECKS[k] for k in CHECK_MODULES}


def location(res: Resource) -> dict[str, Any]:
    if res.file is not None:
        return {"file": res.file, "line": res.line or 1}
    return {"arn": res.arn or res.address}


def outcome(meta: CheckMeta, status: CheckStatus, evidence: str, resources: list[Resource] | None = None, *,
            needs: str | None = None, at: Resource | None = None, rule_id: str | None = None,
            data: dict[str, Any] | None = None) -> ControlOutcome:
    res = resources or []
    where = at if at is not None else (res[0] if res else None)
    return ControlOutcome(check=meta.key, title=meta.title, status=status, evidence=evidence, needs=needs,
                          resources=tuple(dict.fromkeys(r.arn or r.address for r in res)),
                          location=location(where) if where is not None else None, rule_id=rule_id, data=data or {})


def run_checks(dep: Deployment, ctx: Context) -> list[ControlOutcome]:
    out: list[ControlOutcome] = []
    for meta, fn in checks().values():
        denied = {op: perm for op, perm in dep.denied.items() if op in meta.aws_operations}
        results = fn(dep, ctx)
        if denied:
            perms = ", ".join(f"{perm} ({op} was denied)" for op, perm in sorted(denied.items()))
            results = [ControlOutcome(check=r.check, title=r.title, status=CheckStatus.UNKNOWN,
                                      evidence=f"the scan was not allowed to read everything this check needs: {perms}; "
                                               f"what it could read: {r.evidence}",
                                      needs=f"grant the scanning role {', '.join(sorted(set(denied.values())))} "
                                            "(docs/scan.md lists the read-only policy)",
                                      resources=r.resources, location=r.location, rule_id=r.rule_id,
                                      data={**r.data, "denied": sorted(denied)}) for r in results]
        out += results
    return out
