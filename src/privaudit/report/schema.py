"""The report: the one object every writer renders. Keys are stable; later work only adds keys.

Field meanings are documented in docs/report.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from privaudit.fileio import atomic_write_text
from privaudit.findings import Finding

SCHEMA_VERSION = 1
FPR_KEYS = ("0.01", "0.001", "0.0001")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OperatingPointInfo(_Model):
    tpr: float
    fpr_achieved: float
    threshold: float
    ci_low: float | None = None
    ci_high: float | None = None


class ClassSlice(_Model):
    class_: str = Field(alias="class")
    records: int
    members: int
    auc: float | None
    tpr_at_fpr: dict[str, float | None]


class RocCurve(_Model):
    """A thinned ROC curve (log-spaced in FPR) for plots; aggregate numbers only, no records."""

    fpr: list[float]
    tpr: list[float]


class ScoreHistogram(_Model):
    """Member and non-member score counts over shared bins (scores rank-normalised to [0, 1])."""

    bin_edges: list[float]
    members: list[int]
    nonmembers: list[int]


class AttackReport(_Model):
    name: str
    auc: float
    tpr_at_fpr: dict[str, float | None]
    tpr_at_fpr_detail: dict[str, OperatingPointInfo | None]
    advantage: float
    ppv: float | None
    ppv_at_fpr: str | None = None
    epsilon_lower_bound: float
    epsilon_max_measurable: float
    reference_models: int
    queries: int
    seconds: float
    per_class: list[ClassSlice] = []
    params: dict[str, Any] = {}
    roc: RocCurve | None = None
    histogram: ScoreHistogram | None = None


class RecordRisk(_Model):
    index: int
    set: Literal["train"] = "train"
    # A lower bound (at the verdict's confidence) on the chance that a record called a member at this
    # record's score really is one, under the report's member prior; see docs/report.md.
    risk: float
    row_sha256: str


class MembershipVerdict(_Model):
    """The held-out test behind attack_power: chosen on one half of the records, judged on the other."""

    status: Literal["leak", "no_leak", "unresolved"]
    attack: str | None
    fpr: float | None
    threshold: float | None
    confidence: float
    margin: float
    selection_members: int
    selection_nonmembers: int
    members: int
    nonmembers: int
    true_positives: int
    false_positives: int
    tpr_lower: float
    fpr_upper: float
    ratio_lower: float | None  # None stands for an unbounded ratio (no false positive possible)
    epsilon_lower_bound: float
    resolved_fprs: list[float]
    min_resolved_fpr: float
    holdout_needed: int | None
    message: str


class DPClaim(_Model):
    claimed_epsilon: float
    delta: float
    epsilon_lower_bound: float
    attack: str | None
    confidence: float
    verdict: Literal["consistent", "contradicted", "indicative", "untestable"]
    contradicted: bool
    message: str


class SkippedAttack(_Model):
    name: str
    reason: str


class Membership(_Model):
    attacks: list[AttackReport]
    best: str | None
    train_accuracy: float
    holdout_accuracy: float
    generalization_gap: float
    member_prior: float
    records_at_risk: list[RecordRisk]
    verdict: MembershipVerdict | None = None
    dp_claim: DPClaim | None = None
    skipped: list[SkippedAttack] = []
    reference_recipe: str | None = None
    reference_models_trained: int = 0


class ModelInfo(_Model):
    path: str | None
    format: str
    output_mode: Literal["probabilities", "logits", "top_k", "label"]
    rounding: int | None
    k: int | None
    classes: list[str]


class DataInfo(_Model):
    train: int
    holdout: int
    train_source: str | None = None
    holdout_source: str | None = None
    label: str | None = None


class SplitCheck(_Model):
    auc: float | None
    duplicates: int
    passed: bool
    message: str


class Provenance(_Model):
    privaudit_version: str
    libraries: dict[str, str]
    seed: int
    command_line: list[str]
    sha256: dict[str, str | None]
    created_at: str


class WhatIfRow(_Model):
    """Attack power if the model were served hardened (re-scored from the same audit)."""

    serving: str  # e.g. "as audited", "label only", "top-1", "top-3", "rounded to 1 decimal"
    output_mode: str
    rounding: int | None = None
    k: int | None = None
    temperature: float | None = None
    best_attack: str | None
    auc: float | None
    tpr_at_fpr: dict[str, float | None]
    accuracy: float  # holdout accuracy as served
    calibrated_probabilities: bool  # whether callers still get usable probabilities
    # With --inversion: black-box MI-Face against the model served this way, judged like the main section.
    inversion_mode: str | None = None  # "black-box" | "refused"
    inversion_attack_accuracy: float | None = None
    inversion_queries: int | None = None


class Regression(_Model):
    kind: str  # "new_finding" | "higher_severity" | "attack_power" | "generalization_gap"
    id: str
    message: str
    before: Any = None
    after: Any = None


class InversionClass(_Model):
    class_: str = Field(alias="class")
    evaluator_prediction: str | None
    evaluator_confidence: float | None
    queries: int
    nearest_train_distance: float | None
    holdout_reference_distance: float | None


class InversionSection(_Model):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    mode: Literal["white-box", "black-box", "refused"]
    reason: str | None = None
    attack_accuracy: float | None
    attack_accuracy_top5: float | None = None
    queries_total: int
    seconds: float
    classes: list[InversionClass] = []


class AttributeScores(_Model):
    accuracy: float
    baseline_accuracy: float
    advantage: float
    mcc: float
    g_mean: float
    records: int | None = None
    wins: int | None = None  # attack right, best baseline wrong
    losses: int | None = None  # baseline right, attack wrong; advantage = (wins - losses) / records


class AttributeInferenceSection(_Model):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    column: str
    method: str | None = None
    queries: int | None = None
    seconds: float | None = None
    train: AttributeScores
    holdout: AttributeScores
    leakage: float


class Report(_Model):
    schema_version: int = SCHEMA_VERSION
    provenance: Provenance
    model: ModelInfo
    data: DataInfo
    split_check: SplitCheck
    membership: Membership
    warnings: list[str] = []
    findings: list[Finding] = []
    regressions: list[Regression] = []
    what_if: list[WhatIfRow] = []
    model_name: str | None = None
    data_sensitivity: str | None = None
    inversion: InversionSection | None = None
    attribute_inference: AttributeInferenceSection | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json_text(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def to_json(self, path: str) -> None:
        """Write the report as JSON, atomically."""
        atomic_write_text(path, self.to_json_text())

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.model_validate_json(text)
