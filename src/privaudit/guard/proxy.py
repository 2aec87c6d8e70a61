"""The guard's request logic, shared by the reverse proxy and the middleware (privaudit.guard.app).

    route (404) -> size check -> identity (401) -> parse records (400) -> monitoring verdict (block: 429)
    -> per-principal limits (429) -> room in the monitoring queue (503) -> upstream (502)
    -> decode -> harden per tier -> re-encode

Every request, refused or answered, is handed to monitoring as a QueryEvent: by default to a
monitoring process of its own (privaudit.guard.monitor_process), or to a worker thread when the
caller passes a Monitor object (privaudit.guard.worker). The verdict applies to that principal's
next requests. Throttle and block verdicts, and the refusal after a monitoring error, answer with the
very 429 an exhausted quota gives. The upstream receives the records re-encoded by privaudit's own
wire code, not the client's bytes, so what it computes on is exactly what was counted and logged.

The request path is the guard's cost per request, so it avoids what it can: JSON is read and written
with orjson, the verdict table holds plain level strings, and no log line is formatted for a request
that is answered normally.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import httpx
import numpy as np
import orjson
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from privaudit.errors import ConfigError, DataError, EndpointError
from privaudit.guard.alerts import RequestCounter
from privaudit.guard.config import GuardConfig, load_config
from privaudit.guard.events import REFUSED, Level, QueryEvent
from privaudit.guard.hardening import encode_answer, harden, mode_for, stricter
from privaudit.guard.identity import AuthError, Identity
from privaudit.guard.limits import LimitResult, RateLimits
from privaudit.guard.monitor_process import ProcessQueue, monitor_settings
from privaudit.guard.redact import redact
from privaudit.guard.upstream import UpstreamError, UpstreamPool
from privaudit.guard.verdicts import Verdicts
from privaudit.guard.wire import encode_records, parse_request, route_matcher
from privaudit.guard.worker import Monitor, MonitorQueue, NullMonitor, monitoring_importable
from privaudit.models._http_protocols import WireFormat, decode, resolve_protocol

log = logging.getLogger("privaudit.guard")
_NO_ROWS: NDArray[np.float64] = np.empty((0, 0))
# Request ids: unique, not secret. A random per-process prefix and a counter (uuid4 reads os.urandom,
# a system call per request).
_ID_PREFIX = os.urandom(10).hex()
_ID_COUNTER = itertools.count()
_MAX_WIRES = 1024  # request paths whose wire format is remembered ({name} segments make paths many)
_JSON = "application/json"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 path characters left as they are


def json_response(status: int, body: Any, headers: Optional[dict[str, str]] = None) -> Response:
    """A JSON response written by orjson (NaN, which JSON cannot spell, becomes null)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, _JSON)


def error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> Response:
    return json_response(status, {"error": message}, headers)


def _limited(result: LimitResult) -> Response:
    # One body and one header set for every refusal by quota, throttle, block or failed storage.
    return error(429, result.message, result.headers())


async def _read_capped(request: Request, cap: int) -> Optional[bytes]:
    """The body, or None as soon as it passes ``cap`` (the rest is never read)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class _State:
    """Everything reload() replaces, swapped in one assignment; a request keeps the one it started with."""

    config: GuardConfig
    identity: Identity
    classes: Optional[NDArray[Any]]
    is_route: Any  # path -> bool: the inference routes forwarded upstream
    upstream: str  # the upstream's base URL, without a trailing slash
    wires: dict[str, WireFormat] = field(default_factory=dict)  # request path -> its wire format

    def wire(self, path: str) -> WireFormat:
        wire = self.wires.get(path)
        if wire is None:
            p = self.config.protocol
            wire = WireFormat(resolve_protocol(p.type, path), p.input_field, p.output_field, p.row_format,
                              tuple(p.feature_names) if p.feature_names else None)
            if len(self.wires) >= _MAX_WIRES:
                self.wires.clear()
            self.wires[path] = wire
        return wire


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
    reserved: Optional[int] = None  # bytes of monitoring queue held for this request before it was forwarded


class Guard:
    """The shared request logic behind both the proxy and the middleware. With ``monitor`` (a Monitor
    object) monitoring runs in a thread of this process; without it, in a process of its own."""

    def __init__(self, config: GuardConfig, *, monitor: Optional[Monitor] = None, upstream_transport: Optional[httpx.AsyncBaseTransport] = None,
                 registry: Optional[CollectorRegistry] = None, upstream: Optional[str] = None) -> None:
        self._upstream = upstream
        self.registry = registry if registry is not None else CollectorRegistry()
        self._state = self._build_state(config)
        self.verdicts = Verdicts()
        self._closed = False
        # Labels are low-cardinality by construction: never a principal id, never a client address.
        self._requests = RequestCounter(self.registry)
        self._upstream_seconds = Histogram("privaudit_guard_upstream_seconds", "Upstream latency", registry=self.registry)
        self._monitor_refusals = Counter("privaudit_guard_monitor_refusals", "Requests refused because monitoring "
                                         "failed on the principal, had no room or has stopped", registry=self.registry)
        self._unmonitored = Counter("privaudit_guard_unmonitored", "Requests answered without monitoring "
                                    "(monitoring.on_error: allow)", registry=self.registry)
        mon = config.monitoring
        self.monitor: Optional[Monitor] = monitor
        self.queue: Union[MonitorQueue, ProcessQueue]
        if monitor is None and monitoring_importable(config):
            self.queue = ProcessQueue(monitor_settings(config), self._on_result, max_events=mon.queue_events,
                                      max_bytes=mon.queue_bytes, registry=self.registry)
        else:
            self.monitor = monitor if monitor is not None else NullMonitor()
            self.queue = MonitorQueue(self.monitor, self._on_result, max_events=mon.queue_events,
                                      max_bytes=mon.queue_bytes, registry=self.registry)
        self._limits = RateLimits(config.limits)
        # Redirects are not followed: the upstream is one fixed service, a redirect is a misconfiguration.
        # Requests beyond upstream_connections wait on the semaphore, not in a connection pool.
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

    @property
    def config(self) -> GuardConfig:
        return self._state.config

    @property
    def monitoring_up(self) -> bool:
        """False once the monitoring process has stopped (the guard then refuses by default)."""
        return self.queue.alive

    def _build_state(self, config: GuardConfig) -> _State:
        base = self._upstream or config.upstream
        if base is None:
            raise ConfigError(f"{config._path or 'guard.yaml'}: upstream: is required to run the guard as a proxy (e.g. http://127.0.0.1:8081)")
        classes = np.asarray(config.protocol.classes) if config.protocol.classes is not None else None
        try:
            is_route = route_matcher(config.protocol.type, config.routes)
        except ValueError as exc:
            raise ConfigError(f"{config._path or 'guard.yaml'}: routes: {exc}") from None
        return _State(config, Identity(config.identity), classes, is_route, base.rstrip("/"))

    def reload(self, config: Optional[GuardConfig] = None) -> None:
        """Re-read the configuration (or take ``config``), the API keys and the JWKS, then swap them in
        at once. In-flight requests finish with what they started with; on any error nothing changes.
        Monitoring's sections take effect at the next start."""
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

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI request, then hand it to monitoring: the event's encoding and its pipe write
        (which wakes the monitoring process) come after the answer has left, not before."""
        response, trace = await self.process(Request(scope, receive))
        try:
            await response(scope, receive, send)
        finally:
            self.finish(trace, response.status_code)

    def finish(self, trace: _Trace, status: int) -> None:
        """Count the request and hand it to monitoring."""
        if not trace.request_id:
            return  # a 404 for a path that is not an inference route
        self._requests.count(trace.decision)
        self._observe(trace, status)

    async def process(self, request: Request) -> tuple[Response, _Trace]:
        """The response to ``request`` and what it leaves for monitoring (see ``finish``)."""
        state = self._state
        scope = request.scope
        # The decoded path, percent-encoded again: what is routed is exactly what the upstream receives, and
        # no space, CR/LF, ? or # or non-ASCII character ever reaches its request line raw.
        path = quote(scope["path"], safe=_PATH_SAFE)
        if scope["method"] != "POST" or not state.is_route(path):
            # Not an inference route: never forwarded, never monitored (nor counted: no principal is known).
            return error(404, "not found"), _Trace("", "", 0.0, decision="not_found")
        client = scope.get("client")
        trace = _Trace(f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFF:012x}",
                       state.identity.client_ip(client[0] if client else "", request.headers.getlist("x-forwarded-for")),
                       time.time())
        response = await self._handle(request, path, state, trace)
        response.headers["X-Request-ID"] = trace.request_id
        return response, trace

    def authenticated(self, request: Request) -> bool:
        try:
            self._state.identity.authenticate(request.headers)
        except AuthError:
            return False
        return True

    async def _handle(self, request: Request, path: str, state: _State, trace: _Trace) -> Response:
        cfg = state.config
        declared = request.headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit() and int(declared) <= cfg.max_body_bytes):
            trace.decision = "too_large"
            return error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        try:
            principal = state.identity.authenticate(request.headers)
        except AuthError as exc:
            log.info("request %s from %s refused: %s", trace.request_id, trace.client_ip, redact(str(exc)))
            trace.decision = "unauthenticated"
            challenge = {"WWW-Authenticate": "Bearer"} if cfg.identity.jwt is not None else None
            return error(401, "a valid API key or bearer token is required", challenge)
        tier = cfg.known_tier(principal.tier)
        trace.principal, trace.tier = principal.id, tier
        try:
            async with asyncio.timeout(cfg.client_timeouts.body_seconds):
                body = await _read_capped(request, cfg.max_body_bytes)
        except TimeoutError:
            trace.decision = "timeout"
            return error(408, f"the request body did not arrive within {cfg.client_timeouts.body_seconds:g} s")
        if body is None:
            trace.decision = "too_large"
            return error(413, f"the request body exceeds {cfg.max_body_bytes} bytes")
        wire = state.wire(path)
        try:
            X = parse_request(wire, body, cfg.requests)
        except (ValueError, EndpointError) as exc:
            trace.decision = "bad_request"
            return error(400, f"cannot read the records ({wire.protocol}): {exc}")
        trace.inputs = X
        if self.verdicts.failed(principal.id):
            # Monitoring failed on this principal's request: fail closed, with the reply a block gets.
            trace.decision = "monitor_error"
            self._monitor_refusals.inc()
            return _limited(await self._limits.refusal(principal.id, tier))
        level = self.verdicts.level(principal.id, cfg.response)
        if level == "block":
            trace.decision = "blocked"
            return _limited(await self._limits.refusal(principal.id, tier))
        quota = await self._limits.acquire(principal.id, tier, len(X), throttled=level == "throttle")
        if quota.storage_error:
            trace.extra["storage_error"] = True
        if not quota.allowed:
            trace.decision = "throttled" if level == "throttle" else "limited"
            return _limited(quota)
        # Room in the monitoring queue is held before forwarding, so an answered request always finds it.
        if self.queue.reserve(2 * X.nbytes):
            trace.reserved = 2 * X.nbytes
        else:
            # No room, or the monitoring process has stopped: nothing is answered unmonitored unless
            # monitoring.on_error says so, and then it is counted.
            if cfg.monitoring.on_error == "deny":
                trace.decision = "busy"
                self._monitor_refusals.inc()
                return error(503, "the guard is busy; retry later", {"Retry-After": "1"})
            trace.extra["unmonitored"] = True
            self._unmonitored.inc()
        return await self._forward(path, wire, X, state, tier, level, trace, quota)

    async def _forward(self, path: str, wire: WireFormat, X: NDArray[np.float64], state: _State, tier: str,
                       level: Level, trace: _Trace, quota: LimitResult) -> Response:
        cfg = state.config
        base = state.upstream
        began = time.perf_counter()
        try:
            # Client credentials are not forwarded: the model server never sees API keys or tokens.
            async with self._slots:
                if self._transport is None:  # the usual case: our own keep-alive pool (upstream.py)
                    up: Any = await self._pool(base).post(path, encode_records(wire, X), trace.request_id, cfg.timeout)
                else:  # an in-process app (middleware) or a test transport: through httpx
                    headers = {"Content-Type": _JSON, "Accept": _JSON, "X-Request-ID": trace.request_id}
                    up = await self._client.post(base + path, content=encode_records(wire, X), headers=headers,
                                                 timeout=cfg.timeout)
        except (httpx.HTTPError, UpstreamError, DataError) as exc:
            log.warning("request %s: upstream %s failed: %s: %s", trace.request_id, redact(base + path),
                        type(exc).__name__, redact(str(exc)))
            trace.decision = "upstream_error"
            return error(502, "the model is unavailable")
        finally:
            self._upstream_seconds.observe(time.perf_counter() - began)
        if not 200 <= up.status_code < 300:
            trace.decision, trace.extra["upstream_status"] = "upstream_error", up.status_code
            # A 4xx about the records is the client's to fix; anything else is ours (e.g. 401 = the guard's upstream credentials).
            client_fault = 400 <= up.status_code < 500 and up.status_code not in (401, 403, 407, 429)
            return error(up.status_code if client_fault else 502, f"the model answered HTTP {up.status_code}")
        try:
            answer = orjson.loads(up.content)
            outputs, classes = decode(wire.extract(answer, len(X)), state.classes)
        except (ValueError, EndpointError) as exc:  # orjson.JSONDecodeError is a ValueError
            # Never pass on an answer we could not read: it would skip hardening.
            log.error("request %s: cannot read the upstream answer: %s", trace.request_id, exc)
            trace.decision = "upstream_error"
            return error(502, "the model's answer could not be read")
        trace.outputs = outputs.astype(np.float64) if outputs.ndim == 2 else None
        mode = mode_for(cfg.policy_for(tier))
        if level in ("degrade", "throttle"):
            mode = stricter(mode)
            trace.decision = "degraded"
        trace.extra["output"] = mode.kind
        return json_response(200, encode_answer(wire, harden(outputs, mode), classes, answer), quota.headers())

    def _observe(self, trace: _Trace, status: int) -> None:
        # A refused request's rows cost nothing more: they are neither kept in the queue nor sketched.
        inputs = _NO_ROWS if trace.decision in REFUSED else trace.inputs
        event = QueryEvent(trace.principal, trace.tier, trace.started, trace.client_ip, inputs, trace.outputs,
                           trace.decision, status, trace.request_id, trace.extra)
        try:
            taken = self.queue.submit(event, trace.reserved)
        except Exception as exc:  # an event monitoring cannot take is a monitoring error on its principal
            self._on_result(trace.principal, None, exc)
            taken = False
        if not taken and trace.decision not in REFUSED and not trace.extra.get("unmonitored"):
            # Only when monitoring stopped while the request was in flight: its principal is refused next.
            log.warning("request %s was answered but not monitored: monitoring stopped", trace.request_id)
            self._on_result(trace.principal, None, RuntimeError("answered while monitoring stopped"))

    def _on_result(self, principal: str, level: Optional[Level], error: Optional[Exception]) -> None:
        """Monitoring's report on one event (runs in a monitoring thread)."""
        mon = self._state.config.monitoring
        self.verdicts.record(principal, level, error, deny=mon.on_error == "deny", block_seconds=mon.error_block_seconds)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until monitoring has seen every request handled so far (for tests and shutdown)."""
        return await asyncio.to_thread(self.queue.drain, timeout)

    async def aclose(self) -> None:
        """Close monitoring first (so its log is flushed), then the upstream pool and the limiter."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.to_thread(self.queue.close)
            if self.monitor is not None:
                self.monitor.close()
        finally:
            await self._client.aclose()
            for pool in self._pools.values():
                await pool.aclose()
            self._limits.close()
