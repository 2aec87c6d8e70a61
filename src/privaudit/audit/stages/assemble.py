"""Stage 7: the Report (provenance, model, data, every section), then the rules turn it into findings."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from pathlib import Path

import numpy as np

from privaudit import __version__
from privaudit.audit.config import AuditConfig
from privaudit.audit.stages.attacks import AttackRun
from privaudit.audit.stages.load import Inputs
from privaudit.audit.stages.query import Answers
from privaudit.audit.stages.references import References
from privaudit.audit.stages.sections import Sections
from privaudit.report.schema import DataInfo, Membership, ModelInfo, Provenance, Report, SplitCheck
from privaudit.rules import Evidence, evaluate_all


def assemble_report(cfg: AuditConfig, inputs: Inputs, answers: Answers, refs: References, run: AttackRun,
                    membership: Membership, sections: Sections) -> Report:
    loaded, tr, ho, mode, split = inputs.loaded, inputs.train, inputs.holdout, answers.mode, run.split
    command_line = cfg.reports.command_line if cfg.reports.command_line is not None else tuple(sys.argv)
    return Report(
        provenance=Provenance(privaudit_version=__version__, libraries=_versions(), seed=cfg.seed,
                              command_line=list(command_line),
                              sha256={"model": loaded.sha256, "train": inputs.train_sha256,
                                      "holdout": inputs.holdout_sha256},
                              created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        model=ModelInfo(path=loaded.path, format=loaded.format, output_mode=mode.kind, rounding=mode.rounding, k=mode.k,
                        classes=[str(c) for c in answers.classes]),
        data=DataInfo(train=inputs.n_train, holdout=len(ho.X), train_source=tr.source, holdout_source=ho.source,
                      label=tr.label_name),
        split_check=SplitCheck(auc=split.auc, duplicates=split.duplicates, passed=split.passed, message=split.message),
        membership=membership, warnings=[*refs.warnings, *run.warnings, *sections.warnings],
        what_if=list(sections.what_if), model_name=model_name(cfg, inputs),
        data_sensitivity=cfg.reports.policy.data_sensitivity, inversion=sections.inversion,
        attribute_inference=sections.attribute_inference)


def with_findings(report: Report, cfg: AuditConfig) -> Report:
    """The same rules every evidence source goes through (privaudit.rules)."""
    findings = evaluate_all(Evidence(model_name=report.model_name or "model", report=report, policy=cfg.reports.policy,
                                     controls=cfg.reports.controls))
    return report.model_copy(update={"findings": findings})


def model_name(cfg: AuditConfig, inputs: Inputs) -> str:
    loaded = inputs.loaded
    return (cfg.reports.model_name or (Path(loaded.path).stem if loaded.path and not loaded.format == "http" else None)
            or "model")


def _versions() -> dict[str, str]:
    import joblib  # read only for the provenance; `import privaudit` need not load them
    import scipy
    import sklearn
    import skops

    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "skops": skops.__version__, "joblib": joblib.__version__}
