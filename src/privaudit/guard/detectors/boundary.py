"""Decision-boundary probing: many queries whose top-2 margin is almost zero.

Label-only membership inference, HopSkipJump and other boundary attacks binary-search for the point
where the answer flips, so most of their queries sit right on the boundary, where the two best
classes are nearly tied. Ordinary traffic from a reasonably confident model rarely does. The
margin is computed from the upstream probabilities before hardening, so this works even when callers
only ever see labels. A model that is often unsure needs a higher ``max_fraction``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field

from privaudit.guard.detectors import Bounded, DetectorConfig, EventFeatures, RecentRows, ramp, register_detector


@dataclass
class _State:
    near: deque[bool]
    rows: RecentRows


@register_detector("boundary")
class Boundary:
    class Config(DetectorConfig):
        margin: float = Field(0.1, gt=0.0, lt=1.0)  # top-1 minus top-2 probability below this is "on the boundary"
        window: int = Field(100, ge=10)  # recent distinct answered queries per principal
        min_queries: int = Field(20, ge=5)
        max_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # share on the boundary at the alarm

    name = "boundary"

    def __init__(self, config: "Boundary.Config") -> None:
        self.config = config
        self.states: Bounded[str, _State] = Bounded(config.max_principals,
                                                    lambda: _State(deque(maxlen=config.window), RecentRows(4 * config.window)))

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.states.get(f.principal)
        for fp, margin in zip(f.fingerprints, f.margins):
            if not np.isfinite(margin) or not st.rows.first_time(fp):  # no answer, or a retry
                continue
            st.near.append(bool(margin < cfg.margin))
        n = len(st.near)
        if n < cfg.min_queries:
            return 0.0, {"answered": n, "needed": cfg.min_queries}
        fraction = sum(st.near) / n
        return ramp(fraction, cfg.max_fraction, min(1.0, 2 * cfg.max_fraction)), {
            "near_boundary": round(fraction, 3), "max_fraction": cfg.max_fraction, "answered": n}
