"""Helpers for the guard's tests: a real Redis, the guard under a real uvicorn, keys, tokens, a fake
monitor, and an upstream serving a small scikit-learn model (tests/servers.py, which also runs the guard)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from privaudit.guard.config import GuardConfig, parse_config
from privaudit.guard.events import Level, QueryEvent, Verdict
from privaudit.guard.identity import add_key
from servers import Recorder, free_port, iris_app, serve
from tests.conftest import require_program

CLASSES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ISSUER, AUDIENCE, KID = "https://issuer.test", "privaudit-guard", "test-key-1"


def serve_guard(app: Any, *, startup_timeout: float = 10.0) -> AbstractContextManager[str]:
    """The guard under uvicorn as the CLI runs it (tests/servers.serve): proxy headers off, lifespan on
    (shutdown closes the monitor and the limiter's connections)."""
    return serve(app, lifespan="on", health="/healthz", startup_timeout=startup_timeout)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Drive an ASGI app's lifespan (startup, then shutdown on exit) as a server would."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


class RedisServer:
    """A throwaway redis-server on a free loopback port, nothing persisted."""

    def __init__(self) -> None:
        server = require_program("redis-server", package="redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


@dataclass
class FakeMonitor:
    """Records every event; answers each principal with the level the test set for it."""

    events: list[QueryEvent] = field(default_factory=list)
    levels: dict[str, Level] = field(default_factory=dict)
    closed: bool = False

    def observe(self, event: QueryEvent) -> Verdict:
        self.events.append(event)
        return Verdict(level=self.levels.get(event.principal, "log"))

    def close(self) -> None:
        self.closed = True

    def decisions(self) -> list[str]:
        return [e.decision for e in self.events]


def make_keys(path: Path, tiers: dict[str, str]) -> dict[str, str]:
    """One API key per id -> tier; returns id -> the full X-API-Key value."""
    return {key_id: f"{key_id}.{add_key(path, key_id, tier)}" for key_id, tier in tiers.items()}


@dataclass(frozen=True)
class Signer:
    """An RSA key pair: the public half in a JWKS file, the private half to sign test tokens."""

    private: rsa.RSAPrivateKey
    jwks_file: Path

    @classmethod
    def create(cls, folder: Path) -> Signer:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
        jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
        path = folder / "jwks.json"
        path.write_text(json.dumps({"keys": [jwk]}))
        return cls(private, path)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"sub": "carol", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "tier": "pro", **overrides}

    def token(self, **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), self.private, algorithm="RS256", headers={"kid": KID})

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token built by hand, as an attacker would: PyJWT itself refuses to make these."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = "" if key is None else _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())
    return f"{signing_input}.{sig}"


def guard_config(folder: Path, upstream: str | None, **sections: Any) -> GuardConfig:
    """A valid configuration with API keys (folder/keys.yaml) and the given sections on top."""
    data: dict[str, Any] = {
        "upstream": upstream,
        "protocol": {"type": "auto", "classes": CLASSES},
        "identity": {"api_keys": {"file": "keys.yaml"}},
        "limits": {"default": "1000/minute"},
    }
    data.update(sections)
    if upstream is None:
        data.pop("upstream")
    return parse_config(data, "guard.yaml", folder)


_IRIS = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]  # one flower of each class


def rows(n: int = 1) -> list[list[float]]:
    return [_IRIS[i % 3] for i in range(n)]


def post(client: httpx.Client | httpx.AsyncClient, key: str | None, n: int = 1, path: str = "/v1/models/iris:predict",
         **headers: str) -> Any:
    hdrs = {**({"X-API-Key": key} if key else {}), **{k.replace("_", "-"): v for k, v in headers.items()}}
    return client.post(path, json={"instances": rows(n)}, headers=hdrs)


@pytest.fixture(scope="module")
def model() -> Any:
    """The upstream's model: a logistic regression on iris (import the fixture into a test module)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=2000).fit(X, y)


@pytest.fixture(scope="module")
def upstream(model: Any) -> Iterator[str]:
    """A KServe-style server for ``model`` on 127.0.0.1, for the module's tests."""
    with serve(iris_app(model, FEATURES, CLASSES, Recorder())) as base:
        yield base


class ScriptedMonitor:
    """A monitor for the monitoring process (``monitor_settings(factory="guard_fixtures:scripted_monitor")``):
    principals whose id names "mallory" are blocked, monitoring fails on those naming "bob"."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        self.errors = Counter("privaudit_guard_monitor_errors", "Events the monitor could not process", registry=registry)
        self.seen = Counter("privaudit_guard_queries", "Rows seen", registry=registry)

    def observe(self, event: QueryEvent) -> Verdict:
        self.seen.inc(len(event.inputs))
        if "bob" in event.principal:
            self.errors.inc()
            raise RuntimeError("boom")
        return Verdict(level="block" if "mallory" in event.principal else "log")

    def close(self) -> None:
        pass


def scripted_monitor(**settings: Any) -> ScriptedMonitor:
    return ScriptedMonitor(settings["metrics_registry"])
