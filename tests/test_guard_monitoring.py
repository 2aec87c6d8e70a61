"""The guard's monitoring side: detectors on synthetic attacks and benign traffic, the query log,
alerts and metrics, and ``privaudit monitor`` over a stored log.

One simulation (module fixture) sends ~110 benign clients, a LIME-style explainer and four probing
attacks through one monitor writing a real query log; most tests read its outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

import traffic as T
from privaudit.errors import ConfigError
from privaudit.guard.events import QueryEvent
from privaudit.guard.monitoring import Monitor, MonitorError, build_monitor, cooled, target_step
from privaudit.guard.querylog import LogConfig, QueryLog, features_from_record, rotated_time

KEY_ENV = "PRIVAUDIT_TEST_LOG_KEY"
KEY = "test-log-key-0123456789abcdef"
ALL = {"prada": {}, "fingerprint": {}, "knn": {}, "manifold": {}, "rotation": {}, "boundary": {}, "volume": {}}
LEVELS = ["log", "degrade", "throttle", "block"]
ATTACKS = {"jacobian": T.jacobian_extraction, "nes": T.nes_inversion, "label_only": T.label_only_mi,
           "boundary": T.boundary_walk}
BENIGN_PRINCIPALS = 110


@pytest.fixture(scope="module")
def target() -> T.Target:
    return T.Target(0)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def monitor(tmp: Path | None = None, detectors: dict[str, Any] | None = None, allow: tuple[str, ...] = (),
            **log: Any) -> Monitor:
    cfg = {"key_env": KEY_ENV, **({"path": str(tmp / "querylog.jsonl")} if tmp else {}), **log}
    return build_monitor(cfg, ALL if detectors is None else detectors, LEVELS, list(allow), {"log": False})


@dataclass
class Run:
    monitor: Monitor
    first_flag: dict[str, int]  # principal -> its queries when it first left "log"
    registry: CollectorRegistry
    log_path: Path
    seconds: float
    rows: int


def drive(mon: Monitor, target: T.Target, requests: list[T.Request]) -> dict[str, int]:
    first: dict[str, int] = {}
    for ev in T.events(target, requests):
        verdict = mon.observe(ev)
        if verdict.level != "log" and ev.principal not in first:
            first[ev.principal] = mon.standings.peek(ev.principal).queries  # type: ignore[union-attr]
    return first


@pytest.fixture(scope="module")
def sim(target: T.Target, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("sim")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        # LIME-style explainers perturb one record a few hundred times: to a near-duplicate detector
        # that is probing, so they belong on the allow list (see the module docs of monitoring.py).
        mon = monitor(tmp, allow=("explainer",))
    benign = T.benign_sessions(target, np.random.default_rng(1), principals=BENIGN_PRINCIPALS, max_queries=200)
    streams = [benign, T.lime_explainer(target, np.random.default_rng(2), start=T.T0 + 900)]
    for i, (name, gen) in enumerate(ATTACKS.items()):
        streams.append(gen(target, np.random.default_rng(10 + i), principal=f"atk-{name}", start=T.T0 + 600 + 300 * i))
    requests = T.merge(*streams)
    started = time.perf_counter()
    first = drive(mon, target, requests)
    seconds = time.perf_counter() - started
    mon.close()
    return Run(mon, first, mon.registry, tmp / "querylog.jsonl", seconds, sum(len(r.rows) for r in requests))


# --- detection -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_attack_is_flagged_within_200_queries(sim: Run, attack: str) -> None:
    principal = f"atk-{attack}"
    st = sim.monitor.standings.peek(principal)
    assert st is not None and st.first_alarm, f"{attack}: no detector fired"
    assert principal in sim.first_flag and sim.first_flag[principal] <= 200, (attack, sim.first_flag.get(principal))
    print(f"{attack}: flagged after {sim.first_flag[principal]} queries by "
          + ", ".join(f"{d} @ {a['queries']}" for d, a in st.first_alarm.items()))


def test_benign_false_alarm_rate_is_at_most_one_percent(sim: Run) -> None:
    benign = [p for p, _st in sim.monitor.standings.items() if p.startswith("user-")]
    assert len(benign) >= 100
    flagged = [p for p in benign if p in sim.first_flag]
    print(f"benign: {len(flagged)} of {len(benign)} flagged; {sim.rows / sim.seconds:,.0f} queries/s online")
    assert len(flagged) / len(benign) <= 0.01, flagged
    # Twenty of them share one address (an office NAT): that alone is never a signal.
    assert all(f"user-{i:03d}" not in sim.first_flag for i in range(20))


def test_lime_explainer_on_the_allow_list_stays_at_log(sim: Run, target: T.Target) -> None:
    st = sim.monitor.standings.peek("explainer")
    assert st is not None and st.max_step == 0 and "explainer" not in sim.first_flag
    print("explainer alarms (allowed, so only logged):",
          {d: a["queries"] for d, a in st.first_alarm.items()} or "none")
    # An allowed principal is never escalated, even when it really is probing.
    mon = build_monitor({"key_env": KEY_ENV}, ALL, LEVELS, ["atk-nes"], {"log": False})
    drive(mon, target, T.merge(T.benign_sessions(target, np.random.default_rng(3), principals=8, max_queries=60),
                               T.nes_inversion(target, np.random.default_rng(4), start=T.T0 + 1000)))
    st = mon.standings.peek("atk-nes")
    assert st is not None and st.first_alarm and st.max_step == 0
    mon.close()


def miface_requests(target: T.Target, principal: str, start: float, *, rounding: int | None,
                    start_point: np.ndarray | None = None, budget: int = 400) -> list[T.Request]:
    """The queries privaudit's own black-box MI-Face sends (NES around a moving centre), 20 rows a
    request. Rounded answers make it widen its perturbations until the class shows again."""
    from privaudit.attacks.inversion import run_inversion
    from privaudit.models.pycallable import CallableTarget

    sent: list[np.ndarray] = []

    def predict(X: np.ndarray) -> np.ndarray:
        sent.append(np.array(X))
        p = target.proba(X)
        return p if rounding is None else np.round(p, rounding)

    run_inversion(CallableTarget(predict, classes=np.arange(10)), n_classes=10, n_features=64, bounds=(0.0, 16.0),
                  mode="black-box", image_shape=(8, 8), classes_to_invert=[3], max_queries_per_class=budget, seed=0,
                  start_point=start_point)
    rows = np.vstack(sent)
    return [T.Request(principal, start + 0.5 * i, "203.0.113.9", rows[j:j + 20])
            for i, j in enumerate(range(0, len(rows), 20))]


def _flagged_by(mon: Monitor, principal: str) -> dict[str, int]:
    st = mon.standings.peek(principal)
    return {} if st is None else {d: a["queries"] for d, a in st.first_alarm.items()}


def test_knn_flags_gradient_estimation_clouds_between_grid_and_manifold(target: T.Target) -> None:
    # NES around an ordinary-looking point with a sigma of a tenth of the pixel range (MI-Face's
    # default): too wide for near-duplicates on the fingerprint grid, too natural for the manifold
    # detector, yet every sample is much closer to the attacker's earlier queries than digits are.
    benign = T.benign_sessions(target, np.random.default_rng(20), principals=40, max_queries=150, span=1200)
    attack = T.nes_inversion(target, np.random.default_rng(5), principal="atk-nes", start=T.T0 + 700, sigma=1.6,
                             iters=15)
    mon = monitor()
    first = drive(mon, target, T.merge(benign, attack))
    assert 0 < first["atk-nes"] <= 200, first.get("atk-nes")
    fired = _flagged_by(mon, "atk-nes")
    assert "knn" in fired and not {"fingerprint", "manifold"} & set(fired), fired
    assert not [p for p in first if p.startswith("user-")]
    st = mon.standings.peek("atk-nes")
    assert st is not None and st.first_alarm["knn"]["evidence"]["close"] >= 10
    mon.close()


def test_manifold_flags_miface_on_rounded_scores(target: T.Target) -> None:
    # Against rounded answers MI-Face widens its noise until the class shows: its queries look like
    # nothing a digit reader sends, far off the principal subspace of ordinary traffic.
    benign = T.benign_sessions(target, np.random.default_rng(21), principals=40, max_queries=150, span=1200)
    attack = miface_requests(target, "atk-miface", T.T0 + 700, rounding=2)
    mon = monitor(detectors={"manifold": {}})
    first = drive(mon, target, T.merge(benign, attack))
    assert 0 < first["atk-miface"] <= 200, first.get("atk-miface")
    assert not [p for p in first if p.startswith("user-")]
    assert mon.detectors["manifold"].subspace is not None  # type: ignore[attr-defined]
    mon.close()


def test_manifold_calibration_drops_an_early_prober(target: T.Target) -> None:
    # A prober among the first principals (uniform noise images) must not teach the detector that
    # noise is ordinary: its sample is dropped from the subspace, which still flags the next prober.
    rng = np.random.default_rng(22)
    noise = [T.Request("early-prober", T.T0 + 5 * i, "192.0.2.1", rng.uniform(0, 16, size=(2, 64))) for i in range(15)]
    benign = T.benign_sessions(target, rng, principals=30, max_queries=120, span=600)
    late = [T.Request("late-prober", T.T0 + 2000 + i, "192.0.2.2", rng.uniform(0, 16, size=(2, 64))) for i in range(30)]
    mon = monitor(detectors={"manifold": {"calibration_principals": 5}})
    first = drive(mon, target, T.merge(noise, benign, late))
    assert "late-prober" in first and first["late-prober"] <= 40
    assert not [p for p in first if p.startswith("user-")]
    mon.close()


def test_rotation_across_addresses(target: T.Target) -> None:
    mon = monitor(detectors={"rotation": {}})
    first = drive(mon, target, T.merge(T.rotating_ips(target, np.random.default_rng(5)),
                                       T.benign_sessions(target, np.random.default_rng(6), principals=30,
                                                         max_queries=60, nat_group=30)))
    assert 0 < first["atk-rotating"] <= 20 and not [p for p in first if p.startswith("user")]
    assert "rotation" in mon.standings.peek("atk-rotating").first_alarm  # type: ignore[union-attr]


def test_rotation_across_fresh_principals(target: T.Target) -> None:
    mon = monitor()
    rng = np.random.default_rng(7)
    warmup = T.benign_sessions(target, rng, principals=8, max_queries=60, span=600)
    # An NES inversion split over fresh accounts, five queries each: the shared near-duplicate table
    # remembers what earlier accounts sent.
    nes = [T.Request(f"fresh-{i // 5}", r.time + 0.01 * i, r.ip, row[None])
           for i, (r, row) in enumerate((r, row) for r in T.nes_inversion(target, rng, start=T.T0 + 700) for row in r.rows)]
    first = drive(mon, target, T.merge(warmup, nes))
    fresh = sorted({r.principal for r in nes}, key=lambda p: int(p.split("-")[1]))
    late = fresh[len(fresh) // 2:]
    seen = {p: first.get(p) for p in late}
    assert all(n is not None and n <= 5 for n in seen.values()), seen  # none gets its five queries unflagged
    assert sum(n == 1 for n in seen.values()) >= len(late) // 2, seen  # most on their very first query
    evidence = mon.standings.peek(late[-1]).first_alarm["fingerprint"]["evidence"]  # type: ignore[union-attr]
    assert evidence["other_principals"] > 0
    # The same probe set replayed, exactly, from fresh accounts.
    rows = target.natural(30, rng)
    replays = [T.Request(f"replay-{k}", T.T0 + 2000 + 100 * k + i, "192.0.2.9", rows[i:i + 1])
               for k in range(3) for i in range(30)]
    first = drive(mon, target, replays)
    assert "replay-0" not in first and first.get("replay-1", 99) <= 15
    assert "rotation" in mon.standings.peek("replay-1").first_alarm  # type: ignore[union-attr]


def test_volume_burst(target: T.Target) -> None:
    mon = monitor(detectors={"volume": {}})
    reqs = T.steady_then_burst(target, np.random.default_rng(8))
    first = drive(mon, target, reqs)
    steady = 30 * 6
    assert steady < first["atk-volume"] <= steady + 200


def test_escalation_is_graduated_and_cools_down() -> None:
    bands = (0.5, 0.75, 0.9)
    assert target_step(0.55, 1, bands, 20, 3) == 1  # first alarm: one step
    assert target_step(0.55, 21, bands, 20, 3) == 2  # persisting: another step per 20 alarms
    assert target_step(0.95, 1, bands, 20, 3) == 3  # overwhelming evidence: straight to the top
    assert target_step(0.95, 1, bands, 20, 1) == 1  # never past the configured list
    assert target_step(0.2, 0, bands, 20, 3) == 0
    assert cooled(3, 0.0, 3600.0 * 2 + 1, 3600.0) == 1 and cooled(1, 0.0, 10.0, 3600.0) == 1


def test_response_levels_follow_the_configured_list(target: T.Target) -> None:
    mon = build_monitor({"key_env": KEY_ENV}, {"fingerprint": {"quantum": 2.5}}, ["throttle"], [], {"log": False})
    assert mon.response == ["log", "throttle"]
    levels = {mon.observe(ev).level for ev in T.events(target, T.nes_inversion(target, np.random.default_rng(9)))}
    assert levels == {"throttle"}  # the first request (20 near-duplicates) already earns the only step
    mon.close()


# --- the query log ---------------------------------------------------------------------------------------

def _event(i: int, rows: np.ndarray, t: float = T.T0) -> QueryEvent:
    return QueryEvent(principal=f"p{i % 7}", tier="free", time=t + i, client_ip="10.0.0.1", inputs=rows,
                      outputs=np.tile([0.7, 0.2, 0.1], (len(rows), 1)), decision="allowed", status=200,
                      request_id=f"r{i}")


def test_log_never_holds_raw_rows_unless_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    rows = np.round(rng.uniform(1000, 2000, size=(40, 12)), 6) + 0.123457  # values no sketch will produce
    for raw in (False, True):
        d = tmp_path / str(raw)
        mon = monitor(d, detectors={}, raw_inputs=raw)
        for i in range(0, 40, 4):
            mon.observe(_event(i, rows[i:i + 4]))
        mon.close()
        text = (d / "querylog.jsonl").read_text()
        records = [json.loads(line) for line in text.splitlines()]
        assert len(records) == 10
        found = any(repr(float(v)) in text for v in rows.ravel()[:50])
        assert found == raw
        rec = records[0]
        assert {"time", "principal", "tier", "client_ip", "request_id", "n_rows", "decision", "status", "scores",
                "rows"} <= set(rec)
        assert ("raw" in rec) == raw
        row = rec["rows"][0]
        assert set(row) == {"fingerprint", "sketch", "top", "margin"} and len(row["sketch"]) == 32
        assert row["top"] == 0 and row["margin"] == pytest.approx(0.5)
        assert oct(os.stat(d / "querylog.jsonl").st_mode & 0o777) == "0o600"
    # Same key, same row: same fingerprint and sketch, so detectors can replay the log.
    a = json.loads((tmp_path / "False" / "querylog.jsonl").read_text().splitlines()[0])
    b = json.loads((tmp_path / "True" / "querylog.jsonl").read_text().splitlines()[0])
    assert a["rows"] == b["rows"]
    f = features_from_record(a)
    assert f.sketches.shape == (4, 32) and f.fingerprints[0] == a["rows"][0]["fingerprint"]


def test_close_flushes_every_record(tmp_path: Path) -> None:
    mon = monitor(tmp_path, detectors={}, flush_seconds=3600, flush_records=10**6)
    n = 3000
    one = np.ones((1, 5))
    for i in range(n):
        mon.observe(_event(i, one * i))
    assert mon.querylog is not None and mon.querylog.buffered > 0  # still in memory: nothing forced it out
    mon.close()
    assert len((tmp_path / "querylog.jsonl").read_text().splitlines()) == n


def test_sigterm_loses_no_record(tmp_path: Path) -> None:
    """A process that exits on SIGTERM (as the proxy does) writes out its buffered records."""
    script = textwrap.dedent(f"""
        import signal, sys, time
        import numpy as np
        from privaudit.guard.events import QueryEvent
        from privaudit.guard.monitoring import build_monitor
        mon = build_monitor({{"key_env": "{KEY_ENV}", "path": sys.argv[1], "flush_seconds": 3600,
                             "flush_records": 10**6}}, {{"volume": {{}}}}, ["log"], [], {{"log": False}})
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # the query log flushes itself at exit
        for i in range(500):
            mon.observe(QueryEvent("p", "t", 1.7e9 + i, "10.0.0.1", np.ones((2, 3)) * i, None, "allowed", 200))
        print("ready", flush=True)
        time.sleep(60)
    """)
    path = tmp_path / "q.jsonl"
    env = {**os.environ, KEY_ENV: KEY}
    with subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert len(path.read_text().splitlines()) == 500


def test_rotation_by_size_and_day_and_retention(tmp_path: Path) -> None:
    now = [T.T0]
    clock = lambda: now[0]  # noqa: E731
    stale = tmp_path / "querylog.20230101T000000Z.jsonl"
    stale.write_text("{}\n")
    unrelated = tmp_path / "notes.jsonl"
    unrelated.write_text("{}\n")
    log = QueryLog(LogConfig(path=str(tmp_path / "querylog.jsonl"), rotate_bytes=2000, retention_days=30,
                             flush_seconds=3600), clock=clock)
    assert not stale.exists() and unrelated.exists()  # retention runs at start too
    for i in range(60):
        log.write({"i": i, "pad": "x" * 80})
        if i % 10 == 9:
            log.flush()
    rotated = sorted(tmp_path.glob("querylog.*Z*.jsonl"))
    assert len(rotated) >= 2 and all(p.stat().st_size <= 2000 for p in rotated)
    now[0] += 86400  # a new UTC day: the next write starts a new file even though it is small
    log.write({"i": 60})
    log.flush()
    assert len(sorted(tmp_path.glob("querylog.*Z*.jsonl"))) == len(rotated) + 1
    now[0] += 31 * 86400  # a month later every rotated file is past retention
    log.write({"i": 61})
    now[0] += 86400
    log.flush()
    log.close()
    assert not [p for p in tmp_path.glob("querylog.*Z*.jsonl") if rotated_time(p, "querylog", ".jsonl")
                and rotated_time(p, "querylog", ".jsonl") < now[0] - 30 * 86400]  # type: ignore[operator]
    lines = [json.loads(x) for p in tmp_path.glob("querylog*.jsonl") for x in p.read_text().splitlines()]
    assert lines[-1:] and {r["i"] for r in lines} >= {61}


def test_observe_is_thread_safe_and_takes_odd_requests(tmp_path: Path, target: T.Target) -> None:
    mon = monitor(tmp_path)
    reqs = T.benign_sessions(target, np.random.default_rng(12), principals=8, max_queries=80)
    evs = list(T.events(target, reqs))
    errors: list[BaseException] = []

    def worker(part: list[QueryEvent]) -> None:
        try:
            for ev in part:
                mon.observe(ev)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(evs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    odd = [QueryEvent("p", "t", T.T0, "10.0.0.1", np.empty((0, 64)), None, "rejected", 400),
           QueryEvent("p", "t", T.T0, "10.0.0.1", np.arange(64.0), None, "blocked", 429),
           QueryEvent("p", "t", T.T0, "10.0.0.1", np.array([["a", "b"]]), None, "allowed", 200)]
    verdicts = [mon.observe(ev) for ev in odd[:2]]
    with pytest.raises(MonitorError):  # unreadable rows: an error the proxy turns into a refusal, never a pass
        mon.observe(odd[2])
    mon.close()
    assert not errors and all(v.level == "log" for v in verdicts)
    assert mon.metrics.errors._value.get() == 1
    lines = (tmp_path / "querylog.jsonl").read_text().splitlines()
    assert len(lines) == len(evs) + 2
    # The blocked request's row was never answered: logged without rows, counted nowhere.
    assert json.loads(lines[-1])["rows"] == [] and json.loads(lines[-1])["decision"] == "blocked"
    assert sum(mon.standings.peek(p).queries for p, _ in mon.standings.items()) == sum(  # type: ignore[union-attr]
        len(r.rows) for r in reqs)


# --- configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"log": {"rotate_byte": 10}}, "log.rotate_byte"),
    ({"log": {"path": "x.jsonl"}}, "log.key_env"),
    ({"log": {"key_env": "NOPE_NOT_SET"}}, "NOPE_NOT_SET"),
    ({"detectors": {"nope": {}}}, "detectors.nope"),
    ({"detectors": {"prada": {"threshold": 2}}}, "detectors.prada.threshold"),
    ({"detectors": {"volume": {"window": 3}}}, "detectors.volume.window"),
    ({"detectors": {"knn": {"k": 300}}}, "detectors.knn: k (300) cannot exceed history (200)"),
    ({"detectors": {"manifold": {"threshold": 0.5}}}, "detectors.manifold.threshold"),
    ({"response": ["log", "ban"]}, "response[1]"),
    ({"response": ["block", "degrade"]}, "response"),
    ({"alerts": {"webhook": {"url": "ftp://x"}}}, "alerts.webhook.url"),
    ({"alerts": {"min_level": "loud"}}, "alerts.min_level"),
])
def test_bad_config_is_one_line_naming_the_key(kwargs: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"log": {}, "detectors": {}, "response": LEVELS, "allow": [], "alerts": {}, **kwargs}
    with pytest.raises(ConfigError) as info:
        build_monitor(**args)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_detector_switches() -> None:
    mon = build_monitor({}, {"prada": None, "volume": False, "boundary": {"enabled": False}, "rotation": True},
                        LEVELS, [], {"log": False})
    assert sorted(mon.detectors) == ["prada", "rotation"]
    mon.close()


# --- metrics and alerts -----------------------------------------------------------------------------------

def test_metrics_are_totals_without_principals(sim: Run) -> None:
    text = generate_latest(sim.registry).decode()
    counters = [m for m in sim.registry.collect() if m.type == "counter"]
    assert {"privaudit_guard_alerts", "privaudit_guard_queries", "privaudit_guard_detector_alarms"} <= {m.name for m in counters}
    assert "privaudit_guard_requests" not in {m.name for m in counters}  # requests are the proxy's to count, once
    for m in counters:
        assert all(s.name.endswith(("_total", "_created")) for s in m.samples), m.name
    assert f"privaudit_guard_queries_total {float(sim.rows)}" in text
    assert "privaudit_guard_detector_alarms_total" in text
    labels = {k for m in sim.registry.collect() for s in m.samples for k in s.labels}
    assert "principal" not in labels
    principals = [p for p, _ in sim.monitor.standings.items()]
    assert not [p for p in principals if f'"{p}"' in text]


def test_webhook_alert_is_retried_until_delivered(target: T.Target, caplog: pytest.LogCaptureFixture) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from servers import serve

    received: list[dict[str, Any]] = []
    done = threading.Event()

    async def hook(request: Request) -> JSONResponse:
        received.append(await request.json())
        if len(received) == 1:
            return JSONResponse({"error": "try again"}, status_code=500)
        done.set()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/health", health)])
    with serve(app) as base:
        registry = CollectorRegistry()
        mon = build_monitor({"key_env": KEY_ENV}, {"fingerprint": {"quantum": 2.5}}, ["log", "block"], [],
                            {"webhook": {"url": base + "/hook", "backoff_seconds": 0.05}}, registry)
        with caplog.at_level("WARNING", logger="privaudit.guard.alerts"):
            for ev in T.events(target, T.nes_inversion(target, np.random.default_rng(11), principal="mallory")):
                mon.observe(ev)
        assert done.wait(10)
        mon.close()
    assert len(received) == 2 and received[0] == received[1]
    alert = received[1]
    assert alert["principal"] == "mallory" and alert["level"] == "block" and alert["detectors"] == ["fingerprint"]
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "privaudit.guard.alerts"]
    assert logged and logged[0]["principal"] == "mallory"
    assert registry.get_sample_value("privaudit_guard_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    assert registry.get_sample_value("privaudit_guard_webhook_deliveries_total", {"outcome": "retried"}) == 1
    assert registry.get_sample_value("privaudit_guard_alerts_total", {"detector": "fingerprint"}) == 1


# --- privaudit monitor ------------------------------------------------------------------------------------

def test_monitor_command_reports_probing(sim: Run, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from privaudit.guard.monitor_cmd import monitor_command, run_monitor

    app = typer.Typer()
    app.command("monitor")(monitor_command)
    app.command("noop")(lambda: None)  # two commands, so "monitor" is a subcommand as in the real CLI
    outs = [tmp_path / "m.json", tmp_path / "m.md", tmp_path / "m.sarif"]
    guard = tmp_path / "guard.yaml"  # the proxy's own configuration: other sections are not monitor's business
    guard.write_text("upstream: {url: 'http://model:8080'}\nallow: [explainer]\nresponse: [log, degrade, throttle, block]\n"
                     "detectors: {prada: {}, fingerprint: {}, knn: {}, manifold: {}, rotation: {}, boundary: {}, volume: {}}\n")
    result = CliRunner().invoke(app, ["monitor", str(sim.log_path), "--model-name", "digits", "--config", str(guard)]
                                + [a for o in outs for a in ("-o", str(o))])
    assert result.exit_code == 0, result.output
    assert "queries/s" in result.output
    report = json.loads(outs[0].read_text())
    flagged = {p["principal"] for p in report["flagged"]}
    online = set(sim.first_flag)
    assert {f"atk-{a}" for a in ATTACKS} <= flagged
    assert len(flagged ^ online) <= 1, (flagged, online)  # replay matches the proxy up to sketch rounding
    assert "explainer" not in flagged and report["calibrated"]["fingerprint.quantum"] > 0
    assert report["throughput"]["queries_per_second"] > 0 and report["queries"] == sim.rows
    finding = next(f for f in report["findings"] if f["rule_id"] == "ATLAS-EXF-003")
    checks = {c["check"]: c for c in finding["checks"]}
    assert finding["status"] == "fail" and finding["id"] == "ATLAS-EXF-003/digits"
    assert checks["probing_monitoring"]["status"] == "FAIL"
    assert checks["probing_monitoring"]["id"] == "ATLAS-EXF-003/probing_monitoring/digits"
    assert "atk-nes" in checks["probing_monitoring"]["evidence"] and "queries" in checks["probing_monitoring"]["evidence"]
    assert checks["query_limits"]["status"] == "FAIL"  # every request was answered: nothing acted
    md = outs[1].read_text()
    assert "privaudit monitor" in md and "atk-jacobian" in md and "queries/s" in md
    sarif = json.loads(outs[2].read_text())
    results = sarif["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"ATLAS-EXF-003", "ATLAS-EXF-001"}
    assert sarif["version"] == "2.1.0" and all(r["partialFingerprints"] for r in results)
    from sarif_pydantic import Sarif

    assert Sarif.model_validate_json(outs[2].read_text()).runs[0].tool.driver.name == "privaudit"
    # Parquet copies of the log read the same.
    import duckdb

    pq = tmp_path / "log.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_json_auto('{sim.log_path}', format='newline_delimited')) TO '{pq}' "
               "(FORMAT parquet)")
    again = run_monitor([pq], guard, model_name="digits")
    assert {p.principal for p in again.flagged} == flagged
    # Bad inputs are one-line errors.
    bad = CliRunner().invoke(app, ["monitor", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)


def test_monitor_takes_the_audits_path_policy_baseline_gate(sim: Run, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Suppressions from the policy file, regressions against --baseline and the gate act on a monitor report
    as on an audit's: the same privaudit.ci.conclude path."""
    import typer
    from typer.testing import CliRunner

    from privaudit.guard.monitor_cmd import monitor_command

    app = typer.Typer()
    app.command("monitor")(monitor_command)
    app.command("noop")(lambda: None)
    monkeypatch.chdir(tmp_path)  # no policy file here unless the test writes one
    run = CliRunner()
    base = [str(sim.log_path), "--model-name", "digits"]
    first = run.invoke(app, ["monitor", *base, "-o", "first.json", "--fail-on", "high"])
    assert first.exit_code == 1, first.output  # probers answered and nothing limited them: HIGH
    report = json.loads((tmp_path / "first.json").read_text())
    assert "gate: FAILED" in first.output and report["regressions"] == []
    failing = sorted(f["id"] for f in report["findings"] if f["status"] == "fail")
    assert failing == ["ATLAS-EXF-001/digits", "ATLAS-EXF-003/digits"]
    # The same log against itself: no regression, and below --fail-on critical it passes.
    same = run.invoke(app, ["monitor", *base, "--baseline", "first.json", "--fail-on", "critical"])
    assert same.exit_code == 0, same.output
    # Against an earlier report in which nothing failed, each failing finding is a regression.
    clean = dict(report, findings=[dict(f, status="pass") for f in report["findings"]])
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    worse = run.invoke(app, ["monitor", *base, "--baseline", "clean.json", "--fail-on", "critical", "-o", "w.json"])
    assert worse.exit_code == 1 and "2 regressions" in worse.output, worse.output
    assert {r["id"] for r in json.loads((tmp_path / "w.json").read_text())["regressions"]} == set(failing)
    # An audit report is not a monitor baseline.
    (tmp_path / "audit.json").write_text(json.dumps({"schema_version": 1, "membership": {}, "findings": []}))
    wrong = run.invoke(app, ["monitor", *base, "--baseline", "audit.json"])
    assert wrong.exit_code != 0 and "not a privaudit monitor report" in str(wrong.exception)
    # The policy file's suppressions (found in the working directory, as for audit and scan).
    (tmp_path / "privaudit.toml").write_text("".join(
        f'[[suppressions]]\nid = "{fid}"\nreason = "probing by our own red team"\nexpires = 2099-01-01\n'
        for fid in failing))
    accepted = run.invoke(app, ["monitor", *base, "--fail-on", "low", "-o", "s.json"])
    assert accepted.exit_code == 0, accepted.output
    assert all(f["suppressed"] for f in json.loads((tmp_path / "s.json").read_text())["findings"] if f["id"] in failing)


def test_monitor_takes_fail_on_from_the_policy_file_and_reads_its_config_safely(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privaudit.ci.conclude import prepare_ci
    from privaudit.guard.monitor_cmd import _guard_sections

    monkeypatch.chdir(tmp_path)
    assert prepare_ci("monitor", default_fail_on="never").settings.fail_on == "never"  # monitor's own default
    (tmp_path / "privaudit.toml").write_text('fail_on = "low"\n')
    assert prepare_ci("monitor", default_fail_on="never").settings.fail_on == "low"  # the policy file's
    assert prepare_ci("monitor", fail_on="high", default_fail_on="never").settings.fail_on == "high"
    bad = tmp_path / "guard.yaml"
    bad.write_bytes(b"detectors: {\xff\xfe}\n")  # not UTF-8: was a UnicodeDecodeError traceback
    with pytest.raises(ConfigError, match=r"^--config .*guard.yaml: cannot read it"):
        _guard_sections(bad)
