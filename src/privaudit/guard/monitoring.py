"""The monitor: query log, probing detectors, graduated responses and alerts behind one call.

The proxy builds one :class:`Monitor` with :func:`build_monitor` from its configuration sections and
calls :meth:`Monitor.observe` once per request, from the event loop. ``observe`` fingerprints and
sketches the rows, runs every enabled detector (each O(window) per row), updates the principal's
response level, hands a record to the buffered query log and, when the level rose, queues an alert.
Nothing in it waits on the disk or the network. :meth:`Monitor.close` flushes the log and drains
the webhook queue; the proxy calls it on shutdown (SIGTERM included).

Graduated responses. Every detector scores a request in [0, 1], 0.5 being its alarm point. A
principal's level is a step along the configured ``response`` list (``log`` first, then e.g.
``degrade``, ``throttle``, ``block``):

* a request scoring at least ``bands[i]`` raises the principal to step ``i + 1`` at once (defaults
  0.5, 0.75, 0.9: a clear signal skips steps);
* while the signal persists, every ``escalate_every`` alarming requests add one more step;
* a step is dropped after each ``cooldown_seconds`` without an alarm.

Steps beyond the end of ``response`` stay at its last level, so ``[log, block]`` blocks on the first
alarm. Principals in ``allow`` are scored and logged but never leave ``log`` (explainers such as LIME,
internal evaluation jobs). An alert fires whenever a principal's level rises to at least
``alerts.min_level``.

Explainers need the allow list. LIME, SHAP's sampling explainers and the like send a few hundred
perturbations of one record: to the near-duplicate, knn and manifold detectors that IS probing (blanked
superpixels are far off the inputs ordinary clients send). With the default thresholds a LIME run on
an image is escalated within a few dozen queries, so list explainer principals in ``allow``.

Thresholds were set on synthetic traffic (tests/traffic.py) and checked on real attacks through a
running guard (bench/guard.py); calibrate them on your own benign traffic by replaying a day of logs
with ``privaudit monitor`` and checking who it flags. The fingerprint detector's grid step, the
knn detector's radius and the manifold detector's subspace are learned from ordinary traffic; see
privaudit.guard.learned for how ``detectors.calibration_data`` and the state saved beside the query
log make them work from the first request.

Requests the proxy refused (quota, block, bad credentials, unreadable bodies) cost no detector work:
they are logged without rows and only move the principal's cooldown clock. A request monitoring
cannot process raises MonitorError (counted in ``privaudit_guard_monitor_errors_total``); the proxy
turns it into a refusal unless ``monitoring.on_error: allow``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privaudit.errors import ConfigError
from privaudit.guard import detectors as det
from privaudit.guard.alerts import Alerts, AlertsConfig, GuardMetrics
from privaudit.guard.events import LEVELS, REFUSED, Level, QueryEvent, Verdict
from privaudit.guard import learned
from privaudit.guard.querylog import Featurizer, LogConfig, QueryLog, load_key, make_record

log = logging.getLogger("privaudit.guard.monitoring")
_NO_ROWS = np.zeros((0, 0))


class MonitorError(Exception):
    """Monitoring could not process a request (the proxy refuses the principal unless told otherwise)."""


class EscalationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bands: tuple[float, float, float] = (0.5, 0.75, 0.9)
    escalate_every: int = Field(20, ge=1)
    cooldown_seconds: float = Field(3600.0, gt=0.0)
    max_principals: int = Field(100_000, ge=1)


def target_step(score: float, strikes: int, bands: tuple[float, ...], every: int, top: int) -> int:
    """The step a principal earns from this request's score and its count of alarming requests."""
    by_score = sum(score >= b for b in bands)
    by_persistence = 1 + (strikes - 1) // every if strikes > 0 else 0
    return min(top, max(by_score, by_persistence))


def cooled(step: int, last_alarm: float, now: float, cooldown: float) -> int:
    """How many steps survive the quiet time since the last alarm (one dropped per ``cooldown``)."""
    if step == 0 or not math.isfinite(last_alarm):
        return step
    return max(0, step - int(max(0.0, now - last_alarm) // cooldown))


@dataclass
class Standing:
    """One principal's response state, plus what an offline report wants to know about it."""

    step: int = 0
    strikes: int = 0
    last_alarm: float = -math.inf
    queries: int = 0
    max_step: int = 0
    first_alarm: dict[str, dict[str, Any]] = field(default_factory=dict)  # detector -> when it first alarmed
    ips: set[str] = field(default_factory=set)


class Monitor:
    def __init__(self, detectors: dict[str, det.Detector], response: list[Level], allow: set[str],
                 featurizer: Featurizer, querylog: QueryLog | None, alerts: Alerts, metrics: GuardMetrics,
                 escalation: EscalationConfig, raw_inputs: bool = False, sketch_digits: int = 6,
                 state: learned.StateFile | None = None) -> None:
        self.detectors = detectors
        self.response = response
        self.allow = allow
        self.featurizer = featurizer
        self.querylog = querylog
        self.alerts = alerts
        self.metrics = metrics
        self.escalation = escalation
        self.raw_inputs = raw_inputs
        self.sketch_digits = sketch_digits
        self._lock = threading.Lock()  # detectors and standings are shared by every caller
        self._counts = {level: 0 for level in LEVELS}
        self.standings: det.Bounded[str, Standing] = det.Bounded(escalation.max_principals, self._new_standing,
                                                                  on_evict=self._evicted)
        self._closed = False
        self.state = state

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def _new_standing(self) -> Standing:
        self._move(None, self.response[0])
        return Standing()

    def _evicted(self, _principal: str, st: Standing) -> None:
        self._move(self.response[st.step], None)

    def _move(self, old: Level | None, new: Level | None) -> None:
        for level, delta in ((old, -1), (new, 1)):
            if level is not None:
                self._counts[level] += delta
                self.metrics.principals.labels(level=level).set(self._counts[level])

    def level_of(self, principal: str) -> Level:
        with self._lock:
            st = self.standings.peek(principal)
            return self.response[st.step] if st is not None else self.response[0]

    def observe(self, event: QueryEvent) -> Verdict:
        """Assess one request; returns the principal's level after it. Raises MonitorError (counted)
        when the request cannot be monitored: the caller must not treat that as a pass."""
        started = time.perf_counter()
        refused = event.decision in REFUSED
        try:
            if refused:  # nothing was answered: log who and what, spend nothing on the rows
                event = QueryEvent(event.principal, event.tier, event.time, event.client_ip, _NO_ROWS, None,
                                   event.decision, event.status, event.request_id, event.extra)
            features = self.featurizer.features(event)
            blind = self.state is not None and learned.blind(self.detectors)
            verdict, previous = self.observe_features(features, run_detectors=not refused)
            if self.querylog is not None:
                self.querylog.write(make_record(event, features, self.featurizer.key_id, verdict.scores, verdict.level,
                                                self.raw_inputs, self.sketch_digits))
                self.metrics.log_records.inc()
        except Exception as exc:
            self.metrics.errors.inc()
            log.error("monitoring failed on request %s: %s: %s", event.request_id, type(exc).__name__, exc)
            raise MonitorError(str(exc)) from exc
        if blind and self.state is not None and not learned.blind(self.detectors):
            self.state.save(self.detectors)  # a detector just finished learning: survive a restart
        rose = LEVELS.index(verdict.level) > LEVELS.index(previous)
        if (rose and self.alerts.wants(verdict.level)) or (self.alerts.on_alarms and verdict.evidence.get("new_alarms")):
            self.alerts.fire(self._alert(features, verdict, previous))
        self.metrics.seconds.observe(time.perf_counter() - started)
        return verdict

    def observe_features(self, f: det.EventFeatures, run_detectors: bool = True) -> tuple[Verdict, Level]:
        """The detector and escalation step on already-featurized input (also used offline)."""
        esc = self.escalation
        with self._lock:
            scores: dict[str, float] = {}
            alarming: dict[str, dict[str, Any]] = {}
            new_alarms: list[str] = []
            for name, detector in (self.detectors.items() if run_detectors else ()):
                score, detail = detector.observe(f)
                scores[name] = round(float(score), 4)
                if score >= det.ALARM:
                    alarming[name] = detail
                    self.metrics.alarms.labels(detector=name).inc()
            self.metrics.queries.inc(f.n_rows)
            st = self.standings.get(f.principal)
            st.queries += f.n_rows
            if len(st.ips) < 64:
                st.ips.add(f.client_ip)
            previous = self.response[st.step]
            step = cooled(st.step, st.last_alarm, f.time, esc.cooldown_seconds)
            if step < st.step:  # restart the cooldown clock for the steps that remain
                st.last_alarm += (st.step - step) * esc.cooldown_seconds
                if step == 0:
                    st.strikes = 0
            allowed = f.principal in self.allow
            if alarming:
                new_alarms = [name for name in alarming if name not in st.first_alarm]
                for name in alarming:
                    st.first_alarm.setdefault(name, {"queries": st.queries, "time": f.time,
                                                     "score": scores[name], "evidence": alarming[name]})
                if not allowed:
                    st.strikes += 1
                    st.last_alarm = f.time
                    step = max(step, target_step(max(scores.values()), st.strikes, esc.bands, esc.escalate_every,
                                                 len(self.response) - 1))
            if step != st.step:
                self._move(self.response[st.step], self.response[step])
                st.step = step
            st.max_step = max(st.max_step, step)
            level = self.response[step]
        evidence: dict[str, Any] = {"queries": st.queries}
        if alarming:
            evidence["alarming"] = alarming
        if new_alarms:
            evidence["new_alarms"] = new_alarms
        if allowed:
            evidence["allowed"] = True
        if level != previous:
            evidence["previous_level"] = previous
            if LEVELS.index(level) > LEVELS.index(previous):
                self.metrics.escalations.labels(level=level).inc()
        return Verdict(level=level, scores=scores, evidence=evidence), previous

    def _alert(self, f: det.EventFeatures, verdict: Verdict, previous: Level) -> dict[str, Any]:
        alarming = verdict.evidence.get("alarming", {})
        return {"type": "privaudit.guard.alert", "time": f.time, "principal": f.principal, "tier": f.tier,
                "client_ip": f.client_ip, "request_id": f.request_id, "level": verdict.level,
                "previous_level": previous, "detectors": sorted(alarming), "scores": verdict.scores,
                "evidence": alarming, "queries": verdict.evidence.get("queries")}

    def close(self) -> None:
        """Flush the query log and deliver queued alerts. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.state is not None:
                self.state.save(self.detectors)
            if self.querylog is not None:
                self.querylog.close()
        finally:
            self.alerts.close()


def _one_line(section: str, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{section}{'.' + loc if loc else ''}: {msg}")


def _validate(model: type[BaseModel], data: Any, section: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{section}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _one_line(section, exc) from None


def build_detectors(detectors: dict[str, Any] | list[str] | None) -> dict[str, det.Detector]:
    """Detectors from the ``detectors`` section: name -> parameters. ``null``, ``{}`` or ``true`` mean
    the defaults; ``false`` or ``{enabled: false}`` switch one off; a list names detectors to run."""
    if detectors is None:
        return {}
    if isinstance(detectors, list):
        detectors = {name: {} for name in detectors}
    if not isinstance(detectors, dict):
        raise ConfigError(f"detectors: expected a mapping of detector names, got {type(detectors).__name__}")
    known = det.registry()
    out: dict[str, det.Detector] = {}
    for name, params in detectors.items():
        if name not in known:
            raise ConfigError(f"detectors.{name}: unknown detector; choose from {', '.join(sorted(known))}")
        if params is False:
            continue
        if params is None or params is True:
            params = {}
        config = _validate(known[name].Config, params, f"detectors.{name}")
        if config.enabled:
            out[name] = known[name](config)
    return out


def check_response(response: list[str] | None) -> list[Level]:
    levels = list(response if response is not None else LEVELS)
    for i, level in enumerate(levels):
        if level not in LEVELS:
            raise ConfigError(f"response[{i}]: {level!r} is not a response level; use {', '.join(LEVELS)}")
    if levels[:1] != ["log"]:
        levels.insert(0, "log")  # every principal starts out merely logged
    ranks = [LEVELS.index(level) for level in levels]
    if ranks != sorted(set(ranks)):
        raise ConfigError(f"response: list each level once, mildest first ({', '.join(LEVELS)})")
    return levels  # type: ignore[return-value]


def build_monitor(log: dict[str, Any], detectors: dict[str, Any], response: list[str], allow: list[str],
                  alerts: dict[str, Any], metrics_registry: CollectorRegistry | None = None, *,
                  escalation: dict[str, Any] | None = None, clock: Callable[[], float] = time.time,
                  learn: bool = False, feature_names: list[str] | None = None) -> Monitor:
    """A monitor from the guard configuration's ``log``, ``detectors``, ``response``, ``allow`` and
    ``alerts`` sections. Every problem is one ConfigError line naming the key. ``learn`` (the live
    guard) reads ``detectors.calibration_data`` and the saved state, and warns about blind detectors;
    offline replays leave it off (their sketches come from the log, not from this process's key)."""
    log_cfg: LogConfig = _validate(LogConfig, log, "log")
    esc: EscalationConfig = _validate(EscalationConfig, escalation, "escalation")
    alerts_cfg: AlertsConfig = _validate(AlertsConfig, alerts, "alerts")
    if isinstance(detectors, dict):
        detectors = dict(detectors)
        calibration = detectors.pop("calibration_data", None)
        label = detectors.pop("calibration_label", None)
    else:
        calibration = label = None
    built = build_detectors(detectors)
    levels = check_response(response)
    if not isinstance(allow, list) or not all(isinstance(p, str) for p in allow):
        raise ConfigError("allow: expected a list of principal ids")
    key = load_key(log_cfg)
    featurizer = Featurizer(key, log_cfg.sketch_dims, log_cfg.feature_scale)
    state = None
    if learn:
        state = _learn(built, featurizer, key, log_cfg, calibration, label, feature_names)
    metrics = GuardMetrics(metrics_registry)
    alerter = Alerts(alerts_cfg, metrics)
    try:
        querylog = QueryLog(log_cfg, clock=clock) if log_cfg.path else None
    except BaseException:
        alerter.close()
        raise
    return Monitor(built, levels, set(allow), featurizer, querylog, alerter, metrics, esc,
                   raw_inputs=log_cfg.raw_inputs, sketch_digits=log_cfg.sketch_digits, state=state)


def _learn(built: dict[str, det.Detector], featurizer: Featurizer, key: bytes, log_cfg: LogConfig,
           calibration: Any, label: Any, feature_names: list[str] | None) -> learned.StateFile | None:
    """Calibrate from ``calibration_data``, else reload the saved state; warn about what stays blind."""
    if calibration is not None and not isinstance(calibration, str):
        raise ConfigError("detectors.calibration_data: expected the path of a CSV or Parquet file")
    if label is not None and not isinstance(label, str):
        raise ConfigError("detectors.calibration_label: expected a column name")
    state = learned.StateFile(learned.state_path(log_cfg.path), key, featurizer.key_id) if log_cfg.path else None
    if calibration is not None:
        taught = learned.calibrate(built, featurizer, learned.read_records(calibration, label, feature_names))
        log.info("calibrated %s from %s", ", ".join(taught) or "no detector", calibration)
    if state is not None and learned.blind(built):
        restored = state.load(built)
        if restored:
            log.info("restored the learned state of %s from %s", ", ".join(restored), state.path)
    still = learned.blind(built)
    if still:
        log.warning("detectors %s score nothing until they have learned the data's scale from the first "
                    "principals; set detectors.calibration_data (and log.path, to keep what they learn) so "
                    "they work from the first request", ", ".join(still))
    return state
