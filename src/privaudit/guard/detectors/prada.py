"""PRADA (Juuti et al. 2019, "PRADA: Protecting against DNN Model Stealing Attacks").

Natural queries from one client land at distances from each other that look roughly normal; a
client synthesising queries (Jacobian augmentation, gradient estimation, noisy copies, binary
searches) produces minimum distances clustered at its step size, with a few long jumps between
seeds: far from normal. As in the paper, per principal and per predicted class a "growing set" G
keeps the queries that were far enough from it (farther than mean - std of the distances that grew
it); every new query's distance to the nearest member of G for its class joins the window D, which
Shapiro-Wilk tests once it holds ``min_queries`` distances. W below ``threshold`` is the alarm.

Distances are taken in sketch space (the log's keyed random projection), so replaying a stored log
gives the same answer. Exact repeats are dropped first: a retry or a cached duplicate has distance 0
and would make any client look synthetic, yet tells an attacker nothing new.

Memory per principal grows with use up to ``window`` sketches (float32), so the worst case is about
``max_principals * window * sketch_dims * 4`` bytes.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from scipy import stats

from privaudit.guard.detectors import Bounded, DetectorConfig, EventFeatures, RecentRows, ramp, register_detector

W_FLOOR = 0.2  # how far below the threshold W must fall for the score to reach 1
MAX_CLASSES = 256  # labels beyond this many share one group (bounds the per-class bookkeeping)
OTHER = -1  # group for rows without an answer, and for the overflow


def shapiro_w(values: NDArray[np.float64]) -> float:
    """Shapiro-Wilk W of ``values``; 0 for a degenerate sample (every distance equal: a fixed-step
    scan is as far from natural as it gets, and scipy would only warn about zero range)."""
    if len(values) < 3:
        return 1.0
    spread = float(np.ptp(values))
    if not np.isfinite(spread) or spread <= 1e-9 * max(float(np.mean(np.abs(values))), 1e-12):
        return 0.0
    return float(stats.shapiro(values).statistic)


@dataclass
class _Class:
    """Running mean and variance of the distances that grew this class's G, and its threshold."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    threshold: float = 0.0

    def grow(self, d: float) -> None:
        self.n += 1
        self.total += d
        self.squares += d * d
        mean = self.total / self.n
        std = math.sqrt(max(0.0, self.squares / self.n - mean * mean))
        self.threshold = max(self.threshold, mean - std)


@dataclass
class _State:
    window: int
    sketches: NDArray[np.float32] = field(default_factory=lambda: np.empty((0, 0), dtype=np.float32))
    labels: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    filled: int = 0
    cursor: int = 0
    classes: dict[int, _Class] = field(default_factory=dict)
    distances: deque[float] = field(default_factory=deque)
    since_test: int = 0
    w: float | None = None
    queries: int = 0  # distinct queries (exact repeats excluded)
    rows: RecentRows = field(init=False)

    def __post_init__(self) -> None:
        self.distances = deque(maxlen=self.window)
        self.rows = RecentRows(4 * self.window)

    def group(self, label: int | None) -> int:
        if label is None or (label not in self.classes and len(self.classes) >= MAX_CLASSES):
            return OTHER
        return int(label)

    def nearest(self, sketch: NDArray[np.float64], group: int) -> float | None:
        if not self.filled:
            return None
        mask = self.labels[: self.filled] == group
        if not mask.any():
            return None
        diff = self.sketches[: self.filled][mask] - sketch
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", diff, diff))))

    def add(self, sketch: NDArray[np.float64], group: int) -> None:
        """Put ``sketch`` into G (a ring of at most ``window``, grown by doubling)."""
        k = len(sketch)
        if self.sketches.shape[1] != k:
            self.sketches = np.empty((min(16, self.window), k), dtype=np.float32)
            self.labels = np.empty(len(self.sketches), dtype=np.int64)
            self.filled = self.cursor = 0
        if self.cursor == len(self.sketches) and len(self.sketches) < self.window:
            size = min(2 * len(self.sketches), self.window)
            self.sketches = np.resize(self.sketches, (size, k))
            self.labels = np.resize(self.labels, size)
        self.cursor %= len(self.sketches)
        self.sketches[self.cursor] = sketch
        self.labels[self.cursor] = group
        self.cursor += 1
        self.filled = min(self.filled + 1, len(self.sketches))


@register_detector("prada")
class Prada:
    class Config(DetectorConfig):
        threshold: float = Field(0.85, gt=0.0, lt=1.0)  # alarm when W falls below
        min_queries: int = Field(100, ge=10)  # distances needed before the first test (as in the paper)
        window: int = Field(300, ge=20, le=5000)  # distances tested and G's size (scipy: n <= 5000)
        test_every: int = Field(10, ge=1)  # re-test after this many new distances (keeps observe cheap)
        max_principals: int = 10_000  # each may hold window x sketch_dims floats

    name = "prada"

    def __init__(self, config: "Prada.Config") -> None:
        self.config = config
        self.states: Bounded[str, _State] = Bounded(config.max_principals, lambda: _State(config.window))

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.states.get(f.principal)
        for sketch, label in st.rows.new(f.fingerprints, f.sketches, f.top):
            st.queries += 1
            group = st.group(label)
            cls = st.classes.setdefault(group, _Class())
            dist = st.nearest(sketch, group)
            if dist is None:  # the first of its class founds G
                st.add(sketch, group)
                continue
            st.distances.append(dist)
            st.since_test += 1
            if dist > cls.threshold:
                st.add(sketch, group)
                cls.grow(dist)
        n = len(st.distances)
        if n < cfg.min_queries:
            return 0.0, {"distances": n, "needed": cfg.min_queries}
        if st.w is None or st.since_test >= cfg.test_every:
            st.w = shapiro_w(np.fromiter(st.distances, dtype=float, count=n))
            st.since_test = 0
        score = ramp(st.w, cfg.threshold, cfg.threshold - W_FLOOR)
        return score, {"w": round(st.w, 4), "threshold": cfg.threshold, "distances": n, "queries": st.queries}
