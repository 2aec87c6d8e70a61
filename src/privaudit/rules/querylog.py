"""Rules on query-log evidence (``privaudit monitor``): who probed the model, and whether anything stopped them.

The same ATLAS-EXF-003/001 metadata, check ids and audit questions as an audit; the checks are the ones a
query log can answer (probing seen, per detector, limits acting on probers), and every other audit
question says what would answer it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from privaudit.findings import AuditAnswer, Check, CheckStatus, Finding, Severity
from privaudit.report.monitor_schema import FlaggedPrincipal
from privaudit.rules import Evidence, common
from privaudit.rules.atlas_exf_001 import RULE as INVERSION
from privaudit.rules.atlas_exf_003 import RULE as MEMBERSHIP

RESPONDED = ("limited", "throttled", "blocked", "degraded")  # decisions showing a limit or response acted


@dataclass(frozen=True)
class QueryLogEvidence:
    """What a replay of the query log found: flagged principals, the detectors replayed, decision counts."""

    model_name: str
    flagged: tuple[FlaggedPrincipal, ...]
    detectors: tuple[str, ...]
    decisions: dict[str, int] = field(default_factory=dict)


def _describe(flagged: list[FlaggedPrincipal], limit: int = 5) -> str:
    parts = [f"{p.principal} ({', '.join(f'{d.detector} after {d.queries} queries' for d in p.detections)}; "
             f"reached {p.level})" for p in flagged[:limit]]
    more = len(flagged) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def evaluate_query_log(evidence: QueryLogEvidence) -> list[Finding]:
    """One finding per rule the query log bears on: membership inference and model inversion."""
    model_name, flagged, detectors = evidence.model_name, list(evidence.flagged), list(evidence.detectors)
    ev = Evidence(model_name=model_name, report=None)
    limited = sum(n for d, n in evidence.decisions.items() if d in RESPONDED)
    ignored = [p for p in flagged if p.responded_after == 0 and p.answered_after > 0]
    out = []
    for rule in (MEMBERSHIP, INVERSION):
        def cid(key: str, rule: Any = rule) -> str:
            return common.check_id(rule, key, model_name)

        checks = [Check(id=cid("probing_monitoring"), check="probing_monitoring",
                        title="No systematic probing seen in the query log",
                        status=CheckStatus.FAIL if flagged else CheckStatus.PASS,
                        evidence=(f"{len(flagged)} principal{'s' if len(flagged) != 1 else ''} probed the model: "
                                  + _describe(flagged)) if flagged else
                        f"detectors {', '.join(detectors)} replayed over the log; no principal was flagged",
                        data={"principals": [p.principal for p in flagged]})]
        for name in detectors:
            hits = [p for p in flagged if any(d.detector == name for d in p.detections)]
            checks.append(Check(
                id=cid(f"probing_{name}"), check=f"probing_{name}", title=f"Detector {name} raised no alarm",
                status=CheckStatus.FAIL if hits else CheckStatus.PASS,
                evidence=(f"{name} flagged " + ", ".join(
                    f"{p.principal} after {next(d.queries for d in p.detections if d.detector == name)} queries"
                    for p in hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")) if hits
                else f"{name} stayed below its alarm for every principal"))
        if ignored:
            status, text = CheckStatus.FAIL, (f"{len(ignored)} flagged principal(s) kept getting normal answers after "
                                              f"the alarm, none limited or blocked: {_describe(ignored, 3)}")
        elif limited:
            status, text = CheckStatus.PASS, f"{limited} requests were limited, throttled, degraded or blocked"
        else:
            status, text = CheckStatus.UNKNOWN, "no request in the log was limited, so the log cannot show limits exist"
        checks.append(Check(id=cid("query_limits"), check="query_limits",
                            title="Limits and responses act on probing principals", status=status, evidence=text,
                            needs="audit with --guard-config to check the configured limits"
                            if status == CheckStatus.UNKNOWN else None))
        severity, reason = rule.base_severity, "probing seen in the query log"
        if ignored:
            severity, reason = Severity.HIGH, "probing seen and nothing limited the principals doing it"
        answers = []
        for q in rule.audit_questions:
            keys = (["probing_monitoring"] if "probing" in q.lower() else
                    ["query_limits"] if "limit" in q.lower() else [])
            answers.append(common.answer(q, checks, keys) if keys else AuditAnswer(
                question=q, answer=None, needs="privaudit audit answers this; the query log cannot"))
        summary = (f"Query log: {len(flagged)} principal(s) probing the model." if flagged
                   else "Query log: no systematic probing seen.")
        out.append(common.finding(rule, ev, checks, severity, reason, summary, answers, core=("probing_monitoring",)))
    return out
