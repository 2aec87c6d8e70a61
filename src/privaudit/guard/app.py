"""The two ways to run the guard: a reverse proxy (``build_app``) or ASGI middleware
(``GuardMiddleware``). The request logic itself is privaudit.guard.proxy.Guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Optional

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from privaudit.guard.config import GuardConfig
from privaudit.guard.proxy import Guard, error, json_response
from privaudit.guard.worker import Monitor

__all__ = ["Guard", "GuardMiddleware", "ProxyApp", "build_app"]
_MIDDLEWARE_UPSTREAM = "http://guarded-app"  # any host: the ASGI transport never resolves it


def build_app(config: GuardConfig, *, monitor: Optional[Monitor] = None, upstream_transport: Optional[httpx.AsyncBaseTransport] = None,
              registry: Optional[CollectorRegistry] = None) -> ProxyApp:
    """The reverse proxy: a POST to an inference route goes to ``upstream`` + the same path; GET
    /healthz is answered here (503 once monitoring has stopped, so a supervisor restarts the guard),
    and ``metrics.path`` too when ``metrics.listen: proxy`` (to authenticated principals only;
    otherwise metrics have a listener of their own, see ``serve_metrics``). Everything else is 404.
    The Guard is ``app.state.guard`` (for reload())."""
    guard = Guard(config, monitor=monitor, upstream_transport=upstream_transport, registry=registry)

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        if path == "/healthz":
            if not guard.monitoring_up:
                return json_response(503, {"status": "monitoring stopped"})
            return json_response(200, {"status": "ok"})
        metrics = guard.config.metrics
        if path == metrics.path and metrics.listen == "proxy":
            if not guard.authenticated(request):
                return error(401, "a valid API key or bearer token is required")
            return Response(generate_latest(guard.registry), media_type=CONTENT_TYPE_LATEST)
        return error(404, "not found")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await guard.aclose()  # runs on SIGTERM/SIGINT once uvicorn has drained in-flight requests

    app = Starlette(routes=[Route("/{path:path}", dispatch, methods=["GET", "HEAD", "POST"])], lifespan=lifespan)
    app.state.guard = guard
    return ProxyApp(guard, app)


class ProxyApp:
    """What build_app returns: POSTs go straight to the guard, everything else (health, metrics,
    lifespan) to a small Starlette app. Starlette's middleware and router cost every request tens of
    microseconds of Python for nothing the proxy uses."""

    def __init__(self, guard: Guard, rest: Starlette) -> None:
        self.guard = guard
        self.rest = rest
        self.state = rest.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await self.guard.serve(scope, receive, send)
            return
        await self.rest(scope, receive, send)


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
        await self.guard.serve(scope, receive, send)
