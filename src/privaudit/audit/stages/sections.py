"""Stage 6: the what-if table (the same attacks against the model served other ways), model inversion and
attribute inference. The last two feed ATLAS-EXF-001."""

from __future__ import annotations

from dataclasses import dataclass

from privaudit.audit import whatif
from privaudit.audit.config import AuditConfig
from privaudit.audit.inversion import InversionSetup, inversion_what_if, run_attribute_section, run_inversion_section
from privaudit.audit.stages.attacks import AttackRun
from privaudit.audit.stages.load import Inputs
from privaudit.audit.stages.query import Answers
from privaudit.progress import Reporter
from privaudit.report.schema import AttributeInferenceSection, InversionSection, WhatIfRow
from privaudit.target import OutputMode


@dataclass(frozen=True)
class Sections:
    what_if: tuple[WhatIfRow, ...] = ()
    inversion: InversionSection | None = None
    attribute_inference: AttributeInferenceSection | None = None
    warnings: tuple[str, ...] = ()


def extra_sections(inputs: Inputs, answers: Answers, run: AttackRun, cfg: AuditConfig, ui: Reporter) -> Sections:
    rows, warnings = what_if_table(answers, run, cfg, ui)
    inv, inversion, attribute = cfg.inversion, None, None
    if not (inv.enabled or inv.sensitive):
        return Sections(tuple(rows), warnings=warnings)
    member, classes, tr, ho = answers.data.is_member, answers.classes, inputs.train, inputs.holdout
    labels_tr, labels_ho = classes[answers.data.y[member]], classes[answers.data.y[~member]]
    if inv.enabled:
        setup = InversionSetup(inputs.loaded, tr.X, labels_tr, cfg.seed)  # one box and one judge for both
        inversion = InversionSection.model_validate(run_inversion_section(
            inputs.loaded, tr.X, labels_tr, ho.X, labels_ho, classes=classes, seed=cfg.seed,
            image_shape=inv.image_shape, budget_per_class=inv.budget, classes_to_invert=inv.classes,
            include_records=cfg.reports.include_records, reporter=ui, setup=setup))
        if rows:
            rows = inversion_what_if(inputs.loaded, rows, answers.mode, tr.X, labels_tr, ho.X, labels_ho,
                                     classes=classes, seed=cfg.seed, image_shape=inv.image_shape,
                                     budget_per_class=inv.budget, classes_to_invert=inv.classes, reporter=ui,
                                     setup=setup)
    if inv.sensitive:
        attribute = AttributeInferenceSection.model_validate(run_attribute_section(
            inputs.loaded, tr.X, labels_tr, ho.X, labels_ho, column=inv.sensitive, feature_names=tr.feature_names,
            seed=cfg.seed, reporter=ui))
    return Sections(tuple(rows), inversion, attribute, warnings)


def what_if_table(answers: Answers, run: AttackRun, cfg: AuditConfig,
                  ui: Reporter) -> tuple[list[WhatIfRow], tuple[str, ...]]:
    """The rows (from the cache, or the audited row plus the variants run beside the attacks), or why none."""
    if not cfg.attacks.what_if:
        return [], ()
    if run.what_if_cached is not None:
        return list(run.what_if_cached), ()
    if whatif.applicable(run.context):
        rows = [whatif.audited_row(run.context, answers.data.is_member, {r.name: r.scores for r in run.results}),
                *run.what_if_variants]
        run.analysis.store_what_if(rows)
        return rows, ()
    gap = _what_if_gap(answers.mode)
    ui.warn(gap)
    return [], (gap,)


def _what_if_gap(mode: OutputMode) -> str:
    """Why there is no what-if table: it starts from full probabilities, which a hardened target hides."""
    why = {"label": "the target answers labels only",
           "top_k": f"the target answers only its top-{mode.k} classes"}.get(
        mode.kind, f"the target rounds its scores to {mode.rounding} decimals")
    return (f"what-if table left out: {why}, so the full probabilities it starts from are not available; "
            "audit the model before that hardening to see it")



