"""Findings: what a rule concluded from the evidence, with its checks. Part of the report schema."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Severity(str, Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: "Severity") -> bool:
        return self.rank >= other.rank


_RANK = {Severity.INFO: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3, Severity.CRITICAL: 4}

# GitHub code scanning reads this number (0-10) to bucket results.
SECURITY_SEVERITY = {Severity.INFO: "0.0", Severity.LOW: "3.0", Severity.MEDIUM: "5.5", Severity.HIGH: "8.0",
                     Severity.CRITICAL: "9.5"}


class CheckStatus(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    UNKNOWN = "UNKNOWN"  # no evidence either way: never reported as a failure
    MANUAL = "MANUAL"  # only a person can answer it (e.g. a process question)


class Check(BaseModel):
    """One check inside a rule, with the evidence behind its status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # stable across retraining: <rule>/<check>/<model name>
    check: str  # short key, e.g. "attack_power"
    title: str
    status: CheckStatus
    evidence: str  # one or two sentences a reader can verify against the report
    needs: str | None = None  # for UNKNOWN / MANUAL: what would answer it
    data: dict[str, Any] = {}


class AuditAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str
    answer: str | None  # None: unanswered
    checks: list[str] = []  # check keys that answer it
    needs: str | None = None


class Finding(BaseModel):
    """One rule's verdict on one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str  # <rule>/<model name>
    rule_id: str
    title: str
    status: str  # "fail" | "pass" | "unknown"
    severity: Severity
    base_severity: Severity
    severity_reason: str
    atlas_technique: str
    model_name: str
    summary: str
    checks: list[Check]
    audit_questions: list[AuditAnswer]
    remediation: str
    mitigations: list[str]
    mappings: dict[str, list[str]]  # framework id -> requirement ids
    references: list[str]
    suppressed: bool = False
    suppression_reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail" and not self.suppressed
