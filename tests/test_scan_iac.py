"""privaudit scan on infrastructure code written for these tests (tests/fixtures/scan): Terraform
across several files, CloudFormation in YAML (short intrinsic tags) and JSON, Kubernetes manifests
and a guard.yaml. Each expected status below is what the fixture's resources say, read by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from privaudit.errors import ConfigError
from privaudit.findings import CheckStatus
from privaudit.rules import Policy
from privaudit.scan import ScanConfig, scan

FIXTURES = Path(__file__).parent / "fixtures" / "scan"
P, F, U = CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.UNKNOWN


def _scan(*paths: Path, **kwargs: Any) -> Any:
    return scan(ScanConfig(paths=tuple(paths), jobs=1, **kwargs))


def _checks(report: Any, name: str, rule: str = "ATLAS-EXF-003") -> dict[str, Any]:
    finding = next(f for f in report.findings if f.id == f"{rule}/{name}")
    return {c.check: c for c in finding.checks}


@pytest.fixture(scope="module")
def terraform() -> Any:
    return _scan(FIXTURES / "terraform")


@pytest.fixture(scope="module")
def cloudformation() -> Any:
    return _scan(FIXTURES / "cloudformation")


@pytest.fixture(scope="module")
def kubernetes() -> Any:
    return _scan(FIXTURES / "kubernetes")


TERRAFORM_EXPECTED = {
    # deployment: (query_limits, confidence_exposure, probing_monitoring, capture_encryption, differential_privacy, tested)
    "credit": (P, U, P, P, P, U),
    "churn": (F, F, F, F, F, F),
    "fraud": (F, U, F, U, F, U),
    "orphan": (U, U, U, U, U, U),
    "score": (P, U, F, U, U, U),
    "batch": (F, U, F, U, U, U),
    "ranker": (F, U, F, U, U, U),
    "triage": (U, P, P, F, U, U),
    "readmit": (U, U, P, U, U, U),
}
ORDER = ("query_limits", "confidence_exposure", "probing_monitoring", "capture_encryption", "differential_privacy", "tested")


@pytest.mark.parametrize("name", sorted(TERRAFORM_EXPECTED))
def test_terraform_statuses(terraform: Any, name: str) -> None:
    got = _checks(terraform, name)
    assert tuple(got[k].status for k in ORDER) == TERRAFORM_EXPECTED[name], {k: got[k].evidence for k in ORDER}


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory: pytest.TempPathFactory, memorised: Any) -> Path:
    """A folder with one privaudit audit report, of a model named credit (an overfit forest, DP claim 2)."""
    import privaudit

    report = privaudit.audit(memorised.model, memorised.train, memorised.holdout, attacks=["loss"], reference_models=0,
                             seed=0, jobs=1, cache_dir=False, model_name="credit", claimed_epsilon=2.0)
    reports = tmp_path_factory.mktemp("reports")
    report.to_json(str(reports / "credit.json"))
    (reports / "notes.json").write_text('{"unrelated": true}')
    return reports


@pytest.fixture(scope="module")
def joined(reports_dir: Path) -> Any:
    return _scan(FIXTURES / "terraform", reports_dir=reports_dir)


def test_every_check_passes_fails_and_is_unknown_somewhere(terraform: Any, cloudformation: Any, kubernetes: Any,
                                                            joined: Any) -> None:
    seen: dict[str, set[CheckStatus]] = {k: set() for k in ORDER}
    for report in (terraform, cloudformation, kubernetes, joined):
        for f in report.findings:
            for c in f.checks:
                seen.setdefault(c.check, set()).add(c.status)
    assert all(seen[k] >= {P, F, U} for k in ORDER), seen


def test_references_across_files_build_one_graph(terraform: Any) -> None:
    dep = next(d for d in terraform.deployments if d.name == "fraud")
    files = {r["file"] for r in dep.resources}
    # endpoint in sagemaker.tf, API and stage in api.tf, web ACL and association in waf.tf
    assert {f.rsplit("/", 1)[-1] for f in files} == {"sagemaker.tf", "api.tf", "waf.tf"}
    kinds = {r["kind"] for r in dep.resources}
    assert {"sagemaker_endpoint", "sagemaker_endpoint_config", "rest_api", "stage", "method", "integration",
            "waf_acl", "waf_association"} <= kinds
    assert ("aws_wafv2_web_acl.per_ip", "aws_api_gateway_stage.fraud_prod", "protects") in {
        (e.source, e.target, e.label) for e in dep.edges}
    credit = next(d for d in terraform.deployments if d.name == "credit")
    assert {"aws_api_gateway_usage_plan.credit", "aws_api_gateway_usage_plan_key.partner"} <= {r["address"] for r in credit.resources}


def test_per_ip_waf_rule_fails_with_the_pitfall_named(terraform: Any, cloudformation: Any) -> None:
    fraud = _checks(terraform, "fraud")["query_limits"]
    assert fraud.status == F and fraud.data["pitfall"] == "per_ip_waf"
    assert "key IP" in fraud.evidence and "pitfall" in fraud.evidence
    assert fraud.data["location"]["file"].endswith("waf.tf") and fraud.data["location"]["line"] == 1
    risk = _checks(cloudformation, "risk")["query_limits"]  # CUSTOM_KEYS made only of the IP is still per IP
    assert risk.status == F and risk.data["pitfall"] == "per_ip_waf" and "CUSTOM_KEYS: ip" in risk.evidence
    # a rate rule keyed on the API-key header is per principal
    score = _checks(terraform, "score")["query_limits"]
    assert score.status == P and "x-api-key" not in score.evidence and "CUSTOM_KEYS: header" in score.evidence


def test_bypass_paths_fail_query_limits(terraform: Any, cloudformation: Any) -> None:
    batch = _checks(terraform, "batch")["query_limits"]
    assert batch.status == F and "Lambda function URL" in batch.evidence and "bypass" in batch.evidence
    loan = _checks(cloudformation, "loan")["query_limits"]  # prod has a usage plan, beta only throttles the stage
    assert loan.status == F and "stage beta" in loan.evidence and "prod" not in loan.evidence.split("(while")[0]
    churn = _checks(terraform, "churn")["query_limits"]
    assert "only stage/method throttling" in churn.evidence
    assert "HTTP API" in _checks(terraform, "ranker")["query_limits"].evidence


def test_cloudformation_intrinsics_resolve(cloudformation: Any) -> None:
    loan = next(d for d in cloudformation.deployments if d.name == "loan")
    addresses = {r["address"] for r in loan.resources}
    # GetAtt (config), Sub with ${Endpoint.EndpointName} (integration URI), Ref (stage, usage plan)
    assert {"LoanConfig", "LoanMethod.Integration", "LoanStage", "LoanBeta", "LoanPlan", "PerIpAcl"} <= addresses
    got = _checks(cloudformation, "loan")
    assert got["probing_monitoring"].status == P and got["capture_encryption"].status == P
    assert got["confidence_exposure"].status == F  # tagged privaudit:output=probabilities
    assert got["query_limits"].data["location"] == {"file": "tests/fixtures/scan/cloudformation/model-api.yaml",
                                                    "line": _line_of(FIXTURES / "cloudformation" / "model-api.yaml", "  LoanBeta:")}
    risk = next(d for d in cloudformation.deployments if d.name == "risk")  # JSON template, Fn::Join URI
    assert risk.paths == ["risk-api stage live"]


def _line_of(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.startswith(text))


def test_kubernetes_and_guard(kubernetes: Any) -> None:
    guarded = _checks(kubernetes, "credit-kserve")
    # the guard in front hardens to top-1, limits per API key and runs detectors
    assert (guarded["query_limits"].status, guarded["confidence_exposure"].status, guarded["probing_monitoring"].status) == (P, P, P)
    churn = _checks(kubernetes, "churn-kserve")
    assert churn["confidence_exposure"].status == F and "PREDICT_PROBA" in churn["confidence_exposure"].evidence
    assert churn["probing_monitoring"].status == F and churn["query_limits"].status == U
    assert churn["differential_privacy"].status == P  # annotation privaudit.io/dp-epsilon: "4"
    iris = _checks(kubernetes, "iris")
    assert iris["confidence_exposure"].status == F and "its default" in iris["confidence_exposure"].evidence
    assert iris["probing_monitoring"].status == P
    assert _checks(kubernetes, "iris-labels")["confidence_exposure"].status == P
    dep = next(d for d in kubernetes.deployments if d.name == "credit-kserve")
    assert dep.data_sensitivity == "pii" and dep.paths[0].startswith("guard ")


def test_severity_follows_the_data_sensitivity_tag(terraform: Any) -> None:
    by_id = {f.id: f for f in terraform.findings}
    fraud, churn = by_id["ATLAS-EXF-003/fraud"], by_id["ATLAS-EXF-003/churn"]
    # no audit joined: attack power assumed moderate; fraud is tagged pii, churn falls back to the policy's internal
    assert (fraud.severity.value, churn.severity.value) == ("high", "medium")
    assert "pii data (tag on fraud)" in fraud.severity_reason and "internal data (policy)" in churn.severity_reason
    hot = _scan(FIXTURES / "terraform", policy=Policy(data_sensitivity="health"))
    assert {f.id: f for f in hot.findings}["ATLAS-EXF-003/churn"].severity.value == "high"


def test_inline_suppressions(terraform: Any, cloudformation: Any, kubernetes: Any) -> None:
    score = {f.id: f for f in terraform.findings}["ATLAS-EXF-003/score"]
    pm = next(c for c in score.checks if c.check == "probing_monitoring")
    assert pm.status == F and pm.data["suppressed"] and "SEC-12" in pm.data["suppression_reason"]
    assert score.suppressed and not score.failed  # its only failing check is suppressed
    risk = {f.id: f for f in cloudformation.findings}["ATLAS-EXF-003/risk"]
    assert not risk.suppressed and next(c for c in risk.checks if c.check == "probing_monitoring").data["suppressed"]
    churn = {f.id: f for f in kubernetes.findings}
    only_001 = next(c for c in churn["ATLAS-EXF-001/churn-kserve"].checks if c.check == "probing_monitoring")
    assert only_001.data.get("suppressed") and not next(
        c for c in churn["ATLAS-EXF-003/churn-kserve"].checks if c.check == "probing_monitoring").data.get("suppressed")


def test_terraform_plan_json(tmp_path: Path) -> None:
    plan = {
        "format_version": "1.2",
        "planned_values": {"root_module": {"child_modules": [{"address": "module.ml", "resources": [
            {"address": "module.ml.aws_sagemaker_endpoint.ep", "mode": "managed", "type": "aws_sagemaker_endpoint",
             "name": "ep", "values": {"name": "planned", "endpoint_config_name": "planned-config", "tags": {}}},
            {"address": "module.ml.aws_sagemaker_endpoint_configuration.cfg", "mode": "managed",
             "type": "aws_sagemaker_endpoint_configuration", "name": "cfg",
             "values": {"name": "planned-config", "data_capture_config": [{"enable_capture": True, "kms_key_id": None,
                        "capture_options": [{"capture_mode": "Input"}]}]}},
            {"address": "module.ml.aws_api_gateway_stage.s", "mode": "managed", "type": "aws_api_gateway_stage",
             "name": "s", "values": {"stage_name": "v1", "rest_api_id": None}},
            {"address": "module.ml.aws_api_gateway_rest_api.api", "mode": "managed", "type": "aws_api_gateway_rest_api",
             "name": "api", "values": {"name": "planned-api"}},
            {"address": "module.ml.aws_api_gateway_integration.i", "mode": "managed", "type": "aws_api_gateway_integration",
             "name": "i", "values": {"uri": "arn:aws:apigateway:us-east-1:runtime.sagemaker:path//endpoints/planned/invocations",
                                     "rest_api_id": None, "http_method": "POST", "resource_id": None}}]}]}},
        "configuration": {"root_module": {"module_calls": {"ml": {"module": {"resources": [
            {"address": "aws_api_gateway_stage.s", "expressions": {"rest_api_id": {"references": [
                "aws_api_gateway_rest_api.api.id", "aws_api_gateway_rest_api.api"]}}},
            {"address": "aws_api_gateway_integration.i", "expressions": {"rest_api_id": {"references": [
                "aws_api_gateway_rest_api.api.id", "aws_api_gateway_rest_api.api"]}}}]}}}}},
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    report = _scan(tmp_path)
    got = _checks(report, "planned")
    assert got["query_limits"].status == F and "planned-api stage v1" in got["query_limits"].evidence
    assert got["probing_monitoring"].status == P and got["capture_encryption"].status == F


def test_reports_dir_joins_audit_evidence(joined: Any) -> None:
    scanned = joined
    credit = _checks(scanned, "credit")
    assert credit["tested"].status == P and "credit.json" in credit["tested"].evidence
    # the overfit forest contradicts epsilon=2, which beats the tag's 3
    assert credit["differential_privacy"].status == F and "contradicted" in credit["differential_privacy"].evidence
    assert credit["attack_power"].status == F and credit["attack_power"].id == "ATLAS-EXF-003/attack_power/credit"
    finding = {f.id: f for f in scanned.findings}["ATLAS-EXF-003/credit"]
    assert "joined audit measured attack power" in finding.severity_reason
    # with --reports, a deployment with no report there was never tested
    assert _checks(scanned, "fraud")["tested"].status == F
    assert next(d for d in scanned.deployments if d.name == "credit").audit_report.endswith("credit.json")


def test_bad_input_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "broken.tf").write_text('resource "aws_sagemaker_endpoint" "x" {\n  name = \n}\n')
    with pytest.raises(ConfigError, match=r"broken.tf: not valid Terraform"):
        _scan(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        _scan(tmp_path / "missing")
    (tmp_path / "broken.tf").unlink()
    (tmp_path / "t.yaml").write_text("Resources:\n  X: [1\n")
    with pytest.raises(ConfigError, match=r"t.yaml: not valid YAML at line"):
        _scan(tmp_path)


def test_core_install_stays_light() -> None:
    """The scan extra's libraries load only when a scan reads Terraform or AWS."""
    import subprocess
    import sys

    code = ("import sys, privaudit.cli, privaudit.scan, privaudit.scan.loader, privaudit.scan.aws, privaudit.report; "
            "privaudit.report.writers('scan'); print(sorted(m for m in ('hcl2', 'boto3', 'botocore', 'lark') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    assert out.stdout.strip() == "[]"


def test_only_modelled_resource_blocks_are_parsed() -> None:
    """The block splitter hands hcl2 only the resource types the scan models; braces inside strings,
    templates, heredocs and comments do not confuse it, and an odd file is parsed whole."""
    from privaudit.scan.hclblocks import resource_type, top_level_blocks
    from privaudit.scan.terraform import parse_tf_text

    text = (FIXTURES / "terraform" / "sagemaker.tf").read_text() + '''
variable "x" {
  default = "a}b${var.y["k"]}"
}
resource "aws_s3_bucket" "b" {
  policy = <<EOT
{ "Statement": "}" }
EOT
}
/* a comment with } */
resource "aws_sagemaker_endpoint" "extra" {
  name = "$${not_a_reference}"
}
'''
    blocks = top_level_blocks(text)
    assert blocks is not None
    types = [resource_type(text[a:b]) for a, b in blocks]
    assert types.count("aws_sagemaker_endpoint") == 7 and "aws_s3_bucket" in types and None in types
    names = {r.name for r in parse_tf_text(text, "x.tf")}
    assert {"extra", "orphan"} <= names
    assert top_level_blocks(text + "\nresource \"a\" \"b\" {\n") is None  # unbalanced: parse it whole
    assert parse_tf_text('resource "aws_s3_bucket" "only" {\n  bucket = "x"\n}\n', "s3.tf") == []
