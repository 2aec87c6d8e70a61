"""The adversarial review of the guard, as tests: one or more per finding (issue 12).

1. memory without bound (projections per width, monitoring work on refused requests);
2. one row of huge values switching monitoring off; monitoring errors answered as passes;
3. burner keys hiding a prober from the near-duplicate detector;
4. cold start: scale-learning detectors blind to a prober who arrives first;
5. secrets in logs; 6. /metrics readable by a prober; 7. any POST path forwarded;
8. deep JSON, huge numbers, slow clients, unguarded methods; 9. a tampered analysis cache.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

import traffic as T
from guard_fixtures import FakeMonitor, free_port, guard_config, make_keys, post, rows, model, upstream  # noqa: F401 (fixtures)
from privaudit.guard.app import build_app
from privaudit.guard.monitoring import Monitor, build_monitor
from privaudit.guard.querylog import PROJECTION_CACHE_BYTES, Featurizer
from privaudit.guard.server import RedactingFilter, http_protocol, serve_metrics

KEY_ENV = "PRIVAUDIT_TEST_LOG_KEY"
ALL = {"prada": {}, "fingerprint": {}, "knn": {}, "manifold": {}, "rotation": {}, "boundary": {}, "volume": {}}
LEVELS = ["log", "degrade", "throttle", "block"]
SECRET = "s3cretpw9"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "test-log-key-0123456789abcdef")


@pytest.fixture(scope="module")
def target() -> T.Target:
    return T.Target(0)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return make_keys(tmp_path / "keys.yaml", {"alice": "default", "bob": "default", "mallory": "default"})


@asynccontextmanager
async def guarded(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 50000)),
                                     base_url="http://guard") as c:
            yield c
    finally:
        await app.state.guard.aclose()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def first_flag(mon: Monitor, target: T.Target, requests: list[T.Request], principal: str) -> int | None:
    """The principal's query count when its level first left "log" (None: never)."""
    for ev in T.events(target, requests):
        verdict = mon.observe(ev)
        if ev.principal == principal and verdict.level != "log":
            return mon.standings.peek(principal).queries  # type: ignore[union-attr]
    return None


# --- 1. memory --------------------------------------------------------------------------------------------

def test_rows_of_ever_new_widths_keep_projection_memory_bounded() -> None:
    fz = Featurizer(b"k" * 32)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for width in range(20_000, 20_030):  # 30 widths: 150 MB of projections if every one were kept
            fz.sketches(np.ones((1, width)))
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert fz.cached_bytes <= PROJECTION_CACHE_BYTES
    assert kept < 2 * PROJECTION_CACHE_BYTES
    # The same width still sketches the same way after its pieces were evicted (logs stay comparable).
    x = np.random.default_rng(0).normal(size=(2, 20_000))
    first = fz.sketches(x)
    for width in range(30_000, 30_020):
        fz.sketches(np.ones((1, width)))
    assert np.array_equal(first, fz.sketches(x))


def test_requests_refused_with_429_cost_no_monitoring_work(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    cfg = guard_config(tmp_path, upstream, limits={"default": "6/minute"}, detectors=ALL,
                       log={"path": str(tmp_path / "q.jsonl"), "key_env": KEY_ENV})
    # The monitor in this process (a worker thread), so the test can look inside it.
    mon = build_monitor(cfg.log, cfg.detector_settings(), cfg.response, cfg.allow, cfg.alerts)
    app = build_app(cfg, monitor=mon)

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            codes = [(await post(c, keys["alice"], 2)).status_code for _ in range(3)]
            hdr = {"X-API-Key": keys["alice"]}
            for width in range(5000, 5012):  # refused by quota: never sketched, never kept
                body = {"instances": [[1.0] * width]}
                codes.append((await c.post("/v1/models/iris:predict", json=body, headers=hdr)).status_code)
            return codes

    codes = asyncio.run(scenario())
    assert codes == [200] * 3 + [429] * 12
    assert all(w < 5000 for w, _ in mon.featurizer._projections)  # no projection for the refused widths
    recs = records(tmp_path / "q.jsonl")
    assert len(recs) == 15 and [r["decision"] for r in recs[3:]] == ["limited"] * 12
    assert all(r["rows"] == [] and r["n_rows"] == 0 for r in recs[3:])
    assert mon.metrics.queries._value.get() == 6  # only the answered rows reached the detectors


# --- 2. poisoned rows and monitoring errors -----------------------------------------------------------------

def _probes(n: int) -> list[list[float]]:
    base = np.array(rows(1)[0])
    noise = np.random.default_rng(3).normal(0, 0.01, size=(n, 4))
    return (base + noise).round(4).tolist()


def test_a_row_of_huge_values_is_refused_before_forwarding_and_probing_is_still_blocked(
        tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    cfg = guard_config(tmp_path, upstream, detectors={"fingerprint": {"quantum": 0.5}}, response=["log", "block"],
                       log={"path": str(tmp_path / "q.jsonl"), "key_env": KEY_ENV})
    app = build_app(cfg)

    async def scenario() -> tuple[list[int], list[int]]:
        async with guarded(app) as c:
            poisoned = []
            for probe in _probes(40):  # the review's attack: one row of 1.7e308 in every request
                body = {"instances": [probe, [1.7e308] * 4]}
                poisoned.append((await c.post("/v1/models/iris:predict", json=body,
                                              headers={"X-API-Key": keys["mallory"]})).status_code)
            plain = []
            for probe in _probes(40):
                plain.append((await c.post("/v1/models/iris:predict", json={"instances": [probe]},
                                           headers={"X-API-Key": keys["alice"]})).status_code)
                await app.state.guard.drain()
            return poisoned, plain

    poisoned, plain = asyncio.run(scenario())
    assert poisoned == [400] * 40  # never answered, so never unmonitored
    assert 429 in plain and plain.index(429) <= 10
    recs = [r for r in records(tmp_path / "q.jsonl") if r["principal"] == "key:mallory"]
    assert len(recs) == 40 and {r["decision"] for r in recs} == {"bad_request"}


@pytest.mark.parametrize(("on_error", "expected"), [("deny", 429), ("allow", 200)])
def test_a_monitoring_error_refuses_the_principal_and_is_counted(tmp_path: Path, upstream: str, keys: dict[str, str],
                                                                 on_error: str, expected: int) -> None:
    cfg = guard_config(tmp_path, upstream, detectors={"prada": {}}, monitoring={"on_error": on_error})
    # In this process, so the test can break it (test_guard_process covers errors in the monitoring process).
    mon = build_monitor(cfg.log, cfg.detector_settings(), cfg.response, cfg.allow, cfg.alerts)
    app = build_app(cfg, monitor=mon)

    def broken(event: Any) -> Any:
        raise RuntimeError("boom")

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            mon.featurizer.features = broken  # every event now fails in monitoring
            first = (await post(c, keys["alice"])).status_code
            await app.state.guard.drain()
            return [first, (await post(c, keys["alice"])).status_code]

    assert asyncio.run(scenario()) == [200, expected]
    assert mon.metrics.errors._value.get() >= 1


# --- 3. burner keys ------------------------------------------------------------------------------------------

def _warm(target: T.Target) -> list[T.Request]:
    return T.benign_sessions(target, np.random.default_rng(5), principals=12, min_queries=25, max_queries=40, span=600)


def test_a_burner_key_sending_each_probe_first_does_not_hide_the_main_key(target: T.Target) -> None:
    mon = build_monitor({"key_env": KEY_ENV}, {"fingerprint": {}}, LEVELS, [], {"log": False})
    attack = T.label_only_mi(target, np.random.default_rng(6), principal="main", start=T.T0 + 2000)
    at = first_flag(mon, target, T.merge(_warm(target), T.with_burner(attack)), "main")
    assert at is not None and at <= 200


def test_keys_sharing_rows_flag_the_burner_too(target: T.Target) -> None:
    mon = build_monitor({"key_env": KEY_ENV}, {"rotation": {}}, LEVELS, [], {"log": False})
    attack = T.label_only_mi(target, np.random.default_rng(6), principal="main", start=T.T0 + 2000)
    at = first_flag(mon, target, T.merge(_warm(target), T.with_burner(attack)), "burner")
    assert at is not None and at <= 200
    assert mon.standings.peek("user-000").max_step == 0  # type: ignore[union-attr]


# --- 4. cold start -------------------------------------------------------------------------------------------

def _calibration_csv(target: T.Target, path: Path, label: bool = False) -> Path:
    X = target.natural(400, np.random.default_rng(8))
    head = [f"px{i}" for i in range(X.shape[1])] + (["digit"] if label else [])
    lines = [",".join(head)] + [",".join(f"{v:g}" for v in r) + (",3" if label else "") for r in X]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_prober_arriving_first_is_flagged_with_calibration_data(target: T.Target, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    csv = _calibration_csv(target, tmp_path / "ordinary.csv", label=True)
    with caplog.at_level(logging.WARNING, logger="privaudit.guard.monitoring"):
        blind = build_monitor({"key_env": KEY_ENV}, ALL, LEVELS, [], {"log": False}, learn=True)
    assert "fingerprint, knn, manifold" in caplog.text  # the start-up warning names the blind detectors
    assert first_flag(blind, target, T.coordinate_probe(target), "atk-coordinate") is None
    caplog.clear()
    detectors = {**ALL, "calibration_data": str(csv), "calibration_label": "digit"}
    with caplog.at_level(logging.WARNING, logger="privaudit.guard.monitoring"):
        mon = build_monitor({"key_env": KEY_ENV}, detectors, LEVELS, [], {"log": False}, learn=True)
    assert "score nothing" not in caplog.text
    at = first_flag(mon, target, T.coordinate_probe(target), "atk-coordinate")
    assert at is not None and at <= 200


def test_learned_state_survives_a_restart_and_a_forged_state_is_ignored(target: T.Target, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    log = {"key_env": KEY_ENV, "path": str(tmp_path / "q.jsonl")}
    first = build_monitor(log, ALL, LEVELS, [], {"log": False}, learn=True)
    for ev in T.events(target, _warm(target)):  # learns from ordinary principals, then shuts down
        first.observe(ev)
    first.close()
    state = tmp_path / "q.state.json"
    assert state.is_file() and (state.stat().st_mode & 0o777) == 0o600
    again = build_monitor(log, ALL, LEVELS, [], {"log": False}, learn=True)
    at = first_flag(again, target, T.coordinate_probe(target), "atk-coordinate")
    again.close()
    assert at is not None and at <= 200
    doc = json.loads(state.read_text())
    doc["body"] = doc["body"].replace('"spread": ', '"spread": 1000')  # an attacker widening the grid
    state.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="privaudit.guard.monitoring"):
        forged = build_monitor(log, ALL, LEVELS, [], {"log": False}, learn=True)
    assert "ignoring the detectors' saved state" in caplog.text
    assert forged.detectors["fingerprint"].blind  # type: ignore[attr-defined]
    forged.close()


def test_observe_only_guard_alerts_on_detector_alarms(target: T.Target, caplog: pytest.LogCaptureFixture) -> None:
    mon = build_monitor({"key_env": KEY_ENV}, {"fingerprint": {}}, ["log"], [], {"min_level": "log"})
    with caplog.at_level(logging.WARNING, logger="privaudit.guard.alerts"):
        for ev in T.events(target, T.merge(_warm(target), T.label_only_mi(target, np.random.default_rng(6),
                                                                           principal="main", start=T.T0 + 2000))):
            assert mon.observe(ev).level == "log"  # observe-only: nobody is restricted...
    alerts = [json.loads(r.getMessage()) for r in caplog.records if r.name == "privaudit.guard.alerts"]
    assert [a["principal"] for a in alerts] == ["main"]  # ... but the prober is reported, once
    assert alerts[0]["detectors"] == ["fingerprint"]


# --- 5. secrets --------------------------------------------------------------------------------------------

def test_no_secret_reaches_the_log(tmp_path: Path, upstream: str, keys: dict[str, str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    with_pw = upstream.replace("http://", f"http://user:{SECRET}@")
    down = f"http://user:{SECRET}@127.0.0.1:{free_port()}"
    bare = "bare" + SECRET + "0123456789"

    async def scenario(app: Any, key: str) -> int:
        async with guarded(app) as c:
            return (await post(c, key)).status_code

    with caplog.at_level(logging.DEBUG):
        codes = [asyncio.run(scenario(build_app(guard_config(tmp_path, with_pw), monitor=FakeMonitor()), keys["alice"])),
                 asyncio.run(scenario(build_app(guard_config(tmp_path, down), monitor=FakeMonitor()), keys["alice"])),
                 asyncio.run(scenario(build_app(guard_config(tmp_path, with_pw), monitor=FakeMonitor()), bare)),
                 asyncio.run(scenario(build_app(guard_config(
                     tmp_path, with_pw, limits={"default": "10/minute", "storage": f"redis://:{SECRET}@127.0.0.1:{free_port()}"}),
                     monitor=FakeMonitor()), keys["alice"]))]
    assert codes == [200, 502, 401, 429]
    assert "upstream" in caplog.text and "storage" in caplog.text  # the failures were logged...
    assert SECRET not in caplog.text  # ... without a password or a bare API secret
    assert "HTTP Request" not in caplog.text  # the HTTP client's per-request INFO line is off


def test_the_log_filter_redacts_url_credentials() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cannot reach %s", (f"redis://admin:{SECRET}@cache:6379/0",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "cannot reach redis://***@cache:6379/0"


# --- 6. metrics ------------------------------------------------------------------------------------------------

def test_metrics_are_not_on_the_proxy_port_but_on_their_own_listener(tmp_path: Path, upstream: str,
                                                                     keys: dict[str, str]) -> None:
    app = build_app(guard_config(tmp_path, upstream))

    async def scenario() -> list[httpx.Response]:
        async with guarded(app) as c:
            await post(c, keys["alice"])
            return [await c.get("/metrics"), await c.get("/metrics", headers={"X-API-Key": keys["alice"]})]

    assert [r.status_code for r in asyncio.run(scenario())] == [404, 404]
    port = free_port()
    server = serve_metrics(app.state.guard.registry, ("127.0.0.1", port))
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.shutdown()
        server.server_close()
    assert 'privaudit_guard_requests_total{decision="allowed"} 1.0' in text


# --- 7. routes -------------------------------------------------------------------------------------------------

def test_only_inference_routes_are_forwarded(tmp_path: Path, keys: dict[str, str]) -> None:
    seen: list[str] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"predictions": [[0.2, 0.3, 0.5]]})

    def app_for(**extra: Any) -> Any:
        return build_app(guard_config(tmp_path, "http://model", **extra), monitor=FakeMonitor(),
                         upstream_transport=httpx.MockTransport(upstream))

    async def scenario(app: Any, paths: list[str]) -> list[int]:
        async with guarded(app) as c:
            return [(await post(c, keys["alice"], path=p)).status_code for p in paths]

    paths = ["/admin/reload", "/v1/models/iris:reload", "/v1/models/iris:predict", "/v2/models/iris/infer",
             "/v1/models/a/b:predict", "/v1/models/../admin:predict"]
    assert asyncio.run(scenario(app_for(), paths)) == [404, 404, 200, 400, 404, 404]  # v2 body is not a v1 one
    assert seen == ["/v1/models/iris:predict"]
    seen.clear()
    assert asyncio.run(scenario(app_for(routes=["/score/{model}"]), ["/score/iris", "/v1/models/iris:predict"])) == [200, 404]
    assert seen == ["/score/iris"]


# --- 8. malformed bodies, slow clients -------------------------------------------------------------------------

def test_deep_json_and_oversized_numbers_get_400_and_a_log_record(tmp_path: Path, upstream: str,
                                                                  keys: dict[str, str]) -> None:
    cfg = guard_config(tmp_path, upstream, detectors={"prada": {}}, log={"path": str(tmp_path / "q.jsonl"), "key_env": KEY_ENV})
    app = build_app(cfg)
    bodies = [b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}",
              b'{"instances": [[' + b"1" + b"0" * 400 + b", 1, 1, 1]]}",
              b'{"instances": [[1e999, 1, 1, 1]]}',
              b'{"instances": [[1.7e308, 1.7e308, 1.7e308, 1.7e308]]}']

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            hdr = {"X-API-Key": keys["alice"], "Content-Type": "application/json"}
            return [(await c.post("/v1/models/iris:predict", content=b, headers=hdr)).status_code for b in bodies]

    assert asyncio.run(scenario()) == [400] * 4
    recs = records(tmp_path / "q.jsonl")
    assert [r["decision"] for r in recs] == ["bad_request"] * 4 and all(r["status"] == 400 for r in recs)


@contextmanager
def _uvicorn(app: Any, header_seconds: float) -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none",
                                           http=http_protocol(header_seconds)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _held_open(port: int, payload: bytes, wait: float) -> bool:
    """Whether the server still holds a connection that sent only ``payload``, ``wait`` seconds on."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(payload)
        s.settimeout(wait)
        try:
            return s.recv(1024) != b""
        except socket.timeout:
            return True


def test_slow_clients_are_cut_off(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    cfg = guard_config(tmp_path, upstream, client_timeouts={"header_seconds": 0.3, "body_seconds": 0.3})
    app = build_app(cfg, monitor=FakeMonitor())
    with _uvicorn(app, cfg.client_timeouts.header_seconds) as port:
        assert not _held_open(port, b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\n", wait=2.0)
        head = (f"POST /v1/models/iris:predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {keys['alice']}\r\n"
                "Content-Length: 100\r\n\r\n{\"inst").encode()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head)
            s.settimeout(3.0)
            assert s.recv(1024).startswith(b"HTTP/1.1 408")


# --- 9. the analysis cache ---------------------------------------------------------------------------------------

def test_a_tampered_cache_entry_is_recomputed_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from privaudit.audit.analysis_cache import AnalysisCache
    from privaudit.attacks.membership import AttackResult
    from privaudit.audit.reference import ScoreCache
    from privaudit.report.schema import AttackReport

    report = AttackReport(name="rmia", auc=0.9, tpr_at_fpr={}, tpr_at_fpr_detail={}, advantage=0.5, ppv=None,
                          epsilon_lower_bound=1.0, epsilon_max_measurable=4.0, reference_models=2, queries=3, seconds=1.0)
    result = AttackResult("rmia", np.array([0.9, 0.1, 0.8]), queries=3, reference_models=2, seconds=1.0, params={})
    AnalysisCache(tmp_path, "k1").store_attack(result, report)
    loaded = AnalysisCache(tmp_path, "k1").load_attack("rmia")
    assert loaded is not None and loaded[0].scores.tolist() == [0.9, 0.1, 0.8]
    assert ((tmp_path / "cache.key").stat().st_mode & 0o777) == 0o600
    scores = tmp_path / "analysis-k1" / "rmia.npy"
    scores.write_bytes(scores.read_bytes()[:-8] + np.float64(0.0).tobytes())  # the last score edited by hand
    with caplog.at_level(logging.WARNING, logger="privaudit.cache"):
        assert AnalysisCache(tmp_path, "k1").load_attack("rmia") is None  # recomputed, never trusted
    assert "does not carry a valid signature" in caplog.text
    refs = ScoreCache(tmp_path)
    refs.put("abc", np.array([[0.1, 0.9]]))
    assert refs.get("abc") is not None
    (tmp_path / "abc.npy").write_bytes((tmp_path / "abc.npy").read_bytes()[:-8] + np.float64(0.0).tobytes())
    assert refs.get("abc") is None


def test_bad_calibration_data_is_one_line_naming_the_key(tmp_path: Path) -> None:
    from privaudit.errors import ConfigError

    (tmp_path / "words.csv").write_text("a,b\nx,1\n")
    for path, needle in ((tmp_path / "missing.csv", "no such file"), (tmp_path / "words.csv", "column 'a' is not numeric")):
        with pytest.raises(ConfigError, match=f"detectors.calibration_data: .*{needle}"):
            build_monitor({"key_env": KEY_ENV}, {"knn": {}, "calibration_data": str(path)}, LEVELS, [], {"log": False},
                          learn=True)


def test_the_upstream_pool_reads_chunked_answers_and_survives_a_server_closing_idle_connections() -> None:
    from privaudit.guard.upstream import UpstreamError, UpstreamPool

    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        seen.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # an idle keep-alive connection closed by the server, without saying so
        await writer.wait_closed()

    async def scenario() -> list[Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool(f"http://user:{SECRET}@127.0.0.1:{port}", 4)
        first = await pool.post("/v1/models/m:predict", b'{"instances": [[1]]}', "r1", 5.0)
        await asyncio.sleep(0.2)
        second = await pool.post("/v1/models/m:predict", b"{}", "r2", 5.0)  # the stale connection is retried
        await asyncio.sleep(0.2)
        server.close()
        await server.wait_closed()
        try:
            await pool.post("/x", b"{}", "r3", 5.0)
        except UpstreamError as exc:
            down = str(exc)
        await pool.aclose()
        return [first.json(), second.status_code, down]

    first, second, down = asyncio.run(scenario())
    assert first == {"a": 1} and second == 200 and "cannot connect" in down
    assert len(seen) == 2 and b"X-Request-ID: r2" in seen[1]
    assert b"Authorization: Basic " in seen[0] and SECRET.encode() not in seen[0]  # base64, never in the clear


def test_the_audit_does_not_count_calibration_data_as_a_detector() -> None:
    from privaudit.ci.controls import parse_guard_config

    only = parse_guard_config({"detectors": {"calibration_data": "x.csv"}}, "guard.yaml")
    both = parse_guard_config({"detectors": {"calibration_data": "x.csv", "knn": {}}}, "guard.yaml")
    assert not only.probing_detection and both.detectors == ("knn",)


# --- the review of the change: queue room held before forwarding, odd paths and headers -------------------


def _raw_guard(tmp_path: Path, classes: int, monitoring: dict[str, Any]) -> tuple[Any, Any, bytes]:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from privaudit.guard.app import GuardMiddleware
    from privaudit.guard.config import parse_config
    from privaudit.guard.events import Verdict
    from privaudit.guard.identity import add_key

    class Counting:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def observe(self, event: Any) -> Verdict:
            self.seen.append(event.request_id)
            return Verdict()

        def close(self) -> None:
            pass

    async def model(request: Any) -> Any:  # answers far more bytes than it was sent: many classes
        n = len((await request.json())["instances"])
        return JSONResponse({"predictions": [[1.0 / classes] * classes] * n})

    secret = add_key(tmp_path / "keys.yaml", "alice")
    cfg = parse_config({"identity": {"api_keys": {"file": "keys.yaml"}}, "limits": {"default": "100000/second"},
                        "monitoring": monitoring}, base_dir=tmp_path)
    monitor = Counting()
    app = Starlette(routes=[Route("/v1/models/{name}:predict", model, methods=["POST"])])
    key = secret if secret.startswith("alice.") else f"alice.{secret}"
    return GuardMiddleware(app, cfg, monitor=monitor), monitor, key.encode()


async def _send(mw: Any, headers: list[tuple[bytes, bytes]], path: str = "/v1/models/m:predict",
                body: bytes = b'{"instances":[[1,2]]}') -> tuple[int, list[tuple[bytes, bytes]]]:
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode("utf-8"), "query_string": b"",
             "headers": headers, "client": ("1.2.3.4", 1), "server": ("guard", 80), "scheme": "http",
             "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"}}
    await mw(scope, receive, send)
    return sent[0]["status"], sent[0]["headers"]


def test_concurrent_requests_with_large_answers_are_never_answered_unmonitored(tmp_path: Path) -> None:
    # A 1 KiB queue and a model answering 200 classes: each event is larger than the room checked for
    # its inputs. Twenty requests at once: whatever is answered must reach monitoring (on_error: deny).
    mw, monitor, key = _raw_guard(tmp_path, 200, {"queue_events": 4, "queue_bytes": 1024})

    async def run() -> list[int]:
        statuses = await asyncio.gather(*[_send(mw, [(b"x-api-key", key)]) for _ in range(20)])
        await mw.guard.drain(5)
        await mw.guard.aclose()
        return [s for s, _ in statuses]

    statuses = asyncio.run(run())
    answered = statuses.count(200)
    assert answered >= 1 and set(statuses) <= {200, 503}
    assert len(monitor.seen) >= answered  # every answered request was monitored


def test_hostile_paths_and_content_length_are_refused_cleanly(tmp_path: Path) -> None:
    mw, _monitor, key = _raw_guard(tmp_path, 3, {})

    async def run() -> list[int]:
        codes = [(await _send(mw, [(b"x-api-key", key), (b"content-length", b"\xb2")]))[0]]
        for path in ("/v1/models/\u20ac:predict", "/v1/models/a b:predict", "/v1/models/x\r\nHost: y:predict"):
            codes.append((await _send(mw, [(b"x-api-key", key)], path=path))[0])
        await mw.guard.aclose()
        return codes

    codes = asyncio.run(run())
    assert codes[0] == 413  # a Unicode digit is not a length
    assert all(code in (200, 404) for code in codes[1:]), codes  # forwarded percent-encoded, or not a route
