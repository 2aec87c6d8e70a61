"""Stateful k-nearest-neighbour detection (Chen, Carlini, Wagner 2020, "Stateful Detection of
Black-Box Adversarial Attacks").

Gradient-estimation attacks (NES as in privaudit's black-box MI-Face, HopSkipJump's probes, the
noisy copies of label-only membership inference) send clouds of queries around a few points. The
perturbations are often too large to be near-duplicates on the fingerprint detector's grid, yet
every one of them is much closer to the principal's earlier queries than independent natural
inputs are to each other. Per principal, each distinct query's mean distance to its ``k`` nearest
neighbours among the principal's last ``history`` distinct queries is compared with ``radius``; the
alarm needs both a count and a share of close queries among the recent ones, as the fingerprint
detector does, so a few natural look-alikes never add up to an alarm.

``radius`` is in sketch units. Left unset it is ``auto_fraction`` times the typical distance
between two independent queries, ``spread * sqrt(2 * dims)``, with the spread learned like the
fingerprint detector's grid step (median over the first principals; see ``ScaleCalibration``), or
taken at start from ``detectors.calibration_data`` or the state saved beside the query log.

Explainers (LIME and the like) perturb one record a few hundred times and look the same: list them
in ``allow``. Memory per principal is at most ``history * sketch_dims`` float32 values.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from privaudit.guard.detectors import (Bounded, DetectorConfig, EventFeatures, RecentRows, ScaleCalibration, positive,
                                       register_detector, share_score)


@dataclass
class _State:
    history: int
    recent: deque[bool]
    sketches: NDArray[np.float32] = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    filled: int = 0
    cursor: int = 0
    rows: RecentRows = field(init=False)
    last: float | None = None  # the latest query's k-NN distance

    def __post_init__(self) -> None:
        self.rows = RecentRows(4 * self.history)

    def knn(self, sketch: NDArray[np.float64], k: int) -> float | None:
        """Mean distance to the k nearest remembered queries (None with fewer than k)."""
        if self.filled < k or self.sketches.shape[1] != len(sketch):
            return None
        diff = self.sketches[: self.filled] - sketch
        d2 = np.einsum("ij,ij->i", diff, diff)
        return float(np.mean(np.sqrt(np.partition(d2, k - 1)[:k])))

    def add(self, sketch: NDArray[np.float64]) -> None:
        """Remember ``sketch``: a ring of at most ``history``, grown by doubling (most principals
        send few queries, so most never hold the full ring)."""
        if self.sketches.shape[1] != len(sketch):  # first query, or the input width changed
            self.sketches = np.empty((min(16, self.history), len(sketch)), dtype=np.float32)
            self.filled = self.cursor = 0
        if self.cursor == len(self.sketches) and len(self.sketches) < self.history:
            grown = np.empty((min(2 * len(self.sketches), self.history), len(sketch)), dtype=np.float32)
            grown[: self.filled] = self.sketches[: self.filled]
            self.sketches = grown
        self.cursor %= len(self.sketches)
        self.sketches[self.cursor] = sketch
        self.cursor += 1
        self.filled = min(self.filled + 1, len(self.sketches))


@register_detector("knn")
class Knn:
    class Config(DetectorConfig):
        k: int = Field(20, ge=1)  # neighbours averaged
        history: int = Field(200, ge=10)  # recent distinct queries per principal searched
        radius: float | None = Field(None, gt=0.0)  # in sketch units; None: calibrate
        auto_fraction: float = Field(0.55, gt=0.0)  # radius as a share of the typical distance
        calibration_rows: int = Field(20, ge=5)
        calibration_principals: int = Field(5, ge=1)
        recent: int = Field(50, ge=5)  # recent queries the alarm looks at
        min_matches: int = Field(10, ge=1)  # close queries among them...
        min_fraction: float = Field(0.3, gt=0.0, le=1.0)  # ... that are also this share of them
        max_principals: int = 10_000  # each may hold history x sketch_dims floats

        @model_validator(mode="after")
        def _k_within_history(self) -> "Knn.Config":
            if self.k > self.history:
                raise ValueError(f"k ({self.k}) cannot exceed history ({self.history})")
            return self

    name = "knn"

    def __init__(self, config: "Knn.Config") -> None:
        self.config = config
        self.dims = 0  # the sketch width (the learned radius depends on it)
        self.scale = ScaleCalibration(config.calibration_rows, config.calibration_principals)
        self.states: Bounded[str, _State] = Bounded(config.max_principals,
                                                    lambda: _State(config.history, deque(maxlen=config.recent)))

    @property
    def blind(self) -> bool:
        return self.config.radius is None and self.scale.value is None

    def calibrate(self, sketches: NDArray[np.float64]) -> None:
        self.scale.calibrate(sketches)
        self.dims = sketches.shape[1]

    def export_state(self) -> dict[str, Any] | None:
        return None if self.scale.value is None else {"spread": self.scale.value, "dims": self.dims}

    def import_state(self, state: dict[str, Any]) -> None:
        self.scale.value, self.dims = positive(state["spread"]), int(positive(state["dims"]))

    @property
    def radius(self) -> float | None:
        """The distance below which a query counts as close: pinned, or learned (None until then)."""
        if self.config.radius is not None:
            return self.config.radius
        if self.scale.value is None or not self.dims:
            return None
        return self.config.auto_fraction * self.scale.value * math.sqrt(2 * self.dims)

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.states.get(f.principal)
        for (sketch,) in st.rows.new(f.fingerprints, f.sketches):
            self.dims = len(sketch)
            radius = self.radius
            if radius is None:
                self.scale.observe(f.principal, sketch)
            else:
                dist = st.knn(sketch, cfg.k)
                if dist is not None:
                    st.last = dist
                    st.recent.append(dist < radius)
            st.add(sketch)
        radius = self.radius
        if radius is None:
            return 0.0, {"calibrating": len(self.scale.sample.samples), "needed": cfg.calibration_principals}
        if not st.recent:
            return 0.0, {"history": st.filled, "needed": cfg.k}
        close = sum(st.recent)
        return share_score(close, len(st.recent), cfg.min_matches, cfg.min_fraction), {"close": int(close), "of_recent": len(st.recent),
                                       "knn_distance": None if st.last is None else round(st.last, 4),
                                       "radius": round(radius, 6)}
