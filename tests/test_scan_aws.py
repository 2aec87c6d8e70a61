"""privaudit scan --aws against a real moto server (moto[server], started here on 127.0.0.1 on a free
port) that boto3 fills with endpoints, REST APIs, usage plans, keys and a WAF web ACL."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from privaudit.findings import CheckStatus
from privaudit.scan import AwsOptions, ScanConfig, scan

HELPER = Path(__file__).parent / "fixtures" / "scan" / "aws" / "moto_account.py"
REGION, OTHER = "us-east-1", "eu-west-1"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd"
P, F, U = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.UNKNOWN


def _helper() -> Any:
    spec = importlib.util.spec_from_file_location("moto_account", HELPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["moto_account"] = module
    spec.loader.exec_module(module)
    return module


m = _helper()


@pytest.fixture(scope="module")
def account() -> Iterator[str]:
    server, url = m.start_server()
    try:
        s = m.session(REGION)
        # captured with a customer key, behind a usage plan whose method requires an API key
        m.endpoint(s, url, REGION, "cap-on", capture="Input+Output", kms=KMS, tags={"privaudit:data-sensitivity": "health"})
        m.rest_api(s, url, REGION, "cap-on", api_key_required=True, usage_plan=True)
        # no capture; no key; a rate rule on the client IP only
        m.endpoint(s, url, REGION, "cap-off")
        info = m.rest_api(s, url, REGION, "cap-off", api_key_required=False, usage_plan=False)
        m.ip_waf(s, url, REGION, "per-ip", info["stage_arn"])
        # responses only, no customer key; a usage plan the method does not enforce (no api_key_required)
        m.endpoint(s, url, REGION, "plan-nokey", capture="Output")
        m.rest_api(s, url, REGION, "plan-nokey", api_key_required=False, usage_plan=True)
        # stage-wide throttling alone
        m.endpoint(s, url, REGION, "throttled", capture="Input", tags={"privacy:dp-epsilon": "2"})
        m.rest_api(s, url, REGION, "throttled", api_key_required=False, usage_plan=False, stage_throttle=True)
        # the same name in another region must stay a separate deployment
        m.endpoint(s, url, OTHER, "cap-on")
        yield url
    finally:
        server.stop()


def _live(url: str, session: Any = None, regions: tuple[str, ...] = (REGION,)) -> Any:
    return scan(ScanConfig(aws=AwsOptions(regions=regions, endpoint_url=url, session=session or m.session(REGION))))


def _checks(report: Any, name: str, rule: str = "ATLAS-EXF-003") -> dict[str, Any]:
    return {c.check: c for c in next(f for f in report.findings if f.id == f"{rule}/{name}").checks}


def test_live_scan_reads_the_account(account: str) -> None:
    report = _live(account)
    names = {d.name for d in report.deployments}
    assert names == {"cap-on", "cap-off", "plan-nokey", "throttled"}
    on, off = _checks(report, "cap-on"), _checks(report, "cap-off")
    assert (on["query_limits"].status, on["probing_monitoring"].status, on["capture_encryption"].status) == (P, P, P)
    assert "cap-on-plan" in on["query_limits"].evidence and KMS in on["capture_encryption"].evidence
    assert (off["query_limits"].status, off["probing_monitoring"].status) == (F, F)
    assert off["query_limits"].data["pitfall"] == "per_ip_waf" and "key IP" in off["query_limits"].evidence
    assert off["query_limits"].data["location"]["arn"].startswith("arn:aws:wafv2:us-east-1:")
    nokey = _checks(report, "plan-nokey")
    assert nokey["query_limits"].status == F and "does not require an API key" in nokey["query_limits"].evidence
    assert (nokey["probing_monitoring"].status, nokey["capture_encryption"].status) == (F, F)
    throttled = _checks(report, "throttled")
    assert throttled["query_limits"].status == F and "only stage/method throttling" in throttled["query_limits"].evidence
    assert throttled["differential_privacy"].status == P
    dep = next(d for d in report.deployments if d.name == "cap-on")
    assert dep.arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/cap-on" and dep.data_sensitivity == "health"
    assert {"usage_plan", "usage_plan_key", "method", "stage", "sagemaker_endpoint_config"} <= {r["kind"] for r in dep.resources}


def test_regions_are_scanned_separately(account: str) -> None:
    report = _live(account, regions=(REGION, OTHER))
    by_name = {d.name: d for d in report.deployments}
    assert {"cap-on@us-east-1", "cap-on@eu-west-1"} <= set(by_name)
    # eu-west-1's cap-on has no API and no capture: its graph must not borrow us-east-1's API
    assert by_name["cap-on@eu-west-1"].paths == [] and by_name["cap-on@us-east-1"].paths == ["cap-on-api stage prod"]
    assert report.provenance.aws_regions == [OTHER, REGION]


def test_denied_permission_is_unknown_and_named(account: str) -> None:
    """moto allows every call, so the denial is simulated: a botocore ``before-call`` hook on the session
    raises the ClientError AWS sends for a missing permission, for GetUsagePlans only. Every other call
    reaches the moto server as usual."""
    from botocore.exceptions import ClientError

    session = m.session(REGION)
    calls: list[str] = []

    def deny(**kwargs: Any) -> None:
        calls.append(kwargs["model"].name)
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized to perform apigateway:GET"}},
                          "GetUsagePlans")

    session.events.register("before-call.api-gateway.GetUsagePlans", deny)
    report = _live(account, session=session)
    assert calls == ["GetUsagePlans"]
    on = _checks(report, "cap-on")
    ql = on["query_limits"]
    assert ql.status == U and "apigateway:GET" in ql.evidence and "GetUsagePlans" in ql.evidence
    assert "apigateway:GET" in (ql.needs or "")
    # a check the denied call does not feed is unaffected
    assert on["probing_monitoring"].status == P
    # the per-IP FAIL also rests on usage plans being absent, so it too is UNKNOWN rather than a guess
    assert _checks(report, "cap-off")["query_limits"].status == U
    assert any("GetUsagePlans" in w for w in report.warnings)
    assert not any(f.status == "pass" for f in report.findings if f.model_name == "cap-on")


def test_throttling_is_retried(account: str) -> None:
    """Two ThrottlingException answers for ListEndpoints, then the real call: botocore's retry mode
    (set by the reader) retries them, and the scan sees every endpoint."""
    session = m.session(REGION)
    left = [2]

    def throttle(request: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            from botocore.awsrequest import AWSResponse

            class _Raw:
                def stream(self, **_: Any) -> Iterator[bytes]:
                    yield b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'

            return AWSResponse(request.url, 400, {"x-amzn-requestid": "x"}, _Raw())
        return None

    session.events.register("before-send.sagemaker.ListEndpoints", throttle)
    report = _live(account, session=session)
    assert left[0] == 0 and {"cap-on", "cap-off", "plan-nokey", "throttled"} <= {d.name for d in report.deployments}


def test_denied_listing_is_never_an_empty_pass(account: str) -> None:
    """With ListEndpoints denied (same before-call hook) the account's endpoints are unknown: the scan
    says so with exit code 3 rather than reporting zero findings."""
    from botocore.exceptions import ClientError

    from privaudit.errors import NothingAuditable

    session = m.session(REGION)

    def deny(**kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "ListEndpoints")

    session.events.register("before-call.sagemaker.ListEndpoints", deny)
    with pytest.raises(NothingAuditable, match="sagemaker:ListEndpoints was denied in us-east-1") as exc:
        _live(account, session=session)
    assert exc.value.exit_code == 3


def test_cli_live_scan_points_sarif_at_arns(account: str, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            plain_terminal: None) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    for key, value in m.ACCOUNT_KEYS.items():
        monkeypatch.setenv(key.upper(), value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    r = run("scan", "--aws", "--aws-region", REGION, "--aws-endpoint-url", account, "-o", "live.sarif", "-o", "live.json")
    assert r.code == 1 and "ATLAS-EXF-001/cap-off (high)" in " ".join(r.out.split())
    sarif = json.loads((tmp_path / "live.sarif").read_text())
    res = next(x for x in sarif["runs"][0]["results"] if x["properties"]["findingId"] == "ATLAS-EXF-003/cap-off")
    first = res["locations"][0]
    assert first["physicalLocation"]["artifactLocation"]["uri"] == "README.md"  # GitHub needs a file; no policy file here
    assert first["logicalLocations"][0]["fullyQualifiedName"].startswith("arn:aws:wafv2:us-east-1:")
    deps = json.loads((tmp_path / "live.json").read_text())["deployments"]
    assert {d["arn"] for d in deps} >= {"arn:aws:sagemaker:us-east-1:123456789012:endpoint/cap-off"}
