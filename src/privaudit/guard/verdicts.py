"""What monitoring has said about principals, as the request path reads it.

Monitoring answers each event with the principal's response level, or with an error when it could
not process the event. The request path asks two questions per request, so both are a dictionary
lookup: is this principal refused after a monitoring error (``failed``), and at which level does it
stand (``level``)? Only principals above ``log`` are kept, and refusals after errors are bounded.
Writes come from a monitoring thread; single dictionary operations are atomic.
"""

from __future__ import annotations

import time
from typing import Optional

from privaudit.guard.events import LEVELS, Level

MAX_FAILED = 100_000  # principals refused after a monitoring error, before expired ones are swept


class Verdicts:
    def __init__(self) -> None:
        self.levels: dict[str, Level] = {}  # principals monitoring raised above "log"
        self.refused_until: dict[str, float] = {}  # principal -> until when monitoring errors refuse it

    def record(self, principal: str, level: Optional[Level], error: Optional[Exception], *, deny: bool,
               block_seconds: float) -> None:
        """Monitoring's answer on one of ``principal``'s events. An error refuses the principal for
        ``block_seconds`` when ``deny`` (monitoring.on_error: deny); with allow it changes nothing."""
        if not principal:
            return
        if error is not None:
            if deny:
                now = time.monotonic()
                if len(self.refused_until) >= MAX_FAILED:  # bounded: drop the refusals that have run out
                    for who in [p for p, until in list(self.refused_until.items()) if until <= now]:
                        self.refused_until.pop(who, None)
                self.refused_until[principal] = now + block_seconds
            return
        if level is None or level == "log":
            self.levels.pop(principal, None)  # keep the table to the principals under suspicion
        else:
            self.levels[principal] = level

    def failed(self, principal: str) -> bool:
        """Whether a monitoring error on this principal's requests still refuses it."""
        if not self.refused_until:
            return False
        until = self.refused_until.get(principal)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self.refused_until.pop(principal, None)
        return False

    def level(self, principal: str, response: list[str]) -> Level:
        """The principal's level, at most as hard as guard.yaml's ``response`` allows: a block verdict
        with block disabled falls back to the strongest enabled level below it."""
        verdict = self.levels.get(principal)
        if verdict is None:
            return "log"
        wanted = LEVELS.index(verdict) if verdict in LEVELS else 0
        enabled = [i for i, level in enumerate(LEVELS) if level in response and i <= wanted]
        return LEVELS[max(enabled, default=0)]
