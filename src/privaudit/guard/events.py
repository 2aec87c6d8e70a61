"""What the proxy hands to monitoring, and what monitoring answers. The one seam between the request
path (app.py, identity, limits, hardening) and the query log, detectors and alerts (monitoring.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Level = Literal["log", "degrade", "throttle", "block"]
LEVELS: tuple[Level, ...] = ("log", "degrade", "throttle", "block")
# Decisions on which the proxy answered nothing from the model: monitoring logs them without rows and
# spends no detector work on them.
REFUSED = frozenset({"limited", "throttled", "blocked", "unauthenticated", "too_large", "bad_request", "not_found",
                     "busy", "monitor_error", "timeout"})


@dataclass(frozen=True)
class QueryEvent:
    """One answered (or refused) request. ``inputs`` are the raw rows: monitoring may fingerprint them
    but must not persist them unless the log is configured with ``raw_inputs: true``."""

    principal: str
    tier: str
    time: float  # unix seconds
    client_ip: str
    inputs: NDArray[np.float64]  # (n, d)
    outputs: NDArray[np.float64] | None  # upstream probabilities (n, C) before hardening; None if none
    decision: str  # "allowed", "degraded", "limited", "throttled", "blocked", "upstream_error", ...
    status: int
    request_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """Monitoring's answer for a principal after an event: the response level and why."""

    level: Level = "log"
    scores: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
