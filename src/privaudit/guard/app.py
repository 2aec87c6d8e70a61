"""The guard's request path: a reverse proxy (``build_app``) or ASGI middleware (``GuardMiddleware``).

    size check -> identity (401) -> parse records (400) -> monitoring verdict (block: 429)
    -> per-principal limits (429) -> upstream (502) -> decode -> harden per tier -> re-encode

Every request, refused or answered, is handed to monitoring as a QueryEvent; the verdict it returns
applies to that principal's next requests. Throttle and block verdicts answer with the very 429 an
exhausted quota gives. The upstream receives the records re-encoded by privaudit's own wire code, not
the client's bytes, so what it computes on is exactly what was counted and logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import httpx
import numpy as np
from numpy.typing import NDArray
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privaudit.errors import ConfigError, DataError, EndpointError
from privaudit.guard.alerts import RequestCounter
from privaudit.guard.config import GuardConfig, load_config
from privaudit.guard.events import LEVELS, Level, QueryEvent, Verdict
from privaudit.guard.hardening import encode_answer, harden, mode_for, stricter
from privaudit.guard.identity import AuthError, Identity
from privaudit.guard.limits import LimitResult, RateLimits
from privaudit.models._http_protocols import WireFormat, decode, get_path, resolve_protocol

log = logging.getLogger("privaudit.guard")
_NO_ROWS: NDArray[np.float64] = np.empty((0, 0))
_MIDDLEWARE_UPSTREAM = "http://guarded-app"  # any host: the ASGI transport never resolves it


class Monitor(Protocol):
    """What the guard needs of monitoring (privaudit.guard.monitoring builds the real one)."""

    def observe(self, event: QueryEvent) -> Verdict: ...

    def close(self) -> None: ...


class NullMonitor:
    """Stands in when monitoring is unavailable: every verdict is "log"."""

    def observe(self, event: QueryEvent) -> Verdict:
        return Verdict()

    def close(self) -> None:
        pass


def default_monitor(cfg: GuardConfig, registry: CollectorRegistry) -> Monitor:
    try:
        from privaudit.guard.monitoring import build_monitor  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        log.warning("guard monitoring is unavailable (%s); requests are served but not monitored", exc)
        return NullMonitor()
    monitor: Monitor = build_monitor(log=cfg.log, detectors=cfg.detector_settings(), response=list(cfg.response),
                                     allow=list(cfg.allow), alerts=cfg.alerts, metrics_registry=registry,
                                     escalation=cfg.escalation or None)
    return monitor


# --- requests -> records ----------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two "instances" keys could mean one thing to us and another to the model server; refuse both.
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("the JSON repeats a key")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"the JSON holds {name}, which is not a number")


def _numbers(rows: Any, feature_names: tuple[str, ...] | None) -> NDArray[np.float64]:
    if not isinstance(rows, list) or not rows:
        raise ValueError("expected a non-empty list of records")
    if feature_names is not None and all(isinstance(r, dict) for r in rows):
        try:
            rows = [[r[name] for name in feature_names] for r in rows]
        except KeyError as exc:
            raise ValueError(f"a record lacks feature {exc.args[0]!r}") from None
    width = len(rows[0]) if isinstance(rows[0], list) else -1
    for row in rows:
        if not isinstance(row, list) or len(row) != width or width == 0:
            raise ValueError("every record must be a list of the same number of features")
        for v in row:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"feature value {v!r} is not a number")
    return np.asarray(rows, dtype=np.float64)


def parse_request(wire: WireFormat, body: bytes) -> NDArray[np.float64]:
    """The (n, d) records of a client request in ``wire``'s protocol (the inverse of WireFormat.encode)."""
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 JSON") from None
    if wire.protocol == "v2":
        inputs = doc.get("inputs") if isinstance(doc, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ValueError("expected 'inputs' holding exactly one tensor")
        shape, data = inputs[0].get("shape"), inputs[0].get("data")
        if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(s, int) and s > 0 for s in shape)):
            raise ValueError("the input tensor's shape must be [records, features]")
        # The spec sends data flat, row-major; some clients nest it by row. Accept both, exactly shaped.
        flat = isinstance(data, list) and bool(data) and not isinstance(data[0], list)
        X = _numbers([data], None)[0] if flat else _numbers(data, None)
        if X.size != shape[0] * shape[1] or (not flat and X.shape != tuple(shape)):
            raise ValueError(f"the input tensor's data does not fill shape {shape}")
        return X.reshape(shape[0], shape[1])
    if wire.protocol == "custom":
        return _numbers(get_path(doc, wire.input_field), wire.feature_names)
    return _numbers(doc.get("instances") if isinstance(doc, dict) else None, None)


async def _read_capped(request: Request, cap: int) -> Optional[bytes]:
    """The body, or None as soon as it passes ``cap`` (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _limited(result: LimitResult) -> JSONResponse:
    # One body and one header set for every refusal by quota, throttle, block or failed storage.
    return _error(429, result.message, result.headers())


# --- the guard -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """Everything reload() replaces, swapped in one assignment; a request keeps the one it started with."""

    config: GuardConfig
    identity: Identity
    classes: Optional[NDArray[Any]]


@dataclass
class _Trace:
    """What one request leaves for monitoring, filled in as it goes."""

    request_id: str
    client_ip: str
    started: float
    principal: str = ""
    tier: str = ""
    inputs: NDArray[np.float64] = field(default_factory=lambda: _NO_ROWS)
    outputs: Optional[NDArray[np.float64]] = None
    decision: str = "allowed"
    extra: dict[str, Any] = field(default_factory=dict)


class Guard:
    """The shared request logic behind both the proxy and the middleware."""

    def __init__(self, config: GuardConfig, *, monitor: Optional[Monitor] = None, upstream_transport: Optional[httpx.AsyncBaseTransport] = None,
                 registry: Optional[CollectorRegistry] = None, upstream: Optional[str] = None) -> None:
        self._upstream = upstream
        self.registry = registry if registry is not None else CollectorRegistry()
        self._state = self._build_state(config)
        self._limits = RateLimits(config.limits)
        self.monitor: Monitor = monitor if monitor is not None else default_monitor(config, self.registry)
        # Redirects are not followed: the upstream is one fixed service, a redirect is a misconfiguration.
        # Requests beyond upstream_connections wait on the semaphore, not in httpx's pool, whose
        # bookkeeping costs grow with its queue and its connections: with up to 200 connections the
        # pool itself became the guard's largest cost under a burst, and throughput collapsed.
        slots = config.upstream_connections
        self._client = httpx.AsyncClient(transport=upstream_transport, follow_redirects=False,
                                         limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots))
        self._slots = asyncio.Semaphore(slots)
        self._verdicts: dict[str, Verdict] = {}
        self._closed = False
        # Labels are low-cardinality by construction: never a principal id, never a client address.
        self._requests = RequestCounter(self.registry)
        self._upstream_seconds = Histogram("privaudit_guard_upstream_seconds", "Upstream latency", registry=self.registry)

    @property
    def config(self) -> GuardConfig:
        return self._state.config

    def _build_state(self, config: GuardConfig) -> _State:
        if (self._upstream or config.upstream) is None:
            raise ConfigError(f"{config._path or 'guard.yaml'}: upstream: is required to run the guard as a proxy (e.g. http://127.0.0.1:8081)")
        classes = np.asarray(config.protocol.classes) if config.protocol.classes is not None else None
        return _State(config, Identity(config.identity), classes)

    def reload(self, config: Optional[GuardConfig] = None) -> None:
        """Re-read the configuration (or take ``config``), the API keys and the JWKS, then swap them in
        at once. In-flight requests finish with what they started with; on any error nothing changes."""
        if config is None:
            path = self._state.config._path
            if path is None:
                raise ConfigError("this guard was built from an in-memory configuration; pass the new one to reload()")
            config = load_config(path)
        state = self._build_state(config)
        self._limits.configure(config.limits)
        self._state = state

    def _level(self, principal: str) -> Level:
        # Act at most as hard as guard.yaml's `response` allows: a block verdict with block disabled
        # falls back to the strongest enabled level below it.
        verdict = self._verdicts.get(principal)
        wanted = LEVELS.index(verdict.level) if verdict is not None and verdict.level in LEVELS else 0
        enabled = [i for i, level in enumerate(LEVELS) if level in self._state.config.response and i <= wanted]
        return LEVELS[max(enabled, default=0)]

    async def handle(self, request: Request) -> Response:
        state = self._state
        peer = request.client.host if request.client else ""
        trace = _Trace(uuid.uuid4().hex, state.identity.client_ip(peer, request.headers.getlist("x-forwarded-for")), time.time())
        response = await self._handle(request, state, trace)
        self._requests.count(trace.decision)
        self._observe(trace, response.status_code)
        response.headers["X-Request-ID"] = trace.request_id
        return response

    async def _handle(self, request: Request, state: _State, trace: _Trace) -> Response:
        cfg = state.config
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cfg.max_body_bytes):
            trace.decision = "too_large"
            return _error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        try:
            principal = state.identity.authenticate(request.headers)
        except AuthError as exc:
            log.info("request %s from %s refused: %s", trace.request_id, trace.client_ip, exc)
            trace.decision = "unauthenticated"
            challenge = {"WWW-Authenticate": "Bearer"} if cfg.identity.jwt is not None else None
            return _error(401, "a valid API key or bearer token is required", challenge)
        tier = cfg.known_tier(principal.tier)
        trace.principal, trace.tier = principal.id, tier
        body = await _read_capped(request, cfg.max_body_bytes)
        if body is None:
            trace.decision = "too_large"
            return _error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        p = cfg.protocol
        wire = WireFormat(resolve_protocol(p.type, request.url.path), p.input_field, p.output_field, p.row_format,
                          tuple(p.feature_names) if p.feature_names else None)
        try:
            X = parse_request(wire, body)
        except (ValueError, EndpointError) as exc:
            trace.decision = "bad_request"
            return _error(400, f"cannot read the records ({wire.protocol}): {exc}")
        trace.inputs = X
        level = self._level(principal.id)
        if level == "block":
            trace.decision = "blocked"
            return _limited(await self._limits.refusal(principal.id, tier))
        quota = await self._limits.acquire(principal.id, tier, len(X), throttled=level == "throttle")
        if quota.storage_error:
            trace.extra["storage_error"] = True
        if not quota.allowed:
            trace.decision = "throttled" if level == "throttle" else "limited"
            return _limited(quota)
        return await self._forward(request.url.path, wire, X, state, tier, level, trace, quota)

    async def _forward(self, path: str, wire: WireFormat, X: NDArray[np.float64], state: _State, tier: str,
                       level: Level, trace: _Trace, quota: LimitResult) -> Response:
        cfg = state.config
        url = (self._upstream or cfg.upstream or "").rstrip("/") + path
        headers = {"Content-Type": "application/json", "Accept": "application/json", "X-Request-ID": trace.request_id}
        began = time.perf_counter()
        try:
            # Client credentials are not forwarded: the model server never sees API keys or tokens.
            async with self._slots:
                up = await self._client.post(url, content=wire.encode(X), headers=headers, timeout=cfg.timeout)
        except (httpx.HTTPError, DataError) as exc:
            log.warning("request %s: upstream %s failed: %s: %s", trace.request_id, url, type(exc).__name__, exc)
            trace.decision = "upstream_error"
            return _error(502, "the model is unavailable")
        finally:
            self._upstream_seconds.observe(time.perf_counter() - began)
        if not up.is_success:
            trace.decision, trace.extra["upstream_status"] = "upstream_error", up.status_code
            # A 4xx about the records is the client's to fix; anything else is ours (e.g. 401 = the guard's upstream credentials).
            client_fault = 400 <= up.status_code < 500 and up.status_code not in (401, 403, 407, 429)
            return _error(up.status_code if client_fault else 502, f"the model answered HTTP {up.status_code}")
        try:
            answer = up.json()
            outputs, classes = decode(wire.extract(answer, len(X)), state.classes)
        except (ValueError, EndpointError) as exc:
            # Never pass on an answer we could not read: it would skip hardening.
            log.error("request %s: cannot read the upstream answer: %s", trace.request_id, exc)
            trace.decision = "upstream_error"
            return _error(502, "the model's answer could not be read")
        trace.outputs = outputs.astype(np.float64) if outputs.ndim == 2 else None
        mode = mode_for(cfg.policy_for(tier))
        if level in ("degrade", "throttle"):
            mode = stricter(mode)
            trace.decision = "degraded"
        trace.extra["output"] = mode.kind
        return JSONResponse(encode_answer(wire, harden(outputs, mode), classes, answer), headers=quota.headers())

    def _observe(self, trace: _Trace, status: int) -> None:
        event = QueryEvent(principal=trace.principal, tier=trace.tier, time=trace.started, client_ip=trace.client_ip,
                           inputs=trace.inputs, outputs=trace.outputs, decision=trace.decision, status=status,
                           request_id=trace.request_id, extra=trace.extra)
        try:
            verdict = self.monitor.observe(event)
        except Exception:  # monitoring failing must not take the model down with it
            log.exception("monitoring failed on request %s", trace.request_id)
            return
        if not trace.principal:
            return
        if verdict.level == "log":
            self._verdicts.pop(trace.principal, None)  # keep the table to the principals under suspicion
        else:
            self._verdicts[trace.principal] = verdict

    async def aclose(self) -> None:
        """Close the monitor first (so its log is flushed), then the upstream pool and the limiter."""
        if self._closed:
            return
        self._closed = True
        try:
            self.monitor.close()
        finally:
            await self._client.aclose()
            self._limits.close()


# --- the two ways to run it -----------------------------------------------------------------------


def build_app(config: GuardConfig, *, monitor: Optional[Monitor] = None, upstream_transport: Optional[httpx.AsyncBaseTransport] = None,
              registry: Optional[CollectorRegistry] = None) -> Starlette:
    """The reverse proxy: every POST goes to ``upstream`` + the same path; GET /healthz and GET
    ``metrics.path`` are answered here. The Guard is ``app.state.guard`` (for reload())."""
    guard = Guard(config, monitor=monitor, upstream_transport=upstream_transport, registry=registry)

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if request.method == "POST":
            if ".." in path.split("/"):
                return _error(404, "not found")
            return await guard.handle(request)
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        if path == guard.config.metrics.path:
            return Response(generate_latest(guard.registry), media_type=CONTENT_TYPE_LATEST)
        return _error(404, "not found")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await guard.aclose()  # runs on SIGTERM/SIGINT once uvicorn has drained in-flight requests

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "HEAD", "POST"])], lifespan=lifespan)
    app.state.guard = guard
    return app


class GuardMiddleware:
    """The guard in front of an ASGI app that serves the model itself: POST requests pass through the
    same identity, limits, monitoring and hardening, then reach ``app`` in-process; other methods go
    straight to ``app``. Metrics live in ``self.guard.registry``."""

    def __init__(self, app: ASGIApp, config: GuardConfig, *, monitor: Optional[Monitor] = None,
                 registry: Optional[CollectorRegistry] = None) -> None:
        self.app = app
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.guard = Guard(config, monitor=monitor, upstream_transport=transport, registry=registry, upstream=_MIDDLEWARE_UPSTREAM)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            async def on_shutdown_close() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    await self.guard.aclose()
                return message

            await self.app(scope, on_shutdown_close, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        response = await self.guard.handle(Request(scope, receive))
        await response(scope, receive, send)
