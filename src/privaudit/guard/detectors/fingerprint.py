"""Blacklight-style near-duplicate detection (Li et al. 2022, "Blacklight: Scalable Defense for
Neural Networks against Query-Based Black-Box Attacks").

Query-based attacks (gradient estimation, boundary walks, noisy copies for label-only membership
inference) must send many queries that are almost the same point. Each row's sketch is quantised on
a coarse grid and every sliding window of the quantised vector is hashed; two queries sharing at
least ``match_fraction`` of their hashes are near-duplicates. The hash table is kept across ALL
principals: an attacker who opens fresh accounts keeps hitting the same buckets, and a query that is
near many earlier queries from anyone (``cluster``) alarms on its own, even on an account's first
request. Exact repeats are skipped per principal only: a row a throwaway key sent first still counts,
as a near-duplicate, for the key that sends it next (otherwise a burner key sending each probe first
makes the main key look like it only repeats known rows).

The grid step must suit the data's scale. ``quantum`` sets it in sketch units; left unset it is
``auto_fraction`` times a typical per-coordinate spread, measured as the median over the first
``calibration_principals`` principals of each one's own spread, so a single principal (an attacker
sending tiny perturbations) cannot shrink it. No hashing happens before that calibration, unless
``detectors.calibration_data`` or the state saved beside the query log supplied the spread at start.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from privaudit.guard.detectors import (Bounded, DetectorConfig, EventFeatures, ScaleCalibration, positive, ramp,
                                       register_detector, share_score)


def window_hashes(cells: NDArray[np.int64], width: int) -> tuple[int, ...]:
    """The distinct hashes of every sliding window of ``cells``, with its position (a sketch's
    coordinates are not interchangeable, unlike an image's pixels, so a window matches only at the
    same place). A tuple, not a set: see ``Fingerprint`` on why the table holds only tuples."""
    values = cells.tolist()
    return tuple(set(hash((i, *values[i:i + width])) for i in range(max(1, len(values) - width + 1))))


def quantise(sketch: NDArray[np.float64], quantum: float, offset: NDArray[np.float64]) -> NDArray[np.int64]:
    return np.floor(sketch / quantum + offset).astype(np.int64)


@dataclass
class _Principal:
    recent: deque[bool]


@register_detector("fingerprint")
class Fingerprint:
    class Config(DetectorConfig):
        quantum: float | None = Field(None, gt=0.0)  # grid step in sketch units; None: calibrate
        auto_fraction: float = Field(0.5, gt=0.0)
        calibration_rows: int = Field(20, ge=5)
        calibration_principals: int = Field(5, ge=1)
        window: int = Field(3, ge=1)  # sliding-window width over the quantised sketch
        match_fraction: float = Field(0.5, gt=0.0, le=1.0)
        history: int = Field(50_000, ge=100)  # queries remembered across all principals
        bucket_cap: int = Field(32, ge=1)  # query ids remembered per hash (bounds the lookup cost)
        principal_window: int = Field(50, ge=5)
        min_matches: int = Field(5, ge=1)  # near-duplicates among a principal's recent queries...
        min_fraction: float = Field(0.25, gt=0.0, le=1.0)  # ... that are also this share of them
        cluster: int = Field(8, ge=2)  # one query near this many remembered ones alarms by itself
        seen: int = Field(200_000, ge=100)  # (principal, row) pairs remembered, so repeats are skipped
        seed: int = 0  # grid offset

    name = "fingerprint"

    def __init__(self, config: "Fingerprint.Config") -> None:
        self.config = config
        self.scale = ScaleCalibration(config.calibration_rows, config.calibration_principals)
        self.offset: NDArray[np.float64] | None = None
        # Buckets and entries are tuples of ints, which the garbage collector stops tracking: a table
        # of deques or sets (hundreds of thousands of containers at full history) made every full
        # collection walk them all, a pause of tens of milliseconds in the middle of requests.
        self.table: dict[int, tuple[int, ...]] = {}
        self.entries: deque[tuple[int, tuple[int, ...]]] = deque()
        self.owner: dict[int, tuple[str, str]] = {}  # query id -> (principal, row fingerprint)
        self.next_id = 0
        self.seen: Bounded[str, bool] = Bounded(config.seen, lambda: True)
        self.principals: Bounded[str, _Principal] = Bounded(
            config.max_principals, lambda: _Principal(deque(maxlen=config.principal_window)))

    @property
    def quantum(self) -> float | None:
        """The grid step: pinned by the configuration, or learned (None until then)."""
        if self.config.quantum is not None:
            return self.config.quantum
        return None if self.scale.value is None else self.config.auto_fraction * self.scale.value

    @property
    def blind(self) -> bool:
        return self.quantum is None

    def calibrate(self, sketches: NDArray[np.float64]) -> None:
        self.scale.calibrate(sketches)

    def export_state(self) -> dict[str, Any] | None:
        return None if self.scale.value is None else {"spread": self.scale.value}

    def import_state(self, state: dict[str, Any]) -> None:
        self.scale.value = positive(state["spread"])

    def _remember(self, principal: str, fp: str, hashes: tuple[int, ...]) -> None:
        qid = self.next_id
        self.next_id += 1
        self.entries.append((qid, hashes))
        self.owner[qid] = (principal, fp)
        keep = self.config.bucket_cap - 1
        for h in hashes:
            bucket = self.table.get(h, ())
            self.table[h] = (bucket[-keep:] if keep else ()) + (qid,)  # the newest bucket_cap ids
        if len(self.entries) > self.config.history:
            old, old_hashes = self.entries.popleft()
            del self.owner[old]
            for h in old_hashes:
                bucket = self.table.get(h)  # type: ignore[assignment]  # None when the hash is gone
                if bucket and bucket[0] == old:
                    bucket = bucket[1:]
                    if bucket:
                        self.table[h] = bucket
                    else:
                        del self.table[h]

    def _near(self, hashes: tuple[int, ...]) -> list[int]:
        """Remembered queries sharing at least ``match_fraction`` of these hashes."""
        buckets = [b for b in map(self.table.get, hashes) if b]
        need = self.config.match_fraction * len(hashes)
        if len(buckets) < need:  # too few hashes were ever seen for anything to match
            return []
        ids = np.fromiter(chain.from_iterable(buckets), dtype=np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        return uniq[counts >= need].tolist()

    def observe(self, f: EventFeatures) -> tuple[float, dict[str, Any]]:
        cfg = self.config
        st = self.principals.get(f.principal)
        cluster, near_max, others = 0.0, 0, 0
        for fp, sketch in zip(f.fingerprints, f.sketches):
            mine = f"{f.principal}\0{fp}"
            if self.seen.peek(mine) is not None:  # this principal's exact repeat (a retry): nothing new
                continue
            self.seen.get(mine)
            quantum = self.quantum
            if quantum is None:
                self.scale.observe(f.principal, sketch)
                continue
            if self.offset is None or len(self.offset) != len(sketch):
                self.offset = np.random.default_rng(cfg.seed).uniform(0.0, 1.0, len(sketch))
            hashes = window_hashes(quantise(sketch, quantum, self.offset), cfg.window)
            # Copies of this very row (sent by other principals) are not near-duplicates of it: a
            # popular record many users send is no probe. Its neighbours count, whoever sent them.
            near = [q for q in self._near(hashes) if self.owner[q][1] != fp]
            st.recent.append(bool(near))
            if near:
                others = max(others, len({self.owner[q][0] for q in near} - {f.principal}))
                near_max = max(near_max, len(near))
                cluster = max(cluster, ramp(len(near), cfg.cluster, 2 * cfg.cluster))
            self._remember(f.principal, fp, hashes)
        quantum = self.quantum
        if quantum is None:
            return 0.0, {"calibrating": len(self.scale.sample.samples), "needed": cfg.calibration_principals}
        if not st.recent:
            return 0.0, {}
        # The principal's standing score persists across requests (like PRADA's). It needs both a count
        # and a share: an explainer's few hundred coarse perturbations hold a few near-duplicates by
        # chance, an attack's recent queries are mostly near-duplicates. A dense cluster raises this
        # one request even for an account with no history.
        matches = sum(st.recent)
        score = max(share_score(matches, len(st.recent), cfg.min_matches, cfg.min_fraction), cluster)
        return score, {"near_duplicates": int(sum(st.recent)), "of_recent": len(st.recent),
                      "largest_cluster": near_max, "other_principals": others,
                      "quantum": round(quantum, 6)}
