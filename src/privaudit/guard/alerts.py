"""Alerts and metrics: where the monitor's conclusions go.

* Structured log lines: one JSON object per alert through :mod:`logging` (logger
  ``privaudit.guard.alerts`` by default), so any log shipper can parse them.
* A webhook: alerts are queued and POSTed as JSON by a background thread, with retries and
  exponential backoff on transport errors, 429 and 5xx. The request path only enqueues; a full queue
  drops the alert (counted) rather than slow the proxy down. ``token_env`` adds a bearer token and
  ``secret_env`` an ``X-Privaudit-Signature: sha256=<HMAC of the body>`` header.
* Prometheus metrics in a ``CollectorRegistry``. Counters end in ``_total``. Principal ids are never
  label values: they are unbounded (one time series per caller) and identify people.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from privaudit.errors import ConfigError
from privaudit.guard.events import LEVELS, Level

log = logging.getLogger("privaudit.guard.alerts")
MAX_DECISION_LABELS = 32  # decisions come from the proxy's own vocabulary; cap it anyway
_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(5.0, gt=0.0)
    retries: int = Field(3, ge=0, le=20)
    backoff_seconds: float = Field(0.5, ge=0.0)  # doubles after each failed attempt
    max_backoff_seconds: float = Field(30.0, ge=0.0)
    queue_size: int = Field(1000, ge=1)
    token_env: str | None = None
    secret_env: str | None = None
    close_timeout_seconds: float = Field(10.0, ge=0.0)


class AlertsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: bool = True
    logger: str = "privaudit.guard.alerts"
    # Alert when a principal rises to this level or above; "log" alerts on every detector's first
    # alarm for a principal too, so an observe-only guard (response: [log]) still tells someone.
    min_level: Level = "degrade"
    webhook: WebhookConfig | None = None


class RequestCounter:
    """``privaudit_guard_requests_total{decision}``: every request the guard handled, by its decision.
    The one request counter: the proxy counts each request here once, monitoring does not count
    requests again. Decision labels are bounded: unexpected or too many distinct values become "other"."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter("privaudit_guard_requests", "Requests handled by the guard, by decision", ["decision"],
                               registry=registry)
        self._decisions: set[str] = set()
        self._children: dict[str, Any] = {}  # decision -> its labelled counter (labels() costs a lock and a lookup)

    def label(self, decision: str) -> str:
        if decision in self._decisions:
            return decision
        if _LABEL.match(decision) and len(self._decisions) < MAX_DECISION_LABELS:
            self._decisions.add(decision)
            return decision
        return "other"

    def count(self, decision: str) -> None:
        child = self._children.get(decision)
        if child is None:
            child = self._children[decision] = self.counter.labels(decision=self.label(decision))
        child.inc()


class GuardMetrics:
    """The monitor's Prometheus metrics, registered in ``registry`` (a fresh one if None). Requests
    are counted by the proxy (:class:`RequestCounter`); the monitor counts rows, alarms and alerts."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queries = Counter("privaudit_guard_queries", "Rows (model queries) seen by the monitor", registry=r)
        self.alarms = Counter("privaudit_guard_detector_alarms", "Requests a detector scored at or above its alarm",
                              ["detector"], registry=r)
        self.alerts = Counter("privaudit_guard_alerts", "Alerts raised, by the detector behind them",
                              ["detector"], registry=r)
        self.escalations = Counter("privaudit_guard_escalations", "Principals raised to a response level",
                                   ["level"], registry=r)
        self.principals = Gauge("privaudit_guard_principals", "Principals currently at each response level",
                                ["level"], registry=r)
        self.webhook = Counter("privaudit_guard_webhook_deliveries", "Webhook alert deliveries by outcome",
                               ["outcome"], registry=r)
        self.log_records = Counter("privaudit_guard_querylog_records", "Records handed to the query log", registry=r)
        self.errors = Counter("privaudit_guard_monitor_errors", "Events the monitor could not process", registry=r)
        self.seconds = Histogram("privaudit_guard_monitor_seconds", "Time spent in Monitor.observe per request",
                                 buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5), registry=r)
        for level in LEVELS:
            self.principals.labels(level=level).set(0)


class Webhook:
    """POSTs alerts from a background thread; ``send`` never blocks."""

    def __init__(self, cfg: WebhookConfig, metrics: GuardMetrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.headers = {"content-type": "application/json", "user-agent": "privaudit-guard"}
        if cfg.token_env:
            self.headers["authorization"] = f"Bearer {_env(cfg.token_env, 'alerts.webhook.token_env')}"
        self.secret = _env(cfg.secret_env, "alerts.webhook.secret_env").encode() if cfg.secret_env else None
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=cfg.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="privaudit-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(alert)
        except queue.Full:
            self.metrics.webhook.labels(outcome="dropped").inc()
            log.error("webhook queue full: alert dropped")

    def _post(self, client: httpx.Client, alert: dict[str, Any]) -> bool:
        body = json.dumps(alert, separators=(",", ":")).encode("utf-8")
        headers = dict(self.headers)
        if self.secret is not None:
            headers["x-privaudit-signature"] = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        delay = self.cfg.backoff_seconds
        for attempt in range(self.cfg.retries + 1):
            try:
                resp = client.post(self.cfg.url, content=body, headers=headers)
                if resp.status_code < 300:
                    return True
                retry = resp.status_code == 429 or resp.status_code >= 500
                why = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                retry, why = True, f"{type(exc).__name__}: {exc}"
            if not retry or attempt == self.cfg.retries:
                log.error("webhook %s: alert not delivered after %d attempt(s): %s", self.cfg.url, attempt + 1, why)
                return False
            self.metrics.webhook.labels(outcome="retried").inc()
            # Sleep, but wake at once if the process is shutting down and the queue is being drained.
            self._stop.wait(min(delay, self.cfg.max_backoff_seconds))
            delay *= 2
        return False

    def _run(self) -> None:
        with httpx.Client(timeout=self.cfg.timeout_seconds) as client:
            while True:
                alert = self.queue.get()
                if alert is None:
                    return
                ok = self._post(client, alert)
                self.metrics.webhook.labels(outcome="delivered" if ok else "failed").inc()

    def close(self) -> None:
        """Deliver what is queued (bounded by ``close_timeout_seconds``), then stop."""
        self.queue.put(None)
        self._thread.join(timeout=self.cfg.close_timeout_seconds)
        self._stop.set()
        self._thread.join(timeout=1.0)


def _env(name: str | None, key: str) -> str:
    value = os.environ.get(name or "")
    if not value:
        raise ConfigError(f"{key}: environment variable {name} is not set")
    return value


class Alerts:
    """Fan an alert out to the log, the webhook and the counters."""

    def __init__(self, cfg: AlertsConfig, metrics: GuardMetrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.logger = logging.getLogger(cfg.logger)
        self.webhook = Webhook(cfg.webhook, metrics) if cfg.webhook is not None else None
        self.sent = 0

    @property
    def on_alarms(self) -> bool:
        return self.cfg.min_level == "log"

    def wants(self, level: Level) -> bool:
        return LEVELS.index(level) >= LEVELS.index(self.cfg.min_level)

    def fire(self, alert: dict[str, Any]) -> None:
        self.sent += 1
        for detector in alert.get("detectors") or ["none"]:
            self.metrics.alerts.labels(detector=detector).inc()
        if self.cfg.log:
            self.logger.warning(json.dumps(alert, separators=(",", ":"), default=str))
        if self.webhook is not None:
            self.webhook.send(alert)

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
