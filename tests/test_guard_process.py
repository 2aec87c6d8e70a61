"""Monitoring in a process of its own (privaudit.guard.monitor_process): verdicts cross the process
boundary, and a monitoring process that errs, falls behind or dies fails closed."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard_fixtures import guard_config, make_keys, post, model, upstream  # noqa: F401 (fixtures)
from privaudit.errors import ConfigError
from privaudit.guard import proxy
from privaudit.guard.app import build_app
from privaudit.guard.monitor_process import ProcessQueue, monitor_settings

KEY_ENV = "PRIVAUDIT_TEST_LOG_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-log-key-0123456789abcdef")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return make_keys(tmp_path / "keys.yaml", {"alice": "default", "bob": "default", "mallory": "default"})


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitoring process runs guard_fixtures.ScriptedMonitor instead of the detectors."""
    monkeypatch.setattr(proxy, "monitor_settings", functools.partial(monitor_settings, factory="guard_fixtures:scripted_monitor"))


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)), base_url="http://guard")


def sample(app: Any, name: str) -> float | None:
    return app.state.guard.registry.get_sample_value(name)  # type: ignore[no-any-return]


def queue(app: Any) -> ProcessQueue:
    q = app.state.guard.queue
    assert isinstance(q, ProcessQueue) and app.state.guard.monitor is None
    return q


def wait_until_down(app: Any) -> None:
    deadline = time.monotonic() + 30
    while app.state.guard.monitoring_up:
        assert time.monotonic() < deadline, "the guard did not notice that its monitoring process died"
        time.sleep(0.01)


def test_verdicts_and_errors_from_the_monitoring_process_apply_to_the_next_request(
        tmp_path: Path, upstream: str, keys: dict[str, str], scripted: None) -> None:
    app = build_app(guard_config(tmp_path, upstream))
    assert queue(app).process.pid != os.getpid()

    async def scenario() -> list[int]:
        async with client(app) as c:
            first = [(await post(c, keys[who])).status_code for who in ("alice", "mallory", "bob")]
            assert await app.state.guard.drain()
            then = [(await post(c, keys[who])).status_code for who in ("alice", "mallory", "bob")]
            assert await app.state.guard.drain()
            await app.state.guard.aclose()
            return first + then

    assert asyncio.run(scenario()) == [200, 200, 200, 200, 429, 429]  # block verdict; monitoring error: refused
    assert sample(app, "privaudit_guard_monitor_errors_total") == 2  # the child's metrics, in the guard's registry
    assert sample(app, "privaudit_guard_monitor_refusals_total") == 1
    assert sample(app, "privaudit_guard_queries_total") == 4  # rows of answered requests only


def test_the_real_monitor_runs_in_the_child_and_writes_the_query_log(tmp_path: Path, upstream: str,
                                                                      keys: dict[str, str]) -> None:
    log = tmp_path / "q.jsonl"
    app = build_app(guard_config(tmp_path, upstream, detectors={"prada": {}, "fingerprint": {}},
                                 log={"path": str(log), "key_env": KEY_ENV}))

    async def scenario() -> list[int]:
        async with client(app) as c:
            codes = [(await post(c, keys["alice"], 2)).status_code for _ in range(3)]
            assert await app.state.guard.drain()
            await app.state.guard.aclose()  # the child flushes its log before it exits
            return codes

    assert asyncio.run(scenario()) == [200] * 3
    assert len(log.read_text().splitlines()) == 3
    assert sample(app, "privaudit_guard_queries_total") == 6
    assert queue(app).process.returncode == 0


@pytest.mark.parametrize(("on_error", "expected"), [("deny", 503), ("allow", 200)])
def test_a_killed_monitoring_process_is_noticed_and_fails_closed_by_default(
        tmp_path: Path, upstream: str, keys: dict[str, str], on_error: str, expected: int) -> None:
    app = build_app(guard_config(tmp_path, upstream, monitoring={"on_error": on_error}))

    async def scenario() -> list[int]:
        async with client(app) as c:
            codes = [(await post(c, keys["alice"])).status_code]
            assert (await c.get("/healthz")).status_code == 200
            assert await app.state.guard.drain()  # nothing in flight: an event lost in the crash refuses with 429
            os.kill(queue(app).process.pid, signal.SIGKILL)
            await asyncio.to_thread(wait_until_down, app)
            codes += [(await post(c, keys["alice"])).status_code for _ in range(2)]
            codes.append((await c.get("/healthz")).status_code)
            await app.state.guard.aclose()
            return codes

    assert asyncio.run(scenario()) == [200, expected, expected, 503]
    assert sample(app, "privaudit_guard_monitor_up") == 0
    if on_error == "deny":
        assert sample(app, "privaudit_guard_monitor_refusals_total") == 2
        assert sample(app, "privaudit_guard_unmonitored_total") == 0
    else:
        assert sample(app, "privaudit_guard_unmonitored_total") == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP")
def test_a_full_queue_refuses_until_monitoring_catches_up(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    app = build_app(guard_config(tmp_path, upstream, monitoring={"queue_events": 2}))
    pid = queue(app).process.pid

    async def scenario() -> list[int]:
        async with client(app) as c:
            os.kill(pid, signal.SIGSTOP)  # monitoring stops answering; the guard must not outrun it
            try:
                codes = [(await post(c, keys["alice"])).status_code for _ in range(4)]
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await app.state.guard.drain()
            codes.append((await post(c, keys["alice"])).status_code)
            await app.state.guard.aclose()
            return codes

    assert asyncio.run(scenario()) == [200, 200, 503, 503, 200]
    assert sample(app, "privaudit_guard_monitor_refusals_total") == 2


def test_a_monitor_that_cannot_start_is_one_config_error(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^detectors\.nope: unknown detector"):
        build_app(guard_config(tmp_path, upstream, detectors={"nope": {}}))


def test_without_the_monitoring_code_the_guard_refuses_to_start_unless_told_to_allow(
        tmp_path: Path, upstream: str, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "privaudit.guard.monitoring", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="monitoring cannot be loaded.*on_error: allow"):
        build_app(guard_config(tmp_path, upstream))
    app = build_app(guard_config(tmp_path, upstream, monitoring={"on_error": "allow"}))

    async def scenario() -> int:
        async with client(app) as c:
            code = (await post(c, keys["alice"])).status_code
            await app.state.guard.aclose()
            return code

    assert asyncio.run(scenario()) == 200
