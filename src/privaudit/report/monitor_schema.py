"""The ``privaudit monitor`` report: who probed the model, seen in the guard's query log, and the findings.

Its findings come from privaudit.rules.querylog; the same writers, baseline and gate as the audit and the
scan render and judge it (privaudit.ci.conclude).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from privaudit.findings import Finding
from privaudit.report.schema import Regression

MONITOR_SCHEMA_VERSION = 1
MONITOR_KIND = "privaudit.monitor"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Detection(_Model):
    detector: str
    queries: int  # the principal's queries (rows) when the detector first alarmed
    time: float
    score: float


class FlaggedPrincipal(_Model):
    principal: str
    level: str  # highest level reached in the replay
    queries: int
    ips: int
    detections: list[Detection]
    responded_after: int  # requests limited, throttled, blocked or degraded after the first alarm
    answered_after: int  # requests answered normally after the first alarm


class Throughput(_Model):
    records: int
    queries: int
    seconds: float  # the replay through the detectors
    total_seconds: float  # reading and aggregating included
    records_per_second: float
    queries_per_second: float


class MonitorReport(_Model):
    schema_version: int = MONITOR_SCHEMA_VERSION
    kind: str = MONITOR_KIND
    report_kind: ClassVar[str] = "monitor"  # which writers and baseline apply (privaudit.report)
    privaudit_version: str
    created_at: str
    model_name: str
    sources: list[str]
    records: int
    queries: int
    principals: int
    start: float | None
    end: float | None
    decisions: dict[str, int]
    detectors: list[str]
    throughput: Throughput
    flagged: list[FlaggedPrincipal]
    allowed_alarms: list[FlaggedPrincipal] = []  # principals on the allow list that detectors fired on
    most_addresses: list[dict[str, Any]]  # principals with the most client addresses
    shared_rows: list[dict[str, Any]]  # fingerprints sent by the most principals
    key_ids: list[str]
    calibrated: dict[str, float] = {}  # settings the replay learned from the data (set them to pin them)
    findings: list[Finding]
    regressions: list[Regression] = []  # against --baseline, an earlier monitor report
    warnings: list[str] = []

    def to_json_text(self) -> str:
        return self.model_dump_json(indent=2) + "\n"
