"""Real HTTP servers for tests: uvicorn in a background thread on a free 127.0.0.1 port.

``serve(app)`` is a context manager yielding the base URL; it waits until the server answers and
shuts it down cleanly on exit (joined thread, closed socket) so warnings-as-errors stays quiet. The
guard's tests run the guard through it too (``guard_fixtures.serve_guard``: lifespan on).
``iris_app()`` builds a Starlette app serving one fitted scikit-learn model in many API dialects.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, *, lifespan: str = "off", health: str = "/health", startup_timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` on a fresh port and yield ``http://127.0.0.1:PORT`` once ``GET health`` answers.

    As ``privaudit guard`` runs uvicorn: proxy headers off (an app decides itself whom to believe
    about client addresses), and with ``lifespan="on"`` shutdown runs the app's cleanup."""
    # Bind the socket ourselves: the port is known before uvicorn starts and cannot be taken meanwhile.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan, ws="none", http="h11",
                            proxy_headers=False, backlog=256)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test server on port {port} did not start")
            time.sleep(0.01)
        with httpx.Client() as client:  # started means listening; prove it answers too
            client.get(base + health).raise_for_status()
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Recorder:
    """What the server saw, per route: the size of every batch, and the peak number in flight."""

    batches: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0
    peak_in_flight: int = 0

    def reset(self) -> None:
        self.batches.clear()
        self.calls.clear()
        self.in_flight = self.peak_in_flight = 0

    def rows(self, route: str) -> int:
        return sum(self.batches[route])


def iris_app(model: Any, feature_names: list[str], class_names: list[str], rec: Recorder) -> Starlette:
    """One model behind every dialect the HTTP adapter speaks, plus failure modes."""

    def proba(rows: list[Any]) -> np.ndarray:
        if rows and isinstance(rows[0], dict):
            rows = [[r[name] for name in feature_names] for r in rows]
        return np.asarray(model.predict_proba(np.asarray(rows, dtype=np.float64)))

    async def body_rows(request: Request, route: str) -> list[Any]:
        rows = (await request.json())["instances"]
        rec.batches[route].append(len(rows))
        return rows

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def kserve_v1(request: Request) -> Response:
        return JSONResponse({"predictions": proba(await body_rows(request, "v1")).tolist()})

    async def v2(request: Request) -> Response:
        (inp,) = (await request.json())["inputs"]
        assert inp["datatype"] == "FP64" and inp["name"] == "input-0"
        X = np.asarray(inp["data"], dtype=np.float64).reshape(inp["shape"])
        rec.batches["v2"].append(len(X))
        p = proba(X.tolist())
        labels = {"name": "label", "shape": [len(X), 1], "datatype": "INT64", "data": p.argmax(1).tolist()}
        scores = {"name": "probabilities", "shape": list(p.shape), "datatype": "FP64", "data": p.ravel().tolist()}
        return JSONResponse({"model_name": "iris", "outputs": [labels, scores]})

    async def custom(request: Request) -> Response:
        rows = (await request.json())["data"]["rows"]
        rec.batches["custom"].append(len(rows))
        return JSONResponse({"result": {"scores": proba(rows).tolist()}, "model": "iris"})

    async def top2(request: Request) -> Response:
        p = proba(await body_rows(request, "top2"))
        best = np.argsort(-p, axis=1)[:, :2]
        return JSONResponse({"predictions": [{class_names[j]: float(p[i, j]) for j in best[i]} for i in range(len(p))]})

    async def labels(request: Request) -> Response:
        p = proba(await body_rows(request, "labels"))
        return JSONResponse({"predictions": [class_names[j] for j in p.argmax(1)]})

    async def shuffled(request: Request) -> Response:
        # Later batches tend to finish first, so the client must put answers back in order itself.
        rows = await body_rows(request, "shuffled")
        rec.in_flight += 1
        rec.peak_in_flight = max(rec.peak_in_flight, rec.in_flight)
        try:
            await asyncio.sleep(0.06 / (1 + len(rec.batches["shuffled"]) % 4))
        finally:
            rec.in_flight -= 1
        return JSONResponse({"predictions": proba(rows).tolist()})

    async def flaky(request: Request) -> Response:
        rec.calls["flaky"] += 1
        if rec.calls["flaky"] <= 2:
            return PlainTextResponse("warming up", status_code=503)
        return JSONResponse({"predictions": proba(await body_rows(request, "flaky")).tolist()})

    async def throttled(request: Request) -> Response:
        rec.calls["throttled"] += 1
        if rec.calls["throttled"] == 1:
            return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "0.3"})
        return JSONResponse({"predictions": proba(await body_rows(request, "throttled")).tolist()})

    async def auth(request: Request) -> Response:
        rec.calls["auth"] += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "missing or wrong token"}, status_code=401)
        return JSONResponse({"predictions": proba(await body_rows(request, "auth")).tolist()})

    async def api_key(request: Request) -> Response:
        if request.headers.get("x-api-key") != TOKEN:
            return JSONResponse({"error": "bad key"}, status_code=403)
        return JSONResponse({"predictions": proba(await body_rows(request, "api_key")).tolist()})

    async def bad(request: Request) -> Response:
        rec.calls["bad"] += 1
        return JSONResponse({"error": "expected 5 features\nper row"}, status_code=400)

    async def down(request: Request) -> Response:
        rec.calls["down"] += 1
        return PlainTextResponse("overloaded", status_code=503)

    routes = [
        Route("/health", health),
        Route("/v1/models/iris:predict", kserve_v1, methods=["POST"]),
        Route("/v2/models/iris/infer", v2, methods=["POST"]),
        Route("/api/score", custom, methods=["POST"]),
        Route("/top2:predict", top2, methods=["POST"]),
        Route("/labels:predict", labels, methods=["POST"]),
        Route("/shuffled:predict", shuffled, methods=["POST"]),
        Route("/flaky:predict", flaky, methods=["POST"]),
        Route("/throttled:predict", throttled, methods=["POST"]),
        Route("/auth:predict", auth, methods=["POST"]),
        Route("/apikey:predict", api_key, methods=["POST"]),
        Route("/bad:predict", bad, methods=["POST"]),
        Route("/down:predict", down, methods=["POST"]),
    ]
    return Starlette(routes=routes)
