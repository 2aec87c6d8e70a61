"""Identity and address rotation: the ways an attacker spreads one job so that per-key limits and
per-principal detectors each see only a slice.

* one principal from many client addresses within ``window_seconds`` (proxy or botnet rotation);
* a principal whose queries are mostly exact rows that OTHER principals already sent within the
  window (a probe set replayed from fresh accounts after the first was throttled);
* a principal whose rows are mostly sent again by OTHER principals soon after (a throwaway key that
  sends each probe first, so that the key doing the work looks as if it only repeated known rows):
  the keys sharing rows are a signal on both sides.

Many principals behind one address (an office NAT, a mobile carrier) is normal and scores nothing,
and a handful of popular rows shared by many users stays below ``min_shared``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from privaudit.guard.detectors import Bounded, DetectorConfig, EventFeatures, ramp, register_detector

SENDERS_PER_ROW = 16  # principals remembered per fingerprint; enough to know it is shared


@dataclass
class _Principal:
    ips: dict[str, float] = field(default_factory=dict)  # address -> last seen
    rows: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, shared with another principal)
    echoed: dict[str, float] = field(default_factory=dict)  # own rows another principal sent later -> when


@register_detector("rotation")
class Rotation:
    class Config(DetectorConfig):
        window_seconds: float = Field(600.0, gt=0.0)
        max_ips: int = Field(6, ge=2)  # distinct addresses of one principal within the window
        min_shared: int = Field(10, ge=1)  # the principal's rows already sent by others, within the window
        shared_fraction: float = Field(0.5, gt=0.0, le=1.0)  # ... as a share of its distinct rows
        fingerprints: int = Field(200_000, ge=100)  # rows remembered across all principals
        principal_rows: int = Field(500, ge=10)  # recent distinct rows remembered per principal

    name = "rotation"

    def __init__(self, config: "Rotation.Config") -> None:
        self.config = config
        self.senders: Bounded[str, dict[str, float]] = Bounded(config.fingerprints, dict)
        self.principals: Bounded[str, _Principal] = Bounded(config.max_principals, _Principal)

    def _prune(self, st: _Principal, horizon: float) -> None:
        for ip in [ip for ip, t in st.ips.items() if t < horizon]:
            del st.ips[ip]
        # Past twice the alarm count the exact number no longer matters; bounding it bounds the work.
        while len(st.ips) > 4 * self.config.max_ips:
            del st.ips[min(st.ips, key=st.ips.__getitem__)]
        while st.rows and st.rows[0][0] < horizon:
            st.rows.popleft()
        for fp in [fp for fp, t in st.echoed.items() if t < horizon]:
            del st.echoed[fp]

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.principals.get(f.principal)
        st.ips[f.client_ip] = f.time
        horizon = f.time - cfg.window_seconds
        for fp in f.fingerprints:
            senders = self.senders.get(fp)
            if f.principal in senders:  # this principal's own repeat: not a new row
                senders[f.principal] = f.time
                continue
            earlier = [p for p, t in senders.items() if p != f.principal and t >= horizon]
            shared = bool(earlier)
            for p in earlier:
                first = self.principals.peek(p)
                if first is not None:
                    first.echoed[fp] = f.time
                    if len(first.echoed) > cfg.principal_rows:
                        del first.echoed[next(iter(first.echoed))]
            senders[f.principal] = f.time
            if len(senders) > SENDERS_PER_ROW:
                del senders[min(senders, key=senders.__getitem__)]
            st.rows.append((f.time, shared))
            if len(st.rows) > cfg.principal_rows:
                st.rows.popleft()
        self._prune(st, horizon)
        ips = len(st.ips)
        shared_rows = sum(s for _t, s in st.rows)
        fraction = shared_rows / len(st.rows) if st.rows else 0.0
        ip_score = ramp(ips, cfg.max_ips, 2 * cfg.max_ips)
        share_score = ramp(shared_rows, cfg.min_shared, 2 * cfg.min_shared) if fraction >= cfg.shared_fraction else 0.0
        echoed = len(st.echoed)
        echo_fraction = echoed / len(st.rows) if st.rows else 0.0
        echo_score = ramp(echoed, cfg.min_shared, 2 * cfg.min_shared) if echo_fraction >= cfg.shared_fraction else 0.0
        return max(ip_score, share_score, echo_score), {"ips": ips, "shared_rows": int(shared_rows),
                                            "shared_fraction": round(fraction, 3), "echoed_rows": echoed,
                                            "window_seconds": cfg.window_seconds}
