"""The membership-inference audit, as a list of stages (see privaudit.audit.stages).

``audit()`` reads as the flow: load → query → plan and reference models → attacks → membership verdict →
what-if, inversion and attribute sections → report and findings. Writers and the gate come after and are
shared with ``scan`` and ``monitor`` (privaudit.ci.conclude).
"""

from __future__ import annotations

from typing import Any

from privaudit.audit.backends import BackendOptions, make_backend
from privaudit.audit.config import DEFAULT_ATTACKS, AuditConfig
from privaudit.audit.stages.assemble import assemble_report, with_findings
from privaudit.audit.stages.attacks import run_attacks
from privaudit.audit.stages.load import load_inputs
from privaudit.audit.stages.membership import judge_membership
from privaudit.audit.stages.query import query_target
from privaudit.audit.stages.references import plan_attacks, train_references
from privaudit.audit.stages.sections import extra_sections
from privaudit.progress import Reporter, Silent
from privaudit.report.schema import Report


def audit(model: Any = None, train: Any = None, holdout: Any = None, *, config: AuditConfig | None = None,
          reporter: Reporter | None = None, **options: Any) -> Report:
    """Audit ``model`` for membership inference on ``train`` (members) and ``holdout`` (non-members).

    Either pass a ready :class:`AuditConfig` as ``config``, or the model, the two datasets and keyword
    options, from which one is built (docs/api.md lists them): e.g. ``reference_models=8``,
    ``attacks=["lira_online"]``, ``claimed_epsilon=1.0``, ``inversion=True``, ``sensitive="age"``,
    ``backend="ray"``, ``cache_dir=False``, ``policy=Policy(...)``. ``model`` is a path (.skops, .onnx,
    .pt, ...; pickles need ``allow_pickle=True``), an http(s) URL, ``module:attr`` or an in-memory model;
    the datasets are file paths, ``(X, y)`` tuples or DataFrames (with ``label``). ``reporter`` receives
    progress. Returns a :class:`Report` whose findings the rules filled in.
    """
    if config is not None and (model is not None or train is not None or holdout is not None or options):
        raise TypeError("audit(): pass either config=AuditConfig(...) or the model, data and options, not both")
    cfg = config or AuditConfig.from_options(model, train, holdout, **options)
    ui = reporter or Silent()
    backend = make_backend(cfg.backend.kind, BackendOptions(jobs=cfg.backend.jobs, address=cfg.backend.address,
                                                            cpus=cfg.backend.cpus, gpus=cfg.backend.gpus))
    inputs = load_inputs(cfg)
    answers = query_target(inputs, ui)
    plan = plan_attacks(cfg, answers.mode)
    refs = train_references(inputs, answers, plan, cfg, backend, ui)
    run = run_attacks(inputs, answers, plan, refs, cfg, ui)
    membership = judge_membership(inputs, answers, run, refs, cfg, ui)
    sections = extra_sections(inputs, answers, run, cfg, ui)
    report = assemble_report(cfg, inputs, answers, refs, run, membership, sections)
    return with_findings(report, cfg)


__all__ = ["DEFAULT_ATTACKS", "AuditConfig", "audit"]
