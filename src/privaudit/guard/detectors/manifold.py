"""Off-manifold queries: inputs unlike anything ordinary clients send, in the way adversarial and
synthetic inputs are unlike them (Hendrycks and Gimpel 2017, "Early Methods for Detecting
Adversarial Images": such inputs put abnormal weight on the low-variance principal components).

Natural inputs vary along few directions: most of their variance lies in a handful of principal
components. Query-based attacks add energy everywhere: black-box MI-Face starts from a blank or
grey record and estimates gradients with Gaussian noise (large when the answers are rounded),
HopSkipJump starts from uniform noise, extraction attacks step along gradient signs. Such queries
keep a large residual outside the principal subspace of ordinary traffic.

The subspace is learned from the first ``calibration_principals`` principals (the first
``calibration_rows`` distinct queries of each, see ``FirstPrincipals``): the components holding
``explained`` of their variance are kept, and a principal whose own queries sit far off the
subspace found from everyone (median residual above ``OUTLIER`` times the others') is left out and
the subspace found again, so one odd early principal does not shape it. A query is "off" when its
residual exceeds ``threshold`` times the median residual of the calibration queries; the alarm
needs both a count and a share of off queries among a principal's recent ones.

Explainers that blank out parts of an input (LIME) send off-manifold queries too: list them in
``allow``. Works in sketch space (a random projection keeps a low-rank cloud low-rank), so replaying
a stored log gives the same answer. ``detectors.calibration_data`` (ordinary records) gives the
subspace at start; otherwise the subspace saved beside the query log is reloaded after a restart.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from privaudit.guard.detectors import (Bounded, DetectorConfig, EventFeatures, FirstPrincipals, RecentRows, chunks,
                                       register_detector, share_score)

OUTLIER = 2.0  # a calibration principal this many times further off than the median one is dropped


@dataclass(frozen=True)
class Subspace:
    """Where ordinary traffic lives: its mean, its leading components and its typical residual."""

    mean: NDArray[np.float64]
    components: NDArray[np.float64]  # (m, dims), orthonormal rows
    typical: float  # median residual of the calibration queries

    def residuals(self, sketches: NDArray[np.float64]) -> NDArray[np.float64]:
        """Distance of each sketch from the subspace, in units of ``typical``."""
        d = np.atleast_2d(sketches) - self.mean
        off = d - (d @ self.components.T) @ self.components
        out: NDArray[np.float64] = np.sqrt(np.einsum("ij,ij->i", off, off)) / self.typical
        return out


def fit_subspace(samples: list[NDArray[np.float64]], explained: float) -> Subspace | None:
    """PCA of the pooled samples keeping ``explained`` of the variance (at most dims - 1
    components); refitted once without principals far off the first fit. None if degenerate."""

    def fit(rows: NDArray[np.float64]) -> Subspace | None:
        mean = rows.mean(axis=0)
        _u, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
        var = s**2
        if var.sum() <= 0:
            return None
        m = int(np.searchsorted(np.cumsum(var) / var.sum(), explained) + 1)
        m = min(m, rows.shape[1] - 1)
        sub = Subspace(mean, vt[:m], 1.0)
        typical = float(np.median(sub.residuals(rows)))
        return Subspace(mean, vt[:m], typical) if typical > 0 else None

    first = fit(np.vstack(samples))
    if first is None:
        return None
    per = np.array([np.median(first.residuals(rows)) for rows in samples])
    keep = [rows for rows, r in zip(samples, per) if r <= OUTLIER * np.median(per)]
    return fit(np.vstack(keep)) if len(keep) < len(samples) else first


@dataclass
class _State:
    recent: deque[bool]
    rows: RecentRows
    last: float | None = None


@register_detector("manifold")
class Manifold:
    class Config(DetectorConfig):
        explained: float = Field(0.85, gt=0.0, lt=1.0)  # share of ordinary variance the kept components hold
        threshold: float = Field(2.0, gt=1.0)  # residual, in typical residuals, above which a query is off
        calibration_rows: int = Field(20, ge=5)
        calibration_principals: int = Field(10, ge=2)
        recent: int = Field(50, ge=5)  # recent distinct queries the alarm looks at
        min_matches: int = Field(10, ge=1)  # off queries among them...
        min_fraction: float = Field(0.3, gt=0.0, le=1.0)  # ... that are also this share of them

    name = "manifold"

    def __init__(self, config: "Manifold.Config") -> None:
        self.config = config
        self.sample = FirstPrincipals(config.calibration_rows, config.calibration_principals)
        self.subspace: Subspace | None = None
        self.states: Bounded[str, _State] = Bounded(config.max_principals,
                                                    lambda: _State(deque(maxlen=config.recent), RecentRows(4 * config.recent)))

    @property
    def blind(self) -> bool:
        return self.subspace is None

    def calibrate(self, sketches: NDArray[np.float64]) -> None:
        samples = chunks(sketches, self.config.calibration_rows)
        if len(samples) >= 2:
            self.subspace = fit_subspace(samples, self.config.explained) or self.subspace

    def export_state(self) -> dict[str, Any] | None:
        sub = self.subspace
        if sub is None:
            return None
        return {"mean": sub.mean.tolist(), "components": sub.components.tolist(), "typical": sub.typical}

    def import_state(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        components = np.asarray(state["components"], dtype=np.float64).reshape(-1, len(mean))
        typical = float(state["typical"])
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(components)) and typical > 0):
            raise ValueError("the saved subspace holds non-finite values")
        self.subspace = Subspace(mean, components, typical)

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.states.get(f.principal)
        for (sketch,) in st.rows.new(f.fingerprints, f.sketches):
            sub = self.subspace
            if sub is None or len(sub.mean) != len(sketch):
                if self.sample.add(f.principal, sketch):
                    self.subspace = fit_subspace(self.sample.samples, cfg.explained)
                    if self.subspace is None:  # no variance at all: learn again from the next principals
                        self.sample = FirstPrincipals(cfg.calibration_rows, cfg.calibration_principals)
                continue
            st.last = float(sub.residuals(sketch)[0])
            st.recent.append(st.last > cfg.threshold)
        if self.subspace is None:
            return 0.0, {"calibrating": len(self.sample.samples), "needed": cfg.calibration_principals}
        if not st.recent:
            return 0.0, {}
        off = sum(st.recent)
        return share_score(off, len(st.recent), cfg.min_matches, cfg.min_fraction), {"off": int(off), "of_recent": len(st.recent),
                                       "residual": None if st.last is None else round(st.last, 3),
                                       "threshold": cfg.threshold, "components": len(self.subspace.components)}
