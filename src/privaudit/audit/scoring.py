"""From an attack's per-record scores to the report's numbers: operating points, ε bounds, slices, DP verdicts."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from privaudit import metrics, verdict
from privaudit.attacks.membership import AttackResult
from privaudit.report.schema import (
    FPR_KEYS,
    AttackReport,
    ClassSlice,
    DPClaim,
    MembershipVerdict,
    OperatingPointInfo,
    RocCurve,
    ScoreHistogram,
)

FPRS = tuple(float(k) for k in FPR_KEYS)


class Game(Protocol):
    """The audit game the scores are judged against: labels and true membership."""

    @property
    def y(self) -> NDArray[np.int64]: ...

    @property
    def is_member(self) -> NDArray[np.bool_]: ...


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
        per_class.append(ClassSlice(class_=str(classes[c]),  # type: ignore[call-arg]  # the field's alias is 'class'
                                    records=int(sel.sum()), members=n_in, auc=auc,
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


PRIMARY_FPR = 0.001  # the FPR the report leads with (Carlini et al. 2022)


def _pct(x: float) -> str:
    return f"{100 * x:.2g}%" if x < 0.01 else f"{100 * x:.1f}%"


def verdict_message(t: verdict.HeldOutTest) -> str:
    """One sentence a reader can check against the verdict's numbers; names one attack."""
    conf = f"{t.confidence:.0%}"
    if t.attack is None:
        return (f"no attack could be judged: the {t.nonmembers} evaluation non-members resolve no FPR of "
                f"{', '.join(f'{f:g}' for f in verdict.VERDICT_FPRS)}; {verdict.needs_text(t.holdout_needed)}")
    where = (f"{t.attack} at {_pct(t.fpr or 0)} FPR, judged on {t.members} members and {t.nonmembers} non-members "
             "not used to choose it")
    bounds = f"TPR >= {_pct(t.tpr_lower)} while FPR <= {_pct(t.fpr_upper)} ({conf} confidence)"
    if t.status == "leak":
        return (f"{where}: {bounds}, {t.ratio_lower:.1f}x the FPR (margin {t.margin:g}x); "
                f"epsilon lower bound {t.epsilon_lower_bound:.2f}")
    resolved = ", ".join(_pct(f) for f in t.resolved_fprs)
    text = f"{where}: {bounds}, not above {t.margin:g}x the FPR; no leakage shown at {resolved} FPR"
    if t.status == "unresolved":
        text += f"; a PASS at {_pct(t.min_resolved_fpr)} FPR {verdict.needs_text(t.holdout_needed)}"
    elif PRIMARY_FPR not in t.resolved_fprs:
        need = verdict.holdout_needed(PRIMARY_FPR, margin=t.margin, confidence=t.confidence)
        text += f" (testing {_pct(PRIMARY_FPR)} FPR: {verdict.needs_text(need)})"
    return text


def membership_verdict(results: list[AttackResult], data: Game, *, delta: float, confidence: float, margin: float,
                       min_resolved_fpr: float, seed: int) -> tuple[MembershipVerdict, verdict.HeldOutTest]:
    """The held-out test over every attack that ran (see privaudit.verdict)."""
    t = verdict.held_out_test({r.name: r.scores for r in results}, data.is_member, delta=delta,
                              confidence=confidence, margin=margin, min_resolved_fpr=min_resolved_fpr, seed=seed)
    return MembershipVerdict(
        status=t.status, attack=t.attack, fpr=t.fpr,
        threshold=None if t.threshold is None else float(np.clip(t.threshold, -1e300, 1e300)),
        confidence=t.confidence, margin=t.margin, selection_members=t.selection_members,
        selection_nonmembers=t.selection_nonmembers, members=t.members, nonmembers=t.nonmembers,
        true_positives=t.true_positives, false_positives=t.false_positives, tpr_lower=t.tpr_lower,
        fpr_upper=t.fpr_upper, ratio_lower=None if not np.isfinite(t.ratio_lower) else t.ratio_lower,
        epsilon_lower_bound=t.epsilon_lower_bound, resolved_fprs=list(t.resolved_fprs),
        min_resolved_fpr=t.min_resolved_fpr, holdout_needed=t.holdout_needed, message=verdict_message(t)), t


def records_at_risk(test: verdict.HeldOutTest, scores: NDArray[np.float64], data: Game, *, prior: float,
                    limit: int, seed: int) -> list[tuple[int, float]]:
    """Training records whose calibrated risk exceeds the prior, most exposed first; none without a leak.

    A record's risk is the lower bound of the precision of calling members at its score, counted on
    the evaluation half (see :func:`privaudit.verdict.precision_lower_bounds`).
    """
    if not test.rejected:
        return []
    judge = verdict.evaluation_mask(data.is_member, seed)
    members = np.flatnonzero(data.is_member)
    risk = verdict.precision_lower_bounds(scores[members], scores[judge], data.is_member[judge], prior=prior,
                                          confidence=test.confidence)
    exposed = np.flatnonzero(risk > prior)
    order = exposed[np.lexsort((-scores[members][exposed], -risk[exposed]))][:limit]
    return [(int(members[i]), float(risk[i])) for i in order]


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
    n1, n0 = int(data.is_member.sum()), int((~data.is_member).sum())
    # The bound is computed on half of each group: what a perfect attack could show on that half.
    reach = metrics.epsilon_max_measurable(max(n1 // 2, 1), max(n0 // 2, 1), delta, confidence=confidence)
    outcome: Literal["consistent", "contradicted", "indicative", "untestable"]
    if not exceeded and reach <= claimed:
        outcome = "untestable"
        need = _records_to_test(claimed, delta, confidence)
        msg = (f"epsilon claimed {claimed:g} cannot be tested here: even a perfect attack could show at most "
               f"epsilon >= {reach:.2f} with {n1} members and {n0} non-members; testing it needs about {need:,} of each")
    elif not exceeded:
        outcome = "consistent"
        msg = (f"epsilon claimed {claimed:g}, lower bound measured {best_eps:.3f} (this sample could show up to "
               f"{reach:.2f}) -- the audit found nothing against the claim")
    elif split_passed:
        outcome = "contradicted"
        msg = (f"epsilon claimed {claimed:g} but the audit shows epsilon >= {best_eps:.3f} at {confidence:.1%} "
               f"confidence ({best_name}): this model cannot be ({claimed:g}, {delta:g})-differentially private")
    else:
        outcome = "indicative"
        msg = (f"epsilon claimed {claimed:g}, measured lower bound {best_eps:.3f} exceeds it, but the split check "
               "failed, so this is indicative only")
    return DPClaim(claimed_epsilon=claimed, delta=delta, epsilon_lower_bound=best_eps, attack=best_name,
                   confidence=confidence, verdict=outcome, contradicted=outcome == "contradicted", message=msg)


def _records_to_test(claimed: float, delta: float, confidence: float) -> int:
    """Members (and as many non-members) a perfect attack needs to show epsilon above ``claimed``."""
    n = 16
    while metrics.epsilon_max_measurable(n // 2, n // 2, delta, confidence=confidence) <= claimed and n < 10**12:
        n *= 2
    lo, hi = n // 2, n
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        if metrics.epsilon_max_measurable(mid // 2, mid // 2, delta, confidence=confidence) > claimed:
            hi = mid
        else:
            lo = mid
    return hi
