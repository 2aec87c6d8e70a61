"""Probing detectors: one module each, registered by name with :func:`register_detector`.

A detector sees one request at a time as :class:`EventFeatures` -- fingerprints, sketches, output
summaries, principal, address and time, never raw rows -- so the same code runs inside the proxy and
offline over a stored query log. ``observe`` returns a score in [0, 1] and a small JSON-able evidence
dict. Scores share one scale so the monitor can compare them: 0 is nothing, 0.5 is the detector's
configured alarm point, 1 is far beyond it (see :func:`ramp`).

State is bounded: per-principal state lives in a :class:`Bounded` LRU map and every window is a
``deque(maxlen=...)``, so a flood of fresh principals cannot grow memory without limit.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

DETECTOR_MODULES = ("prada", "fingerprint", "knn", "manifold", "rotation", "boundary", "volume")
ALARM = 0.5  # the score every detector gives exactly at its configured threshold


@dataclass(frozen=True)
class EventFeatures:
    """What detectors may know about one request: the log record's content, as arrays."""

    time: float
    principal: str
    tier: str
    client_ip: str
    request_id: str
    fingerprints: tuple[str, ...]  # keyed HMAC per row: equal rows, equal fingerprints
    sketches: NDArray[np.float64]  # (n, k) keyed random projection per row: distances survive
    top: tuple[int | None, ...]  # top label per row (None: no output)
    margins: NDArray[np.float64]  # (n,) top-1 minus top-2 probability; NaN where unknown
    decision: str
    status: int

    @property
    def n_rows(self) -> int:
        return len(self.fingerprints)


class DetectorConfig(BaseModel):
    """Base for each detector's parameters: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_principals: int = 100_000  # per-principal states kept (least recently seen dropped first)


class Detector(Protocol):
    name: str

    def observe(self, features: EventFeatures) -> tuple[float, dict[str, Any]]: ...


class DetectorClass(Protocol):
    Config: type[DetectorConfig]

    def __call__(self, config: Any) -> Detector: ...


_REGISTRY: dict[str, Any] = {}
T = TypeVar("T")


def register_detector(name: str) -> Callable[[T], T]:
    def deco(cls: T) -> T:
        _REGISTRY[name] = cls
        setattr(cls, "name", name)
        return cls

    return deco


def registry() -> dict[str, Any]:
    for module in DETECTOR_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def ramp(value: float, threshold: float, extreme: float) -> float:
    """Map a statistic onto the shared score scale: 0.5 at ``threshold``, 1 at ``extreme``, linear in
    between and below (0 at twice the distance on the other side). Works whichever way the statistic
    grows with suspicion (``extreme`` may be below ``threshold``)."""
    span = extreme - threshold
    if span == 0:
        return 1.0 if value == threshold else 0.0
    return float(min(1.0, max(0.0, ALARM + ALARM * (value - threshold) / span)))


def share_score(hits: int, seen: int, min_count: int, min_fraction: float) -> float:
    """A principal's standing score from how many of its ``seen`` recent queries were suspicious:
    0.5 once there are both ``min_count`` of them and they make ``min_fraction`` of the recent ones,
    1 at twice either. Needing both keeps a few chance look-alikes from ever adding up to an alarm."""
    if seen <= 0:
        return 0.0
    return ramp(min(hits / min_count, hits / seen / min_fraction), 1.0, 2.0)


class RecentRows:
    """The fingerprints of a principal's last ``size`` distinct rows, to drop exact repeats: a retry
    or a cached duplicate tells an attacker nothing new, so detectors must not count it twice."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._set: set[str] = set()
        self._order: deque[str] = deque()

    def first_time(self, fingerprint: str) -> bool:
        """True (and remembered) unless the row is one of the recent ones."""
        if fingerprint in self._set:
            return False
        self._set.add(fingerprint)
        self._order.append(fingerprint)
        if len(self._order) > self.size:
            self._set.discard(self._order.popleft())
        return True

    def new(self, fingerprints: Iterable[str], *columns: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        """The rows of one request not seen recently: for each, its values from ``columns`` (zipped)."""
        for fp, *values in zip(fingerprints, *columns):
            if self.first_time(fp):
                yield tuple(values)


K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """An LRU map with a size cap and a factory for missing keys."""

    def __init__(self, maxsize: int, factory: Callable[[], V],
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        self.maxsize = maxsize
        self.factory = factory
        self.on_evict = on_evict
        self.data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V:
        value = self.data.get(key)
        if value is None:
            value = self.factory()
            self.data[key] = value
            if len(self.data) > self.maxsize:
                old_key, old_value = self.data.popitem(last=False)
                if self.on_evict is not None:
                    self.on_evict(old_key, old_value)
        else:
            self.data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        return self.data.get(key)

    def items(self) -> list[tuple[K, V]]:
        return list(self.data.items())

    def __len__(self) -> int:
        return len(self.data)


MAD_TO_SD = 1.4826  # median absolute deviation of a normal sample times this estimates its SD


def spread(sketches: NDArray[np.float64]) -> float:
    """A robust per-coordinate spread of one principal's queries: the median over coordinates of each
    coordinate's scaled median absolute deviation."""
    mad = np.median(np.abs(sketches - np.median(sketches, axis=0)), axis=0)
    return float(np.median(mad) * MAD_TO_SD)


class FirstPrincipals:
    """A sample of ordinary traffic for settings learned from it: the first ``rows`` distinct queries
    (sketches) of each of the first ``principals`` principals to send that many, every principal
    contributing the same number of rows so that no single one (an attacker sending tiny
    perturbations, a client sending one row again and again) dominates. ``accept`` may refuse a
    principal's finished sample; the next principal then takes its place."""

    def __init__(self, rows: int, principals: int, accept: Callable[[NDArray[np.float64]], bool] | None = None) -> None:
        self.rows = rows
        self.principals = principals
        self.accept = accept
        self.samples: list[NDArray[np.float64]] = []
        # Principals still filling their sample (least recently seen dropped first), and those done.
        self._open: Bounded[str, list[NDArray[np.float64]]] = Bounded(64 * principals, list)
        self._done: set[str] = set()

    @property
    def complete(self) -> bool:
        return len(self.samples) >= self.principals

    def add(self, principal: str, sketch: NDArray[np.float64]) -> bool:
        """Take one distinct query; True when this one completed the collection."""
        if self.complete or principal in self._done:
            return False
        rows = self._open.get(principal)
        rows.append(np.asarray(sketch, dtype=np.float64))
        if len(rows) < self.rows:
            return False
        del self._open.data[principal]
        self._done.add(principal)
        sample = np.asarray(rows)
        if self.accept is None or self.accept(sample):
            self.samples.append(sample)
        if not self.complete:
            return False
        self._open.data.clear()
        self._done.clear()
        return True


class ScaleCalibration:
    """The data's scale in sketch units: the median over :class:`FirstPrincipals` of each one's
    :func:`spread` (None until enough principals have been seen)."""

    def __init__(self, rows: int, principals: int) -> None:
        self.sample = FirstPrincipals(rows, principals, accept=lambda rows: spread(rows) > 0)
        self.value: float | None = None

    def observe(self, principal: str, sketch: NDArray[np.float64]) -> bool:
        """Take one distinct query; True when it completed the calibration."""
        if self.value is None and self.sample.add(principal, sketch):
            self.value = float(np.median([spread(rows) for rows in self.sample.samples]))
            return True
        return False

    def calibrate(self, sketches: NDArray[np.float64]) -> None:
        """Learn the scale at once from ordinary records (``detectors.calibration_data``), cut into
        chunks of ``rows`` as if each were one principal's first queries."""
        spreads = [s for s in (spread(chunk) for chunk in chunks(sketches, self.sample.rows)) if s > 0]
        if spreads:
            self.value = float(np.median(spreads))


def positive(value: Any) -> float:
    """A saved scale read back: a finite number above zero, or ValueError."""
    out = float(value)
    if not (np.isfinite(out) and out > 0):
        raise ValueError(f"{value!r} is not a positive number")
    return out


def chunks(sketches: NDArray[np.float64], rows: int) -> list[NDArray[np.float64]]:
    """Consecutive whole chunks of ``rows`` rows (calibration data standing in for principals)."""
    return [sketches[i:i + rows] for i in range(0, len(sketches) - rows + 1, rows)]


class Learner(Protocol):
    """What a detector that learns the data's scale offers besides ``observe`` (all optional): learn
    from ordinary records, say whether it is still blind, and save and restore what it learned."""

    def calibrate(self, sketches: NDArray[np.float64]) -> None: ...

    @property
    def blind(self) -> bool: ...

    def export_state(self) -> dict[str, Any] | None: ...

    def import_state(self, state: dict[str, Any]) -> None: ...


def create(name: str, params: dict[str, Any] | None) -> Detector:
    """Instantiate detector ``name`` with validated ``params`` (pydantic raises on bad keys)."""
    cls = registry()[name]
    return cls(cls.Config.model_validate(params or {}))


__all__ = ["ALARM", "Bounded", "Detector", "DetectorConfig", "EventFeatures", "FirstPrincipals", "Learner", "RecentRows", "ScaleCalibration", "chunks", "create", "positive",
           "ramp", "register_detector", "registry", "share_score", "spread"]
