"""``privaudit scan`` on the command line: the same writers, gate, baseline, policy suppressions and
exit codes as ``privaudit audit``."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run

FIXTURES = Path(__file__).parent / "fixtures" / "scan"


@pytest.fixture
def iac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plain_terminal: None) -> Path:
    """A copy of the Terraform fixtures inside the working directory, as in a repository checkout."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(FIXTURES / "terraform", tmp_path / "infra")
    return tmp_path / "infra"


def _one_error_line(r: Run, *needles: str) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.err, r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_writers_and_gate(iac: Path, run: Any) -> None:
    r = run("scan", "infra", "-o", "s.json", "-o", "s.sarif", "-o", "s.html", "-o", "s.md", "-o", "s.xml", "--jobs", "1")
    out = " ".join(r.out.split())  # the console wraps long lines
    assert r.code == 1 and "gate: FAILED" in out and "ATLAS-EXF-003/fraud (high)" in out
    data = json.loads(Path("s.json").read_text())
    assert data["report_kind"] == "scan" and len(data["deployments"]) == 9
    fraud = next(d for d in data["deployments"] if d["name"] == "fraud")
    assert fraud["file"] == "infra/sagemaker.tf" and fraud["line"] > 1 and fraud["kind"] == "sagemaker_endpoint"
    assert {"aws_wafv2_web_acl.per_ip", "aws_api_gateway_stage.fraud_prod"} <= {r["address"] for r in fraud["resources"]}
    ids = {c["id"] for f in data["findings"] for c in f["checks"]}
    assert "ATLAS-EXF-003/query_limits/fraud" in ids and "ATLAS-EXF-001/capture_encryption/churn" in ids
    # SARIF: the same rule descriptors as an audit, results at the resource's file and line
    sarif = json.loads(Path("s.sarif").read_text())
    run0 = sarif["runs"][0]
    from privaudit.rules import rules

    assert [r["id"] for r in run0["tool"]["driver"]["rules"]] == list(rules())  # the audit's descriptors
    res = next(x for x in run0["results"] if x["properties"]["findingId"] == "ATLAS-EXF-003/fraud")
    loc = res["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "infra/waf.tf" and loc["region"]["startLine"] == 1
    assert "pitfall" in res["message"]["text"]
    related = [x["physicalLocation"]["artifactLocation"]["uri"] for x in res.get("relatedLocations", [])]
    assert "infra/sagemaker.tf" in related
    descriptors = {r["id"]: r for r in run0["tool"]["driver"]["rules"]}
    assert "mitre-atlas/AML.T0024.000" in descriptors["ATLAS-EXF-003"]["properties"]["tags"]
    assert res["properties"]["failingChecks"][:1] == ["query_limits"]
    from sarif_pydantic import Sarif

    log = Sarif.model_validate_json(Path("s.sarif").read_text())
    assert len(log.runs[0].results or []) == sum(f["status"] == "fail" for f in data["findings"])
    html = Path("s.html").read_text()
    assert html.count('<section class="card') == 9 and html.count("<svg") == 9 and "per-ip" in html
    assert "| `fraud` | ATLAS-EXF-003 | fail | high |" in Path("s.md").read_text()
    suites = ET.parse("s.xml").getroot()
    assert int(suites.get("failures", "0")) > 0


def test_fail_on_and_policy_suppressions(iac: Path, run: Any) -> None:
    assert run("scan", "infra", "--fail-on", "never", "--jobs", "1").code == 0
    # everything failing at high or above, suppressed in the policy file: the gate passes
    first = run("scan", "infra", "-o", "s.json", "--fail-on", "high", "--jobs", "1")
    failing = [f["id"] for f in json.loads(Path("s.json").read_text())["findings"]
               if f["status"] == "fail" and not f["suppressed"] and f["severity"] in ("high", "critical")]
    assert first.code == 1 and failing
    lines = [f'[[suppressions]]\nid = "{i}"\nreason = "accepted for the pilot"\nexpires = 2999-01-01\n' for i in failing]
    Path("privaudit.toml").write_text("\n".join(lines))
    r = run("scan", "infra", "-o", "t.json", "--jobs", "1")
    assert r.code == 0, r.out
    suppressed = {f["id"] for f in json.loads(Path("t.json").read_text())["findings"] if f["suppressed"]}
    assert set(failing) <= suppressed


def test_baseline_flags_new_failures(iac: Path, run: Any) -> None:
    assert run("scan", "infra", "-o", "base.json", "--fail-on", "never", "--jobs", "1").code == 0
    assert run("scan", "infra", "--baseline", "base.json", "--fail-on", "critical", "--jobs", "1").code == 0
    # someone drops the API-key requirement on credit's method: a new failing finding
    api = iac / "api.tf"
    api.write_text(api.read_text().replace("api_key_required = true", "api_key_required = false", 1))
    r = run("scan", "infra", "--baseline", "base.json", "--fail-on", "critical", "-o", "new.json", "--jobs", "1")
    assert r.code == 1 and "regression" in r.out
    regs = json.loads(Path("new.json").read_text())["regressions"]
    assert {x["id"] for x in regs} == {"ATLAS-EXF-003/credit", "ATLAS-EXF-001/credit"}


def test_usage_errors_exit_2(iac: Path, run: Any, tmp_path: Path) -> None:
    _one_error_line(run("scan"), "PATH", "--aws")
    _one_error_line(run("scan", "nowhere"), "nowhere", "no such file")
    _one_error_line(run("scan", "infra", "-o", "x.pdf"), "x.pdf", "unknown report format")
    _one_error_line(run("scan", "infra", "--aws-region", "us-east-1"), "need --aws")
    Path("audit.json").write_text('{"membership": {}}')
    _one_error_line(run("scan", "infra", "--baseline", "audit.json"), "not a privaudit scan report")
    (iac / "bad.tf").write_text('resource "aws_sagemaker_endpoint" "x" {\n  name = = 1\n}\n')
    _one_error_line(run("scan", "infra", "--jobs", "1"), "bad.tf", "not valid Terraform")
    (iac / "bad.tf").unlink()
    Path("s.json").write_text("keep me")
    _one_error_line(run("scan", "infra", "--policy", "missing.toml", "-o", "s.json"), "missing.toml")
    assert Path("s.json").read_text() == "keep me"  # nothing the user had is overwritten


_CFN = 'AWSTemplateFormatVersion: "2010-09-09"\nResources:\n'


def _bomb() -> str:
    text, prev = _CFN.replace("Resources:\n", "a: &a [x, x, x, x, x, x, x, x, x, x]\n"), "a"
    for name in "bcdefghi":  # nine levels of ten aliases each: 10^9 values once expanded, from 600 bytes
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = name
    return text + f"Resources:\n  E:\n    Type: AWS::SageMaker::Endpoint\n    Properties: {{Tags: *{prev}}}\n"


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("bomb.yaml", _bomb(), "expands to more than"),
    ("self.yaml", _CFN + "  E:\n    Type: AWS::SageMaker::Endpoint\n    Properties: &p {X: *p}\n", "refers to a value"),
    ("intkey.yaml", _CFN + "  E:\n    Type: AWS::SageMaker::Endpoint\n    Properties: {1: 2}\n", "unexpected structure"),
    ("rules.yaml", _CFN + "  W:\n    Type: AWS::WAFv2::WebACL\n    Properties: {Rules: [x]}\n", "unexpected structure"),
    ("kserve.yaml", "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: m, labels: [a]}\n"
                    "spec: nope\n", "unexpected structure"),
    ("plan.json", json.dumps({"format_version": "1.2", "planned_values": {"root_module": {"resources": [
        {"type": "aws_sagemaker_endpoint", "name": "e", "values": {}}]}}}), "unexpected structure"),
])
def test_hostile_iac_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any,
                                                  name: str, text: str, needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    _one_error_line(run("scan", name), name, needle)


def test_names_from_iac_are_printed_and_written_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         run: Any, plain_terminal: None) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "names.yaml").write_text(_CFN + '  Ep:\n    Type: AWS::SageMaker::Endpoint\n    Properties: '
                                         '{EndpointName: "[/x]<b>x|y</b>", EndpointConfigName: c}\n')
    r = run("scan", "names.yaml", "-o", "scan.md", "--fail-on", "never")
    assert r.code == 0, r.err  # rich markup in a name was an internal error (exit 70)
    assert "[/x]<b>" in r.out  # shown as written (the table may wrap the rest of the name)
    md = (tmp_path / "scan.md").read_text()
    assert "<b>" not in md and "\\[/x\\]&lt;b&gt;x\\|y&lt;/b&gt;" in md
