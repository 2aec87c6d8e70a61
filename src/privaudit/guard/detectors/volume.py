"""Volume: a principal sending far more than its own history says it does.

Per principal, queries (rows) are counted per minute. When a minute closes, its count updates an
exponentially weighted mean and an exponentially weighted mean absolute deviation (a robust scale:
one past burst widens it linearly, not quadratically as a variance would). The current minute's
count is scored as a z-score against them once ``warmup_minutes`` minutes of history exist. Idle
minutes count as zeros, so a principal that is usually quiet has a low baseline.

A brand-new principal has no history to exceed; fresh-account floods are what per-principal limits
and the other detectors are for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from privaudit.guard.detectors import Bounded, DetectorConfig, EventFeatures, ramp, register_detector

MAD_TO_SD = 1.2533  # mean absolute deviation of a normal sample times this estimates its SD
MAX_IDLE_STEPS = 1440  # a day of idle minutes is as good as forever for the averages


def ewma_step(mean: float, dev: float, value: float, alpha: float) -> tuple[float, float]:
    """One update of the exponentially weighted mean and mean absolute deviation."""
    dev = (1 - alpha) * dev + alpha * abs(value - mean)
    mean = (1 - alpha) * mean + alpha * value
    return mean, dev


def robust_z(count: float, mean: float, dev: float, floor: float) -> float:
    """How many (robust) standard deviations ``count`` is above ``mean``; ``floor`` keeps a perfectly
    regular principal from alarming on one extra query."""
    return (count - mean) / max(MAD_TO_SD * dev, math.sqrt(max(mean, 0.0)), floor)


@dataclass
class _State:
    minute: int = -1
    count: int = 0
    mean: float = 0.0
    dev: float = 0.0
    minutes: int = 0  # closed minutes seen


@register_detector("volume")
class Volume:
    class Config(DetectorConfig):
        alpha: float = Field(0.1, gt=0.0, le=1.0)  # EWMA weight of the newest minute
        z_threshold: float = Field(8.0, gt=0.0)
        warmup_minutes: int = Field(10, ge=1)
        floor: float = Field(5.0, gt=0.0)  # smallest scale, in queries per minute

    name = "volume"

    def __init__(self, config: "Volume.Config") -> None:
        self.config = config
        self.states: Bounded[str, _State] = Bounded(config.max_principals, _State)

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.states.get(f.principal)
        minute = int(f.time // 60)
        if st.minute < 0:
            st.minute = minute
        elif minute > st.minute:
            st.mean, st.dev = ewma_step(st.mean, st.dev, st.count, cfg.alpha)
            st.minutes += 1
            for _ in range(min(minute - st.minute - 1, MAX_IDLE_STEPS)):  # the idle minutes in between
                st.mean, st.dev = ewma_step(st.mean, st.dev, 0.0, cfg.alpha)
                st.minutes += 1
            st.minute, st.count = minute, 0
        st.count += f.n_rows  # events arriving slightly out of order count toward the current minute
        if st.minutes < cfg.warmup_minutes:
            return 0.0, {"minutes": st.minutes, "needed": cfg.warmup_minutes}
        z = robust_z(st.count, st.mean, st.dev, cfg.floor)
        return ramp(z, cfg.z_threshold, 2 * cfg.z_threshold), {
            "per_minute": st.count, "baseline": round(st.mean, 2), "z": round(z, 2)}
