"""Stage 5: the membership verdict (a held-out test), the records most at risk, and any DP claim."""

from __future__ import annotations

import numpy as np

from privaudit import metrics
from privaudit.audit.config import AuditConfig
from privaudit.audit.scoring import dp_claim, membership_verdict, records_at_risk
from privaudit.audit.stages.attacks import AttackRun
from privaudit.audit.stages.load import Inputs
from privaudit.audit.stages.query import Answers
from privaudit.audit.stages.references import References
from privaudit.data import rows_sha256
from privaudit.progress import Reporter
from privaudit.report.schema import Membership, RecordRisk

RECORDS_AT_RISK = 100  # the most exposed records a report lists


def judge_membership(inputs: Inputs, answers: Answers, run: AttackRun, refs: References, cfg: AuditConfig,
                     ui: Reporter) -> Membership:
    pol, data, seed = cfg.reports.policy, answers.data, cfg.seed
    results = list(run.results)
    verdict, test = membership_verdict(results, data, delta=cfg.privacy.delta, confidence=pol.confidence,
                                       margin=pol.max_tpr_ratio, min_resolved_fpr=pol.min_resolved_fpr, seed=seed)
    best = verdict.attack
    exposed = [] if best is None else records_at_risk(
        test, next(r.scores for r in results if r.name == best), data, prior=run.prior, limit=RECORDS_AT_RISK,
        seed=seed)
    order = np.array([i for i, _ in exposed], dtype=np.int64)
    # Keyed with the training data's own hash: the data owner can match rows, while someone holding a
    # candidate record but not the whole training set cannot test it against the report.
    hashes = [str(h) for h in rows_sha256(inputs.train.X[order], salt=inputs.train_sha256.encode())] if len(order) else []
    at_risk = [RecordRisk(index=i, risk=r, row_sha256=h) for (i, r), h in zip(exposed, hashes)]
    dp = None
    if cfg.privacy.epsilon is not None:
        dp = dp_claim(results, data, cfg.privacy.epsilon, cfg.privacy.delta, run.split.passed, seed)
        if dp.contradicted:
            ui.warn(dp.message)
    return Membership(
        attacks=list(run.reports), best=best, train_accuracy=answers.train_accuracy,
        holdout_accuracy=answers.holdout_accuracy,
        generalization_gap=metrics.generalization_gap(answers.train_accuracy, answers.holdout_accuracy),
        member_prior=run.prior, records_at_risk=at_risk, verdict=verdict, dp_claim=dp, skipped=list(run.skipped),
        reference_recipe=refs.recipe, reference_models_trained=0 if refs.scores is None else refs.scores.trained)
