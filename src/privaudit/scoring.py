"""From an attack's per-record scores to the report's numbers: operating points, ε bounds, slices, DP verdicts."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics
from privaudit.attacks.membership import AttackResult
from privaudit.report.schema import (FPR_KEYS, AttackReport, ClassSlice, DPClaim, OperatingPointInfo, RocCurve,
                                     ScoreHistogram)

FPRS = tuple(float(k) for k in FPR_KEYS)


class Game(Protocol):
    """The audit game the scores are judged against: labels and true membership."""

    y: NDArray[np.int64]
    is_member: NDArray[np.bool_]


def attack_report(result: AttackResult, data: Game, classes: NDArray[Any], *, delta: float, prior: float,
                   n_bootstrap: int, seed: int) -> AttackReport:
    s, m = result.scores, data.is_member
    points = metrics.tpr_at_fprs(s, m, FPRS, n_bootstrap=n_bootstrap, seed=seed)
    tpr = {k: (None if points[f] is None else points[f].tpr) for k, f in zip(FPR_KEYS, FPRS)}  # type: ignore[union-attr]
    detail = {k: (None if (p := points[f]) is None else OperatingPointInfo(
        tpr=p.tpr, fpr_achieved=p.fpr_achieved, threshold=float(np.clip(p.threshold, -1e300, 1e300)),
        ci_low=p.ci_low, ci_high=p.ci_high)) for k, f in zip(FPR_KEYS, FPRS)}
    ppv_key = next((k for k in ("0.001", "0.01") if detail[k] is not None), None)
    ppv = None
    if ppv_key is not None:
        d = detail[ppv_key]
        assert d is not None
        ppv = metrics.ppv(d.tpr, d.fpr_achieved, prior)
    eps = metrics.epsilon_lower_bound(s, m, delta, seed=seed)
    roc, hist = roc_and_histogram(s, m)
    per_class = []
    for c in range(len(classes)):
        sel = data.y == c
        n_in, n_out = int((sel & m).sum()), int((sel & ~m).sum())
        auc = metrics.auc(s[sel], m[sel]) if n_in and n_out else None
        pt = metrics.tpr_at_fpr(s[sel], m[sel], 0.01) if n_in and n_out else None
        per_class.append(ClassSlice(class_=str(classes[c]), records=int(sel.sum()), members=n_in, auc=auc,
                                    tpr_at_fpr={"0.01": None if pt is None else pt.tpr}))
    return AttackReport(
        name=result.name, auc=metrics.auc(s, m), tpr_at_fpr=tpr, tpr_at_fpr_detail=detail,
        advantage=metrics.advantage(s, m), ppv=ppv, ppv_at_fpr=ppv_key,
        epsilon_lower_bound=eps.epsilon_lower_bound, epsilon_max_measurable=eps.epsilon_max_measurable,
        reference_models=result.reference_models, queries=result.queries, seconds=round(result.seconds, 3),
        per_class=per_class, params=result.params, roc=roc, histogram=hist)


def roc_and_histogram(s: NDArray[np.float64], m: NDArray[np.bool_]) -> tuple[RocCurve, ScoreHistogram]:
    fpr, tpr, _ = metrics.roc_curve(s, m)
    grid = np.unique(np.r_[0.0, np.logspace(-5, 0, 120)])
    # The best TPR reachable at each grid FPR: a step function, exact at the grid points.
    idx = np.searchsorted(fpr, grid, side="right") - 1
    roc = RocCurve(fpr=[float(x) for x in grid], tpr=[float(x) for x in tpr[np.clip(idx, 0, len(tpr) - 1)]])
    ranks = (np.argsort(np.argsort(s, kind="stable"), kind="stable") + 0.5) / len(s)
    edges = np.linspace(0.0, 1.0, 41)
    hist = ScoreHistogram(bin_edges=[float(e) for e in edges],
                          members=[int(c) for c in np.histogram(ranks[m], edges)[0]],
                          nonmembers=[int(c) for c in np.histogram(ranks[~m], edges)[0]])
    return roc, hist


def best_attack(reports: list[AttackReport]) -> str | None:
    if not reports:
        return None

    def key(r: AttackReport) -> tuple[float, float]:
        t = r.tpr_at_fpr.get("0.001")
        return (-1.0 if t is None else t, r.auc)

    return max(reports, key=key).name


def dp_claim(results: list[AttackResult], data: Game, claimed: float, delta: float, split_passed: bool,
              seed: int) -> DPClaim:
    # Every attack is a separate test of the claim: Bonferroni over them keeps the 95 % overall.
    confidence = 1.0 - 0.05 / max(len(results), 1)
    best_eps, best_name = 0.0, None
    for r in results:
        b = metrics.epsilon_lower_bound(r.scores, data.is_member, delta, confidence=confidence, seed=seed)
        if b.epsilon_lower_bound > best_eps:
            best_eps, best_name = b.epsilon_lower_bound, r.name
    exceeded = best_eps > claimed
    verdict: Literal["consistent", "contradicted", "indicative"]
    if not exceeded:
        verdict = "consistent"
        msg = f"epsilon claimed {claimed:g}, lower bound measured {best_eps:.3f} -- consistent with the claim"
    elif split_passed:
        verdict = "contradicted"
        msg = (f"epsilon claimed {claimed:g} but the audit shows epsilon >= {best_eps:.3f} at {confidence:.1%} "
               f"confidence ({best_name}): this model cannot be ({claimed:g}, {delta:g})-differentially private")
    else:
        verdict = "indicative"
        msg = (f"epsilon claimed {claimed:g}, measured lower bound {best_eps:.3f} exceeds it, but the split check "
               "failed, so this is indicative only")
    return DPClaim(claimed_epsilon=claimed, delta=delta, epsilon_lower_bound=best_eps, attack=best_name,
                   confidence=confidence, verdict=verdict, contradicted=verdict == "contradicted", message=msg)
