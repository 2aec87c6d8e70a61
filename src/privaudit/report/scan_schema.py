"""The scan report: deployments found and the findings on each. Rendered by the same writers as an
audit (JSON, SARIF, JUnit, HTML, Markdown) and judged by the same gate, baseline and suppressions,
which only need ``findings``, ``regressions`` and ``warnings``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from privaudit.fileio import atomic_write_text
from privaudit.findings import Finding
from privaudit.report.schema import Regression

SCAN_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GraphEdge(_Model):
    source: str
    target: str
    label: str


class DeploymentReport(_Model):
    id: str
    name: str  # the model name findings use
    kind: str  # sagemaker_endpoint | kserve | seldon | azure_online_endpoint | vertex_endpoint
    source: str  # the endpoint resource's type, e.g. aws_sagemaker_endpoint or InferenceService
    file: str | None = None
    line: int | None = None
    arn: str | None = None
    region: str | None = None
    data_sensitivity: str
    sensitivity_source: str
    audit_report: str | None = None  # the joined privaudit report, if any
    paths: list[str] = []  # how callers reach the model
    resources: list[dict[str, Any]]
    edges: list[GraphEdge]


class ScanProvenance(_Model):
    privaudit_version: str
    command_line: list[str]
    created_at: str
    paths: list[str] = []
    aws_regions: list[str] = []
    files_read: int = 0
    resources_read: int = 0
    seconds: float = 0.0


class ScanReport(_Model):
    report_kind: Literal["scan"] = "scan"
    schema_version: int = SCAN_SCHEMA_VERSION
    provenance: ScanProvenance
    deployments: list[DeploymentReport]
    findings: list[Finding] = []
    regressions: list[Regression] = []
    warnings: list[str] = []
    model_name: str | None = None  # always None: a scan covers many models

    def deployment_for(self, finding: Finding) -> DeploymentReport | None:
        return next((d for d in self.deployments if d.name == finding.model_name), None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json_text(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def to_json(self, path: str) -> None:
        atomic_write_text(path, self.to_json_text())
