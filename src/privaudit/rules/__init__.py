"""Rules turn audit evidence into findings. One module per rule, metadata beside the code.

A rule module defines ``RULE`` (its metadata) and ``evaluate(evidence) -> Finding`` and registers
itself with :func:`register_rule`. Framework mappings live in rules/frameworks/*.json.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

from privaudit.findings import Finding, Severity

RULE_MODULES = ("atlas_exf_003", "atlas_exf_001")
SENSITIVITIES = ("public", "internal", "pii", "health", "financial")


@dataclass(frozen=True)
class RuleMeta:
    id: str
    title: str
    atlas_technique: str
    base_severity: Severity
    description: str
    risk: str
    remediation: str
    remediation_examples: dict[str, str]
    mitigations: tuple[str, ...]
    audit_questions: tuple[str, ...]
    references: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """Thresholds a team sets for itself (privaudit.toml); the defaults are documented in docs/severity.md."""

    data_sensitivity: str = "internal"
    max_generalization_gap: float = 0.05
    max_epsilon: float = 8.0
    # attack_power FAILs when TPR's lower bound exceeds this many times FPR's upper bound (privaudit.verdict).
    max_tpr_ratio: float = 2.0
    confidence: float = 0.95  # of every bound a verdict rests on
    min_resolved_fpr: float = 0.01  # a PASS needs a sample that resolves this FPR, else UNKNOWN
    max_inversion_advantage: float = 0.2  # evaluator accuracy on reconstructions above chance
    max_attribute_leakage: float = 0.05


@dataclass(frozen=True)
class ControlsEvidence:
    """Deployment controls read from a guard configuration (``--guard-config``)."""

    source: str
    per_principal_limits: bool
    limit_description: str
    probing_detection: bool
    detectors: tuple[str, ...]
    hardening_output: str | None  # e.g. "label", "top_k", "probabilities"
    hardening_round: int | None
    hardening_k: int | None


@dataclass(frozen=True)
class Evidence:
    """Everything rules may use: the report's measurements, the policy and the deployment controls."""

    model_name: str
    report: Any  # privaudit.report.schema.Report (typed loosely to avoid an import cycle)
    policy: Policy = field(default_factory=Policy)
    controls: ControlsEvidence | None = None


RuleFn = Callable[[Evidence], Finding]
_RULES: dict[str, tuple[RuleMeta, RuleFn]] = {}


def register_rule(meta: RuleMeta) -> Callable[[RuleFn], RuleFn]:
    def deco(fn: RuleFn) -> RuleFn:
        _RULES[meta.id] = (meta, fn)
        return fn

    return deco


def rules() -> dict[str, tuple[RuleMeta, RuleFn]]:
    for module in RULE_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_RULES)


def evaluate_all(evidence: Evidence) -> list[Finding]:
    return [fn(evidence) for _meta, fn in rules().values()]


def load_frameworks() -> list[dict[str, Any]]:
    """The compliance frameworks privaudit maps to, as stored in rules/frameworks/*.json."""
    out = []
    for entry in sorted(resources.files("privaudit.rules.frameworks").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            out.append(json.loads(entry.read_text(encoding="utf-8")))
    return out


def mappings_for(rule_id: str) -> dict[str, list[str]]:
    """framework id -> requirement ids that this rule provides evidence for."""
    result: dict[str, list[str]] = {}
    for fw in load_frameworks():
        reqs = [r["id"] for r in fw["requirements"] if rule_id in r.get("rules", [])]
        if reqs:
            result[fw["id"]] = reqs
    return result
