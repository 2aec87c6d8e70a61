"""The guard's request path: a reverse proxy (``build_app``) or ASGI middleware (``GuardMiddleware``).

    route (404) -> size check -> identity (401) -> parse records (400) -> monitoring verdict (block: 429)
    -> per-principal limits (429) -> room in the monitoring queue (503) -> upstream (502)
    -> decode -> harden per tier -> re-encode

Every request, refused or answered, is queued for monitoring as a QueryEvent (privaudit.guard.worker
runs the query log and the detectors off the request path); the verdict applies to that principal's
next requests. Throttle and block verdicts, and the refusal after a monitoring error, answer with the
very 429 an exhausted quota gives. The upstream receives the records re-encoded by privaudit's own
wire code, not the client's bytes, so what it computes on is exactly what was counted and logged.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

import httpx
import numpy as np
from numpy.typing import NDArray
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privaudit.errors import ConfigError, DataError, EndpointError
from privaudit.guard.alerts import RequestCounter
from privaudit.guard.config import GuardConfig, load_config
from privaudit.guard.events import LEVELS, REFUSED, Level, QueryEvent, Verdict
from privaudit.guard.hardening import encode_answer, harden, mode_for, stricter
from privaudit.guard.identity import AuthError, Identity
from privaudit.guard.limits import LimitResult, RateLimits
from privaudit.guard.redact import redact
from privaudit.guard.upstream import UpstreamError, UpstreamPool
from privaudit.guard.wire import parse_request, route_matcher
from privaudit.guard.worker import Monitor, MonitorQueue, NullMonitor, default_monitor
from privaudit.models._http_protocols import WireFormat, decode, resolve_protocol

log = logging.getLogger("privaudit.guard")
_NO_ROWS: NDArray[np.float64] = np.empty((0, 0))
_MIDDLEWARE_UPSTREAM = "http://guarded-app"  # any host: the ASGI transport never resolves it
# Request ids: unique, not secret. A random per-process prefix and a counter (uuid4 reads os.urandom,
# a system call that, with the monitoring worker holding the interpreter, can wait a millisecond).
_ID_PREFIX = os.urandom(10).hex()
_ID_COUNTER = itertools.count()
_MAX_FAILED = 100_000  # principals refused after a monitoring error, before expired ones are swept


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
    is_route: Any  # path -> bool: the inference routes forwarded upstream


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
        self._transport = upstream_transport
        self._pools: dict[str, UpstreamPool] = {}
        self._client = httpx.AsyncClient(transport=upstream_transport, follow_redirects=False,
                                         limits=httpx.Limits(max_connections=slots, max_keepalive_connections=slots))
        if not config.log_http_client:
            # httpx logs every request's URL at INFO; an upstream URL may carry credentials.
            for name in ("httpx", "httpcore"):
                logging.getLogger(name).setLevel(logging.WARNING)
        self._slots = asyncio.Semaphore(slots)
        self._verdicts: dict[str, Verdict] = {}
        self._failed: dict[str, float] = {}  # principal -> until when monitoring errors refuse it
        self._closed = False
        # Labels are low-cardinality by construction: never a principal id, never a client address.
        self._requests = RequestCounter(self.registry)
        self._upstream_seconds = Histogram("privaudit_guard_upstream_seconds", "Upstream latency", registry=self.registry)
        self._monitor_refusals = Counter("privaudit_guard_monitor_refusals", "Requests refused because monitoring "
                                         "failed on the principal or had no room", registry=self.registry)
        mon = config.monitoring
        self.queue = MonitorQueue(self.monitor, self._on_result, max_events=mon.queue_events, max_bytes=mon.queue_bytes,
                                  registry=self.registry)

    @property
    def config(self) -> GuardConfig:
        return self._state.config

    def _build_state(self, config: GuardConfig) -> _State:
        if (self._upstream or config.upstream) is None:
            raise ConfigError(f"{config._path or 'guard.yaml'}: upstream: is required to run the guard as a proxy (e.g. http://127.0.0.1:8081)")
        classes = np.asarray(config.protocol.classes) if config.protocol.classes is not None else None
        try:
            is_route = route_matcher(config.protocol.type, config.routes)
        except ValueError as exc:
            raise ConfigError(f"{config._path or 'guard.yaml'}: routes: {exc}") from None
        return _State(config, Identity(config.identity), classes, is_route)

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

    def _pool(self, base: str) -> UpstreamPool:
        pool = self._pools.get(base)
        if pool is None:  # one per upstream URL (a reload may change it)
            pool = self._pools[base] = UpstreamPool(base, self._state.config.upstream_connections)
        return pool

    def _monitor_failed(self, principal: str) -> bool:
        until = self._failed.get(principal)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self._failed.pop(principal, None)
        return False

    def _level(self, principal: str) -> Level:
        # Act at most as hard as guard.yaml's `response` allows: a block verdict with block disabled
        # falls back to the strongest enabled level below it.
        verdict = self._verdicts.get(principal)
        wanted = LEVELS.index(verdict.level) if verdict is not None and verdict.level in LEVELS else 0
        enabled = [i for i, level in enumerate(LEVELS) if level in self._state.config.response and i <= wanted]
        return LEVELS[max(enabled, default=0)]

    async def handle(self, request: Request) -> Response:
        state = self._state
        if request.method != "POST" or not state.is_route(request.url.path):
            return _error(404, "not found")  # not an inference route: never forwarded, never monitored
        peer = request.client.host if request.client else ""
        trace = _Trace(f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}", state.identity.client_ip(peer, request.headers.getlist("x-forwarded-for")), time.time())
        response = await self._handle(request, state, trace)
        self._requests.count(trace.decision)
        self._observe(trace, response.status_code)
        response.headers["X-Request-ID"] = trace.request_id
        return response

    def authenticated(self, request: Request) -> bool:
        try:
            self._state.identity.authenticate(request.headers)
        except AuthError:
            return False
        return True

    async def _handle(self, request: Request, state: _State, trace: _Trace) -> Response:
        cfg = state.config
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cfg.max_body_bytes):
            trace.decision = "too_large"
            return _error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        try:
            principal = state.identity.authenticate(request.headers)
        except AuthError as exc:
            log.info("request %s from %s refused: %s", trace.request_id, trace.client_ip, redact(str(exc)))
            trace.decision = "unauthenticated"
            challenge = {"WWW-Authenticate": "Bearer"} if cfg.identity.jwt is not None else None
            return _error(401, "a valid API key or bearer token is required", challenge)
        tier = cfg.known_tier(principal.tier)
        trace.principal, trace.tier = principal.id, tier
        try:
            body = await asyncio.wait_for(_read_capped(request, cfg.max_body_bytes), cfg.client_timeouts.body_seconds)
        except asyncio.TimeoutError:
            trace.decision = "timeout"
            return _error(408, f"the request body did not arrive within {cfg.client_timeouts.body_seconds:g} s")
        if body is None:
            trace.decision = "too_large"
            return _error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        p = cfg.protocol
        wire = WireFormat(resolve_protocol(p.type, request.url.path), p.input_field, p.output_field, p.row_format,
                          tuple(p.feature_names) if p.feature_names else None)
        try:
            X = parse_request(wire, body, cfg.requests)
        except (ValueError, EndpointError) as exc:
            trace.decision = "bad_request"
            return _error(400, f"cannot read the records ({wire.protocol}): {exc}")
        trace.inputs = X
        if self._monitor_failed(principal.id):
            # Monitoring failed on this principal's request: fail closed, with the reply a block gets.
            trace.decision = "monitor_error"
            self._monitor_refusals.inc()
            return _limited(await self._limits.refusal(principal.id, tier))
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
        if not self.queue.has_room(2 * X.nbytes):
            if cfg.monitoring.on_error == "deny":
                trace.decision = "busy"
                self._monitor_refusals.inc()
                return _error(503, "the guard is busy; retry later", {"Retry-After": "1"})
            trace.extra["unmonitored"] = True
        return await self._forward(request.url.path, wire, X, state, tier, level, trace, quota)

    async def _forward(self, path: str, wire: WireFormat, X: NDArray[np.float64], state: _State, tier: str,
                       level: Level, trace: _Trace, quota: LimitResult) -> Response:
        cfg = state.config
        url = (self._upstream or cfg.upstream or "").rstrip("/") + path
        headers = {"Content-Type": "application/json", "Accept": "application/json", "X-Request-ID": trace.request_id}
        began = time.perf_counter()
        base = (self._upstream or cfg.upstream or "").rstrip("/")
        try:
            # Client credentials are not forwarded: the model server never sees API keys or tokens.
            async with self._slots:
                if self._transport is None:  # the usual case: our own keep-alive pool (upstream.py)
                    up: Any = await self._pool(base).post(path, wire.encode(X), trace.request_id, cfg.timeout)
                else:  # an in-process app (middleware) or a test transport: through httpx
                    up = await self._client.post(url, content=wire.encode(X), headers=headers, timeout=cfg.timeout)
        except (httpx.HTTPError, UpstreamError, DataError) as exc:
            log.warning("request %s: upstream %s failed: %s: %s", trace.request_id, redact(url), type(exc).__name__,
                        redact(str(exc)))
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
        # A refused request's rows cost nothing more: they are neither kept in the queue nor sketched.
        inputs = _NO_ROWS if trace.decision in REFUSED else trace.inputs
        event = QueryEvent(principal=trace.principal, tier=trace.tier, time=trace.started, client_ip=trace.client_ip,
                           inputs=inputs, outputs=trace.outputs, decision=trace.decision, status=status,
                           request_id=trace.request_id, extra=trace.extra)
        if not self.queue.submit(event) and trace.decision not in REFUSED:
            log.warning("request %s was answered but not monitored: the monitoring queue is full", trace.request_id)

    def _on_result(self, event: QueryEvent, verdict: Optional[Verdict], error: Optional[Exception]) -> None:
        """The worker's report on one event (runs in the worker thread; dict updates are atomic)."""
        if not event.principal:
            return
        if error is not None:
            if self._state.config.monitoring.on_error == "deny":
                now = time.monotonic()
                if len(self._failed) >= _MAX_FAILED:  # bounded: drop the refusals that have run out
                    for principal in [p for p, until in list(self._failed.items()) if until <= now]:
                        self._failed.pop(principal, None)
                self._failed[event.principal] = now + self._state.config.monitoring.error_block_seconds
            return
        assert verdict is not None
        if verdict.level == "log":
            self._verdicts.pop(event.principal, None)  # keep the table to the principals under suspicion
        else:
            self._verdicts[event.principal] = verdict

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until monitoring has seen every request handled so far (for tests and shutdown)."""
        return await asyncio.to_thread(self.queue.drain, timeout)

    async def aclose(self) -> None:
        """Close the monitor first (so its log is flushed), then the upstream pool and the limiter."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.to_thread(self.queue.close)
            self.monitor.close()
        finally:
            await self._client.aclose()
            for pool in self._pools.values():
                await pool.aclose()
            self._limits.close()


# --- the two ways to run it -----------------------------------------------------------------------


def build_app(config: GuardConfig, *, monitor: Optional[Monitor] = None, upstream_transport: Optional[httpx.AsyncBaseTransport] = None,
              registry: Optional[CollectorRegistry] = None) -> Starlette:
    """The reverse proxy: a POST to an inference route goes to ``upstream`` + the same path; GET
    /healthz is answered here, and ``metrics.path`` too when ``metrics.listen: proxy`` (to
    authenticated principals only; otherwise metrics have a listener of their own, see
    ``serve_metrics``). Everything else is 404. The Guard is ``app.state.guard`` (for reload())."""
    guard = Guard(config, monitor=monitor, upstream_transport=upstream_transport, registry=registry)

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if request.method == "POST":
            return await guard.handle(request)
        if path == "/healthz":
            return JSONResponse({"status": "ok"})
        metrics = guard.config.metrics
        if path == metrics.path and metrics.listen == "proxy":
            if not guard.authenticated(request):
                return _error(401, "a valid API key or bearer token is required")
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
    """The guard in front of an ASGI app that serves the model itself: requests to the inference routes
    pass through the same identity, limits, monitoring and hardening, then reach ``app`` in-process.
    Only what ``passthrough`` names ("METHOD /path", default GET and HEAD of /healthz) reaches ``app``
    unguarded; any other method or path is answered 404 by the guard. Metrics live in
    ``self.guard.registry``."""

    def __init__(self, app: ASGIApp, config: GuardConfig, *, monitor: Optional[Monitor] = None,
                 registry: Optional[CollectorRegistry] = None,
                 passthrough: tuple[str, ...] = ("GET /healthz", "HEAD /healthz")) -> None:
        self.app = app
        self.passthrough = frozenset(tuple(item.split(" ", 1)) for item in passthrough)
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
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and (scope["method"], scope["path"]) in self.passthrough:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # no inference over websockets: refuse the handshake
            await send({"type": "websocket.close", "code": 1008})
            return
        response = await self.guard.handle(Request(scope, receive))
        await response(scope, receive, send)
