"""The guard's request path end to end: identity, per-principal limits (memory and a real Redis),
hardening, the monitoring hand-off, refusals that look alike, reload, metrics and the CLI.

The upstream is a real uvicorn server with a fitted scikit-learn model speaking KServe v1 and v2
(tests/servers.py). The guard runs under a real uvicorn where sockets matter (concurrency, client
addresses) and through httpx's ASGI transport elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from guard_fixtures import (AUDIENCE, CLASSES, ISSUER, KID, FakeMonitor, RedisServer, Signer, FEATURES, forged,  # noqa: F401
                            free_port, guard_config, lifespan, make_keys, model, post, rows, serve_guard, upstream)
from privaudit.errors import ConfigError
from privaudit.guard.app import GuardMiddleware, build_app
from privaudit.guard.cli import guard_app
from privaudit.guard.config import load_config
from privaudit.guard.hardening import harden, stricter
from privaudit.guard.identity import AuthError, KeyStore
from privaudit.target import OutputMode
from servers import Recorder, iris_app, serve


LIMIT_HEADERS = {"retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy"}


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer.create(tmp_path_factory.mktemp("jwks"))


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    return make_keys(tmp_path / "keys.yaml", {"alice": "default", "bob": "default", "free": "free", "basic": "basic"})


@asynccontextmanager
async def guarded(app: Any, client: tuple[str, int] = ("127.0.0.1", 50000)) -> AsyncIterator[httpx.AsyncClient]:
    """Talk to the guard in-process; close it (monitor, pool, limiter) afterwards."""
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url="http://guard") as c:
            yield c
    finally:
        await app.state.guard.aclose()


def limit_shape(resp: httpx.Response) -> tuple[int, bytes, str, frozenset[str]]:
    return resp.status_code, resp.content, resp.headers["content-type"], frozenset(h for h in resp.headers if h in LIMIT_HEADERS)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(("yaml_text", "expected"), [
    ('limits: {default: "20/sekond"}', "limits.default: '20/sekond' is not a rate string like '20/second;120/minute'"),
    ('limits: {default: "5/second", tiers: {gold: "lots"}}', "limits.tiers.gold: 'lots' is not a rate string"),
    ('limits: {default: "5/second", storage: "mongodb://x"}', "limits.storage:"),
    ('limits: {default: "5/second"}\nlimts: {}', "limts: is not a known key"),
    ('limits: {default: "5/second"}\nhardening: {default: {output: top_k}}', "hardening.default: output top_k needs k"),
    ('limits: {default: "5/second"}\nidentity: {jwt: {jwks_file: j, issuer: i, audience: a, algorithms: [HS256]}}',
     "identity.jwt.algorithms: HS256 is not allowed"),
    ('limits: {default: "5/second"}\nidentity: {api_keys: {file: k}, trusted_proxies: [not-an-ip]}', "identity.trusted_proxies:"),
    ('limits: {default: "5/second"}\nresponse: [log, ban]', "response: 'ban' is not a response level"),
    ("limits: [1, 2", "not valid YAML at line"),
])
def test_config_errors_are_one_line_naming_the_file_and_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = tmp_path / "guard.yaml"
    text = "upstream: http://127.0.0.1:9\nidentity: {api_keys: {file: keys.yaml}}\n" + yaml_text
    if "\nidentity:" in "\n" + yaml_text:
        text = "upstream: http://127.0.0.1:9\n" + yaml_text
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and expected in message
    assert info.value.exit_code == 2


def test_a_complete_config_loads_with_paths_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text(textwrap.dedent("""\
        upstream: http://127.0.0.1:8081
        protocol: v2
        listen: {host: 0.0.0.0, port: 9000}
        identity:
          api_keys: {file: keys.yaml}
          jwt: {jwks_file: jwks.json, issuer: https://id.example, audience: guard, algorithms: [RS256, ES256]}
          trusted_proxies: [10.0.0.0/8]
        limits: {storage: "redis://127.0.0.1:6379", on_storage_error: allow, default: "20/second;120/minute", tiers: {pro: "100/second"}}
        hardening: {default: {output: top_k, k: 1, round: 1}, tiers: {pro: {output: probabilities, round: 3}}}
        detectors: [prada]
        response: [log, degrade]
        metrics: {path: /internal/metrics}
        """))
    cfg = load_config(path)
    assert cfg.protocol.type == "v2" and cfg.identity.api_keys is not None and cfg.identity.api_keys.file == tmp_path / "keys.yaml"
    assert cfg.detector_settings() == {"prada": {}} and cfg.max_body_bytes == 1_048_576
    assert cfg.limits_for("pro") == "100/second" and cfg.limits_for("nope") == "20/second;120/minute"
    assert cfg.known_tier("pro") == "pro" and cfg.known_tier("invented-by-a-token") == "default"


# --- identity --------------------------------------------------------------------------------------


def test_api_keys_wrong_unknown_missing_and_revoked_get_401(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    from privaudit.guard.identity import revoke_key

    revoke_key(tmp_path / "keys.yaml", "bob")
    mon = FakeMonitor()
    app = build_app(guard_config(tmp_path, upstream), monitor=mon)

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            wrong = keys["alice"].split(".")[0] + ".not-the-secret"
            codes = [(await post(c, k)).status_code for k in (keys["alice"], wrong, "mallory.abc", "alice", keys["bob"], None)]
            bearer = await c.post("/v1/models/iris:predict", json={"instances": rows()}, headers={"Authorization": "Bearer x.y.z"})
            return codes + [bearer.status_code]

    assert asyncio.run(scenario()) == [200, 401, 401, 401, 401, 401, 401]
    assert mon.decisions() == ["allowed"] + ["unauthenticated"] * 6
    assert mon.events[0].principal == "key:alice" and mon.events[1].principal == ""


def test_keys_file_never_holds_the_secret(tmp_path: Path, keys: dict[str, str]) -> None:
    path = tmp_path / "keys.yaml"
    text = path.read_text()
    assert all(k.split(".", 1)[1] not in text for k in keys.values())
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = KeyStore(path)
    assert store.authenticate(keys["free"]).tier == "free"
    with pytest.raises(AuthError):
        store.authenticate(keys["free"][:-1] + ("A" if keys["free"][-1] != "A" else "B"))


def _jwt_app(tmp_path: Path, upstream: str, signer: Signer, mon: FakeMonitor) -> Any:
    jwt_cfg = {"jwks_file": str(signer.jwks_file), "issuer": ISSUER, "audience": AUDIENCE, "tier_claim": "tier"}
    cfg = guard_config(tmp_path, upstream, identity={"jwt": jwt_cfg}, hardening={"tiers": {"pro": {"output": "label"}}})
    return build_app(cfg, monitor=mon)


def test_jwt_good_bad_expired_wrong_audience_none_and_hs256_confusion(tmp_path: Path, upstream: str, signer: Signer) -> None:
    other = Signer.create(tmp_path)  # same kid, different key: a bad signature
    past = int(time.time()) - 3600
    cases = {
        "good": signer.token(),
        "expired": signer.token(exp=past, iat=past - 60),
        "wrong audience": signer.token(aud="someone-else"),
        "wrong issuer": signer.token(iss="https://evil.test"),
        "no exp": jwt.encode({k: v for k, v in signer.claims().items() if k != "exp"}, signer.private, algorithm="RS256", headers={"kid": KID}),
        "bad signature": other.token(),
        "garbage": "not.a.token",
        "alg none": forged({"alg": "none", "typ": "JWT", "kid": KID}, signer.claims(), None),
        "hs256 with the public key": forged({"alg": "HS256", "typ": "JWT", "kid": KID}, signer.claims(), signer.public_pem()),
    }
    mon = FakeMonitor()
    app = _jwt_app(tmp_path, upstream, signer, mon)

    async def scenario() -> dict[str, httpx.Response]:
        async with guarded(app) as c:
            return {name: await c.post("/v1/models/iris:predict", json={"instances": rows(2)}, headers={"Authorization": f"Bearer {tok}"})
                    for name, tok in cases.items()}

    got = asyncio.run(scenario())
    assert {name: r.status_code for name, r in got.items()} == {name: 200 if name == "good" else 401 for name in cases}
    assert got["good"].json() == {"predictions": ["setosa", "versicolor"]}  # tier "pro" from the claim: labels only
    assert got["expired"].headers["www-authenticate"] == "Bearer"
    assert mon.events[0].principal == "jwt:carol" and mon.events[0].tier == "pro"


# --- limits ----------------------------------------------------------------------------------------


async def _burst(base: str, key: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=n), timeout=30) as c:
        return list(await asyncio.gather(*[post(c, key) for _ in range(n)]))


def test_64_concurrent_clients_on_one_key_never_pass_the_limit_memory(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    cfg = guard_config(tmp_path, upstream, limits={"default": "10/minute;1000/hour"})
    with serve_guard(build_app(cfg, monitor=FakeMonitor())) as base:
        answers = asyncio.run(_burst(base, keys["alice"], 64))
        other = httpx.post(base + "/v1/models/iris:predict", json={"instances": rows()}, headers={"X-API-Key": keys["bob"]})
    codes = [r.status_code for r in answers]
    assert codes.count(200) == 10 and codes.count(429) == 54
    refused = next(r for r in answers if r.status_code == 429)
    assert LIMIT_HEADERS <= set(refused.headers) and refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-limit"] == "10" and refused.headers["ratelimit-policy"] == "10;w=60, 1000;w=3600"
    # A 60 s moving window that filled during this burst frees its first slot about a minute later;
    # a seconds-level answer (or a minute-boundary one from a fixed window) would be wrong.
    assert 45 <= int(refused.headers["retry-after"]) <= 60
    assert other.status_code == 200  # another principal's quota is untouched


def test_a_batch_spends_one_query_per_record(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    app = build_app(guard_config(tmp_path, upstream, limits={"default": "5/minute"}), monitor=FakeMonitor())

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            return [(await post(c, keys["alice"], n)).status_code for n in (3, 3, 2, 6)]

    assert asyncio.run(scenario()) == [200, 429, 200, 429]


def test_64_concurrent_clients_across_two_guards_sharing_redis_never_pass_the_limit(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    redis = RedisServer()
    try:
        cfg = guard_config(tmp_path, upstream, limits={"storage": redis.url, "default": "10/minute;1000/hour"})
        apps = [build_app(cfg, monitor=FakeMonitor()) for _ in range(2)]  # two replicas, one Redis

        async def scenario() -> list[int]:
            async with guarded(apps[0]) as a, guarded(apps[1]) as b:
                answers = await asyncio.gather(*[post(a if i % 2 else b, keys["alice"]) for i in range(64)])
                return [r.status_code for r in answers]

        codes = asyncio.run(scenario())
    finally:
        redis.stop()
    assert codes.count(200) == 10 and codes.count(429) == 54


def test_rotating_client_addresses_and_forwarded_for_never_escape_a_principals_limit(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    # Trust every proxy so each request's X-Forwarded-For really becomes its client address.
    cfg = guard_config(tmp_path, upstream, limits={"default": "5/minute"},
                       identity={"api_keys": {"file": "keys.yaml"}, "trusted_proxies": ["0.0.0.0/0"]})
    mon = FakeMonitor()
    with serve_guard(build_app(cfg, monitor=mon)) as base:
        codes = []
        for i in range(20):  # real sockets from 20 loopback addresses, each claiming another origin
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{2 + i}")
            with httpx.Client(base_url=base, transport=transport) as c:
                codes.append(post(c, keys["alice"], X_Forwarded_For=f"198.51.100.{i}").status_code)
    assert codes.count(200) == 5
    assert len({e.client_ip for e in mon.events}) == 20  # the addresses did rotate; the limit did not care


def test_untrusted_forwarded_for_is_ignored(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    def client_ip(trusted: list[str], xff: str) -> str:
        mon = FakeMonitor()
        ident = {"api_keys": {"file": "keys.yaml"}, "trusted_proxies": trusted}
        app = build_app(guard_config(tmp_path, upstream, identity=ident), monitor=mon)

        async def one() -> None:
            async with guarded(app, client=("192.0.2.10", 4000)) as c:
                assert (await post(c, keys["alice"], X_Forwarded_For=xff)).status_code == 200

        asyncio.run(one())
        return mon.events[0].client_ip

    assert client_ip([], "203.0.113.7") == "192.0.2.10"
    assert client_ip(["10.0.0.0/8"], "203.0.113.7") == "192.0.2.10"  # the peer is not a trusted proxy
    assert client_ip(["192.0.2.0/24"], "203.0.113.7") == "203.0.113.7"
    # The left end is whatever the client wrote; the right-most hop not added by our proxies counts.
    assert client_ip(["192.0.2.0/24", "10.0.0.0/8"], "1.1.1.1, 203.0.113.7, 10.1.1.1") == "203.0.113.7"


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["deny", "allow"])
def test_redis_stopping_mid_run_follows_on_storage_error(tmp_path: Path, upstream: str, keys: dict[str, str], policy: str) -> None:
    redis = RedisServer()
    mon = FakeMonitor()
    cfg = guard_config(tmp_path, upstream, limits={"storage": redis.url, "default": "100/minute", "on_storage_error": policy})
    app = build_app(cfg, monitor=mon)

    async def scenario() -> list[httpx.Response]:
        async with guarded(app) as c:
            before = [await post(c, keys["alice"]) for _ in range(2)]
            redis.stop()
            return before + [await post(c, keys["alice"]) for _ in range(2)]

    try:
        answers = asyncio.run(scenario())
    finally:
        redis.stop()
    codes = [r.status_code for r in answers]
    assert codes == ([200, 200, 429, 429] if policy == "deny" else [200, 200, 200, 200])
    assert mon.events[-1].extra.get("storage_error") is True
    if policy == "deny":
        assert LIMIT_HEADERS <= set(answers[-1].headers) and answers[-1].json() == {"error": "rate limit exceeded; retry later"}


# --- hardening and monitoring verdicts ------------------------------------------------------------------

HARDENING = {"default": {"output": "probabilities", "round": 3},
             "tiers": {"free": {"output": "label"}, "basic": {"output": "top_k", "k": 2, "round": 2}}}


def test_hardening_is_applied_per_tier_in_kserve_v1_and_v2(tmp_path: Path, upstream: str, keys: dict[str, str], model: Any) -> None:
    app = build_app(guard_config(tmp_path, upstream, hardening=HARDENING), monitor=FakeMonitor())
    truth = model.predict_proba(np.asarray(rows(3)))

    async def scenario() -> dict[str, Any]:
        async with guarded(app) as c:
            out = {tier: (await post(c, keys[tier], 3)).json() for tier in ("alice", "free", "basic")}
            v2 = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64", "data": np.ravel(rows(3)).tolist()}]}
            for who in ("free", "basic", "alice"):
                out[f"v2-{who}"] = (await c.post("/v2/models/iris/infer", json=v2, headers={"X-API-Key": keys[who]})).json()
            return out

    got = asyncio.run(scenario())
    assert np.allclose(got["alice"]["predictions"], np.round(truth, 3), atol=0) and got["alice"]["predictions"] != truth.tolist()
    assert got["free"] == {"predictions": CLASSES}
    for row, p in zip(got["basic"]["predictions"], truth):
        assert list(row) == [CLASSES[j] for j in np.argsort(-p)[:2]] and list(row.values()) == [round(float(v), 2) for v in np.sort(p)[::-1][:2]]
    assert got["v2-free"] == {"model_name": "iris", "outputs": [{"name": "label", "shape": [3], "datatype": "BYTES", "data": CLASSES}]}
    names = [o["name"] for o in got["v2-basic"]["outputs"]]
    assert names == ["top_k_labels", "top_k_probabilities"] and got["v2-basic"]["outputs"][0]["shape"] == [3, 2]
    (probs,) = got["v2-alice"]["outputs"]  # the upstream's extra "label" output is not passed on
    assert probs["name"] == "probabilities" and np.allclose(np.reshape(probs["data"], (3, 3)), np.round(truth, 3), atol=0)


def test_custom_json_with_named_features_round_trips(tmp_path: Path, upstream: str, keys: dict[str, str], model: Any) -> None:
    proto = {"type": "custom", "input_field": "data.rows", "output_field": "result.scores", "row_format": "dict",
             "feature_names": FEATURES, "classes": CLASSES}
    cfg = guard_config(tmp_path, upstream, protocol=proto, hardening={"default": {"output": "top_k", "k": 1, "round": 2}},
                       routes=["/api/score"])
    app = build_app(cfg, monitor=FakeMonitor())
    body = {"data": {"rows": [dict(zip(FEATURES, r)) for r in rows(3)]}}

    async def scenario() -> httpx.Response:
        async with guarded(app) as c:
            return await c.post("/api/score", json=body, headers={"X-API-Key": keys["alice"]})

    resp = asyncio.run(scenario())
    best = model.predict_proba(np.asarray(rows(3))).max(axis=1)
    assert resp.json() == {"result": {"scores": [{name: round(float(p), 2)} for name, p in zip(CLASSES, best)]}}


def test_stricter_walks_down_to_label_only() -> None:
    ladder = [OutputMode("probabilities")]
    while ladder[-1].kind != "label":
        ladder.append(stricter(ladder[-1]))
    assert ladder == [OutputMode("probabilities"), OutputMode("top_k", rounding=1, k=1), OutputMode("label")]
    assert stricter(OutputMode("top_k", rounding=3, k=3)) == OutputMode("top_k", rounding=1, k=1)
    p = np.array([[0.2, np.nan, 0.7], [np.nan, 0.6, 0.1]])  # the upstream already withheld classes
    assert harden(p, OutputMode("label")).tolist() == [2, 1]
    assert np.array_equal(harden(p, OutputMode("top_k", k=1)), np.array([[np.nan, np.nan, 0.7], [np.nan, 0.6, np.nan]]), equal_nan=True)


def test_degrade_verdict_makes_the_next_answers_stricter(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    mon = FakeMonitor()
    app = build_app(guard_config(tmp_path, upstream, hardening=HARDENING), monitor=mon)

    async def scenario() -> list[Any]:
        async with guarded(app) as c:
            first = (await post(c, keys["alice"])).json()
            await app.state.guard.drain()  # the first request's event is monitored before the verdict changes
            mon.levels["key:alice"] = "degrade"
            second = (await post(c, keys["alice"])).json()  # the verdict arrives with this request's event...
            await app.state.guard.drain()  # ... from the monitoring worker, off the request path
            third = (await post(c, keys["alice"])).json()
            return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert len(first["predictions"][0]) == 3 and second == first
    ((label, score),) = third["predictions"][0].items()  # top-1, rounded to 1 decimal
    assert label == "setosa" and score == round(score, 1)
    assert mon.decisions() == ["allowed", "allowed", "degraded"]


def test_throttle_and_block_refusals_look_exactly_like_an_exhausted_quota(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    mon = FakeMonitor(levels={"key:bob": "block", "key:free": "throttle"})
    cfg = guard_config(tmp_path, upstream, limits={"default": "20/minute", "tiers": {"free": "20/minute"}})
    app = build_app(cfg, monitor=mon)

    async def scenario() -> dict[str, httpx.Response]:
        async with guarded(app) as c:
            for _ in range(20):
                await post(c, keys["alice"])
            out = {"quota": await post(c, keys["alice"])}
            await post(c, keys["bob"])  # the first request gets the block verdict back...
            await app.state.guard.drain()  # ... once the monitoring worker has seen it
            out["block"] = await post(c, keys["bob"])
            await post(c, keys["free"])
            await app.state.guard.drain()
            out["throttle-first"] = await post(c, keys["free"])  # a tenth of 20/minute: 2 per minute
            out["throttle-second"] = await post(c, keys["free"])
            out["throttle"] = await post(c, keys["free"])
            return out

    got = asyncio.run(scenario())
    assert got["throttle-first"].status_code == 200 and got["throttle-second"].status_code == 200
    shapes = {name: limit_shape(got[name]) for name in ("quota", "block", "throttle")}
    assert shapes["quota"][0] == 429 and shapes["quota"][3] == frozenset(LIMIT_HEADERS)
    assert shapes["block"] == shapes["quota"] and shapes["throttle"] == shapes["quota"]
    for name in ("block", "throttle"):
        assert got[name].headers["ratelimit-limit"] == "20" and got[name].headers["ratelimit-remaining"] == "0"
        assert set(got[name].headers) == set(got["quota"].headers)
    assert "blocked" in mon.decisions() and "throttled" in mon.decisions() and "limited" in mon.decisions()


# --- refusals before and after the upstream ---------------------------------------------------------


def test_oversized_bodies_get_413_declared_or_streamed(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    app = build_app(guard_config(tmp_path, upstream, max_body_bytes=2048), monitor=FakeMonitor())
    big = b'{"instances": [' + b",".join([b"[1.0, 2.0, 3.0, 4.0]"] * 200) + b"]}"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            hdr = {"X-API-Key": keys["alice"], "Content-Type": "application/json"}
            declared = await c.post("/v1/models/iris:predict", content=big, headers=hdr)
            streamed = await c.post("/v1/models/iris:predict", content=chunks(), headers=hdr)  # chunked, no length
            small = await post(c, keys["alice"])
            return [declared.status_code, streamed.status_code, small.status_code]

    assert asyncio.run(scenario()) == [413, 413, 200]


def test_unreadable_requests_get_400(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    app = build_app(guard_config(tmp_path, upstream), monitor=FakeMonitor())
    bodies = [b"not json", b'{"instances": [[1, "2", 3, 4]]}', b'{"instances": [[1,2,3,4]], "instances": [[5,6,7,8]]}',
              b'{"instances": [[NaN, 1, 2, 3]]}', b'{"instances": [[1, 2], [1, 2, 3]]}', b'{"inputs": [[1,2,3,4]]}']

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            hdr = {"X-API-Key": keys["alice"]}
            return [(await c.post("/v1/models/iris:predict", content=b, headers=hdr)).status_code for b in bodies]

    assert asyncio.run(scenario()) == [400] * len(bodies)


def test_upstream_down_gives_502_and_monitoring_still_sees_the_request(tmp_path: Path, keys: dict[str, str]) -> None:
    mon = FakeMonitor()
    app = build_app(guard_config(tmp_path, f"http://127.0.0.1:{free_port()}", timeout=5), monitor=mon)

    async def scenario() -> httpx.Response:
        async with guarded(app) as c:
            return await post(c, keys["alice"], 2)

    resp = asyncio.run(scenario())
    assert resp.status_code == 502 and resp.json() == {"error": "the model is unavailable"}
    (event,) = mon.events
    assert event.decision == "upstream_error" and event.status == 502 and event.principal == "key:alice"
    assert event.inputs.shape == (2, 4) and event.outputs is None


# --- health, metrics, reload, middleware, shutdown ---------------------------------------------------


def test_upstream_connections_bound_what_reaches_the_model(tmp_path: Path, model: Any, keys: dict[str, str]) -> None:
    rec = Recorder()
    with serve(iris_app(model, FEATURES, CLASSES, rec)) as base:
        app = build_app(guard_config(tmp_path, base, upstream_connections=2, routes=["/shuffled:predict"]), monitor=FakeMonitor())

        async def scenario() -> list[int]:
            async with guarded(app) as c:
                answers = await asyncio.gather(*[post(c, keys["alice"], path="/shuffled:predict") for _ in range(12)])
                return [r.status_code for r in answers]

        codes = asyncio.run(scenario())
    assert codes == [200] * 12 and rec.rows("shuffled") == 12
    assert rec.peak_in_flight == 2  # the others waited in the guard, not in the model server's queue


def test_healthz_and_metrics_expose_totals_without_principal_ids(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    # metrics.listen: proxy serves them on the proxy's port, to authenticated principals only.
    app = build_app(guard_config(tmp_path, upstream, metrics={"listen": "proxy"}))

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with guarded(app) as c:
            await post(c, keys["alice"])
            await post(c, "alice.wrong")
            await app.state.guard.drain()
            return await c.get("/healthz"), await c.get("/metrics"), await c.get("/metrics", headers={"X-API-Key": keys["bob"]})

    health, anonymous, metrics = asyncio.run(scenario())
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert anonymous.status_code == 401 and "privaudit" not in anonymous.text
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    # One request counter, shared by the proxy and monitoring: each request is counted exactly once.
    assert 'privaudit_guard_requests_total{decision="allowed"} 1.0' in text
    assert 'privaudit_guard_requests_total{decision="unauthenticated"} 1.0' in text
    assert "proxy_requests" not in text and text.count("# TYPE privaudit_guard_requests_total counter") == 1
    counters = {line.split()[2].removesuffix("_total") for line in text.splitlines() if line.startswith("# TYPE ") and line.endswith(" counter")}
    samples = [re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")]
    counted = [name for name in samples if name.removesuffix("_total").removesuffix("_created") in counters]
    assert counted and all(name.endswith(("_total", "_created")) for name in counted)
    assert "alice" not in text and "key:" not in text


def test_reload_picks_up_a_revoked_key_without_dropping_in_flight_requests(tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from privaudit.guard.identity import revoke_key

    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_model(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200, json={"predictions": [[0.1, 0.2, 0.7]]})

    config_path = tmp_path / "guard.yaml"
    config_path.write_text("upstream: http://model.internal:8080\nidentity: {api_keys: {file: keys.yaml}}\nlimits: {default: 100/minute}\n")
    app = build_app(load_config(config_path), monitor=FakeMonitor(), upstream_transport=httpx.MockTransport(slow_model))

    async def scenario() -> list[int]:
        async with guarded(app) as c:
            in_flight = asyncio.create_task(post(c, keys["alice"]))
            await entered.wait()
            revoke_key(tmp_path / "keys.yaml", "alice")
            app.state.guard.reload()  # what SIGHUP runs
            release.set()
            finished = await in_flight
            return [finished.status_code, (await post(c, keys["alice"])).status_code, (await post(c, keys["bob"])).status_code]

    assert asyncio.run(scenario()) == [200, 401, 200]


def test_a_broken_file_on_reload_keeps_the_running_configuration(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text(f"upstream: {upstream}\nidentity: {{api_keys: {{file: keys.yaml}}}}\nlimits: {{default: 100/minute}}\n")
    app = build_app(load_config(path), monitor=FakeMonitor())
    path.write_text(path.read_text().replace("100/minute", "100/fortnight"))
    with pytest.raises(ConfigError, match="limits.default"):
        app.state.guard.reload()
    assert app.state.guard.config.limits.default == "100/minute"
    asyncio.run(app.state.guard.aclose())


def test_middleware_guards_an_app_that_serves_the_model_itself(tmp_path: Path, keys: dict[str, str], model: Any) -> None:
    mon = FakeMonitor()
    inner = iris_app(model, FEATURES, CLASSES, Recorder())
    app = GuardMiddleware(inner, guard_config(tmp_path, None, hardening={"default": {"output": "label"}}), monitor=mon,
                          passthrough=("GET /health",))

    async def scenario() -> list[httpx.Response]:
        async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
            hdr = {"X-API-Key": keys["alice"]}
            return [await post(c, keys["alice"], 3), await post(c, None, 3), await c.get("/health"),
                    await c.put("/v1/models/iris:predict", json={"instances": rows(3)}, headers=hdr),
                    await c.get("/v1/models/iris:predict", headers=hdr)]

    ok, refused, health, put, get = asyncio.run(scenario())
    assert ok.status_code == 200 and ok.json() == {"predictions": CLASSES}
    assert refused.status_code == 401 and health.text == "ok"
    # Methods the middleware does not explicitly pass are guarded: nothing reaches the model unguarded.
    assert put.status_code == 404 and get.status_code == 404
    assert mon.decisions() == ["allowed", "unauthenticated"] and mon.closed  # the lifespan shutdown closed it


def test_shutdown_closes_the_monitor(tmp_path: Path, upstream: str, keys: dict[str, str]) -> None:
    mon = FakeMonitor()
    app = build_app(guard_config(tmp_path, upstream), monitor=mon)

    async def scenario() -> None:
        async with lifespan(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard") as c:
            assert (await post(c, keys["alice"])).status_code == 200
            assert not mon.closed

    asyncio.run(scenario())
    assert mon.closed


# --- the command line ---------------------------------------------------------------------------------


def test_add_key_and_revoke_key_round_trip(tmp_path: Path) -> None:
    cfg = tmp_path / "guard.yaml"
    cfg.write_text("upstream: http://127.0.0.1:9\nidentity: {api_keys: {file: keys.yaml}}\nlimits: {default: 5/second}\n")
    runner = CliRunner()
    added = runner.invoke(guard_app, ["add-key", "dave", "--tier", "pro", "--config", str(cfg)])
    assert added.exit_code == 0, added.output
    presented = added.stdout.strip().splitlines()[0]
    assert presented.startswith("dave.")
    store = KeyStore(tmp_path / "keys.yaml")
    assert store.authenticate(presented).id == "key:dave" and store.authenticate(presented).tier == "pro"
    revoked = runner.invoke(guard_app, ["revoke-key", "dave", "--keys-file", str(tmp_path / "keys.yaml")])
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(AuthError, match="revoked"):
        KeyStore(tmp_path / "keys.yaml").authenticate(presented)
    assert yaml.safe_load((tmp_path / "keys.yaml").read_text())["keys"]["dave"]["revoked"] is True
    again = runner.invoke(guard_app, ["add-key", "dave", "--keys-file", str(tmp_path / "keys.yaml")])
    assert isinstance(again.exception, ConfigError) and "already exists" in str(again.exception)
    missing = runner.invoke(guard_app, [])
    assert isinstance(missing.exception, ConfigError) and "--config" in str(missing.exception)


@pytest.mark.slow
def test_the_cli_serves_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path, upstream: str) -> None:
    keys = make_keys(tmp_path / "keys.yaml", {"erin": "default"})
    port, metrics_port = free_port(), free_port()
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(f"upstream: {upstream}\nlisten: {{port: {port}}}\nidentity: {{api_keys: {{file: keys.yaml}}}}\n"
                   "limits: {default: 100/minute}\nhardening: {default: {output: label}}\n"
                   f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}\n")
    code = "import sys; from privaudit.guard.cli import guard_app; guard_app(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "--config", str(cfg), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        with httpx.Client(base_url=base) as client:
            assert post(client, keys["erin"]).json() == {"predictions": [0]}  # no classes configured: label indices
            # Metrics live on their own listener, not on the proxy's port.
            assert client.get("/metrics").status_code == 404
            assert "privaudit_guard_requests_total" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            subprocess.run([sys.executable, "-c", code, "revoke-key", "erin", "--config", str(cfg)], check=True, capture_output=True)
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while post(client, keys["erin"]).status_code != 401:
                assert time.monotonic() < deadline, "the revoked key still works after SIGHUP"
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown (closing the monitor), then re-raises SIGTERM.
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        assert proc.stdout is not None and "Application shutdown complete" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_the_upstream_pool_reuses_one_kept_alive_connection(upstream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from privaudit.guard import upstream as pool_module

    opened: list[int] = []
    original = pool_module.UpstreamPool._open

    async def counted(self: Any) -> Any:
        opened.append(1)
        return await original(self)

    monkeypatch.setattr(pool_module.UpstreamPool, "_open", counted)

    async def scenario() -> list[int]:
        pool = pool_module.UpstreamPool(upstream, 4)
        try:
            return [(await pool.post("/v1/models/iris:predict", b'{"instances":[[5.1,3.5,1.4,0.2]]}', "t", 5.0)).status_code
                    for _ in range(5)]
        finally:
            await pool.aclose()

    assert asyncio.run(scenario()) == [200] * 5
    assert len(opened) == 1  # one connection for five sequential requests, not one each


@pytest.mark.parametrize("body", [
    b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}', b'{"instances":[[1,2],[3,4]]}', b'{"instances": [[-0.0, 1e-5, 2E3, 7]]}',
    b'{"instances": [[1, 2], [3]]}', b'{"instances": [[[1, 2]]]}', b'{"instances": [1, 2]}', b'{"instances": []}',
    b'{"instances": [[]]}', b'{"instances": [[true, 1]]}', b'{"instances": [[null, 1]]}', b'{"instances": [["1", 2]]}',
    b'{"instances": [[1, 2]], "instances": [[3, 4]]}', b'{"instance\\u0073": [[1, 2]]}', b'{"other": [[1, 2]]}',
    b'{"instances": [[' + b"1" * 41 + b', 2]]}', b'{"instances": [[1e999, 2]]}', b'{"instances": [[NaN, 2]]}',
    b'{"instances": [[1e300, 2]]}', b'{"instances": [[1, 2]]', b'[[1, 2]]', b'{"instances": [[1, 2,]]}',
    b'{"instances": [[12345678901234567890123, 2]]}', b'\xff{"instances": [[1]]}', b' {"instances" : [ [ 1 , 2 ] ] } ',
])
def test_the_fast_reader_accepts_and_refuses_exactly_what_the_exact_reader_does(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from privaudit.guard import wire as wire_module
    from privaudit.guard.config import RequestLimitsConfig
    from privaudit.models._http_protocols import WireFormat

    fmt, limits = WireFormat("kserve-v1"), RequestLimitsConfig()

    def read() -> Any:
        try:
            return wire_module.parse_request(fmt, body, limits).tolist()
        except ValueError as exc:
            return str(exc)

    fast = read()
    monkeypatch.setattr(wire_module, "_fast_records", lambda body, limits: None)
    assert fast == read()


def test_records_are_sent_upstream_as_wire_format_would_send_them() -> None:
    from privaudit.guard.wire import encode_records
    from privaudit.models._http_protocols import WireFormat

    X = np.array([[0.1, -0.0, 1e-300, 1.7e308], [1.0, 2.5, 3e16, 0.3333333333333333]])
    for fmt in (WireFormat("kserve-v1"), WireFormat("v2"), WireFormat("custom", input_field="data.rows")):
        assert json.loads(encode_records(fmt, X)) == json.loads(fmt.encode(X))


def test_plain_kserve_bodies_take_the_fast_reader() -> None:
    from privaudit.guard.config import RequestLimitsConfig
    from privaudit.guard.wire import _fast_records

    X = _fast_records(b'{"instances": [[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4]]}', RequestLimitsConfig())
    assert X is not None and X.tolist() == [[5.1, 3.5, 1.4, 0.2], [1.0, 2.0, 3.0, 4.0]]
