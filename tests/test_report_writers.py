"""Report writers: JSON against the published schema, SARIF as GitHub code scanning reads it, JUnit, Markdown."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import privaudit
from privaudit import datasets
from privaudit.findings import SECURITY_SEVERITY, Check, CheckStatus, Finding, Severity
from privaudit.report import WriteOptions, render, writer_for
from privaudit.report.schema import Regression, Report
from privaudit.rules import rules

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "src" / "privaudit" / "schema" / "report.schema.json"


def _quiet_fit(model: Any, X: Any, y: Any) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


@pytest.fixture(scope="module")
def real() -> Report:
    """A real audit of the demo's overfitted MLP, kept small: three attacks, two reference models."""
    s = datasets.breast_cancer()
    model = _quiet_fit(datasets.overfit_model(), s.X_train, s.y_train)
    return privaudit.audit(model, (s.X_train, s.y_train), (s.X_holdout, s.y_holdout), reference_models=2,
                           attacks=["loss", "rmia_offline", "lira_online"], cache_dir=False, n_bootstrap=0,
                           model_name="demo", command_line=["privaudit", "audit"])


def _check(finding: Finding, key: str, status: CheckStatus, needs: str | None = None) -> Check:
    return Check(id=f"{finding.rule_id}/{key}/{finding.model_name}", check=key, title=f"{key} title",
                 status=status, evidence=f"{key} evidence", needs=needs)


def _constructed(real: Report, model_name: str = "demo") -> Report:
    """Two failing findings: a high one with a check of every status, and a suppressed one."""
    by_rule = {f.rule_id: f for f in real.findings}
    exf3, exf1 = by_rule["ATLAS-EXF-003"], by_rule["ATLAS-EXF-001"]
    renamed = {"model_name": model_name}
    exf3 = exf3.model_copy(update={**renamed, "id": f"ATLAS-EXF-003/{model_name}"})
    exf1 = exf1.model_copy(update={**renamed, "id": f"ATLAS-EXF-001/{model_name}"})
    failing = exf3.model_copy(update={
        "status": "fail", "severity": Severity.HIGH, "severity_reason": "made up for the test",
        "checks": [_check(exf3, "attack_power", CheckStatus.FAIL), _check(exf3, "overfitting", CheckStatus.FAIL),
                   _check(exf3, "tested", CheckStatus.PASS),
                   _check(exf3, "query_limits", CheckStatus.UNKNOWN, needs="pass --guard-config"),
                   _check(exf3, "review", CheckStatus.MANUAL, needs="ask the data owner")]})
    suppressed = exf1.model_copy(update={
        "status": "fail", "severity": Severity.CRITICAL, "suppressed": True,
        "suppression_reason": "accepted risk, ticket SEC-1",
        "checks": [_check(exf1, "inversion_attack", CheckStatus.FAIL),
                   _check(exf1, "attribute_inference", CheckStatus.UNKNOWN, needs="give --sensitive-attribute")]})
    regression = Regression(kind="new_finding", id=failing.id, message="ATLAS-EXF-003 fails where it passed before",
                            before=None, after="high")
    return real.model_copy(update={"findings": [failing, suppressed], "regressions": [regression],
                                   "model_name": model_name})


@pytest.fixture(scope="module")
def made(real: Report) -> Report:
    return _constructed(real)


# --- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), [
    ("out.sarif.json", "sarif"), ("OUT.SARIF.JSON", "sarif"), ("out.sarif", "sarif"), ("x.json", "json"),
    ("report.xml", "junit"), ("comment.md", "markdown"),
])
def test_registry_picks_writer_by_suffix(path: str, name: str) -> None:
    assert writer_for(path)[0] == name


# --- JSON and its published schema ---------------------------------------------------------------


def _load_gen_schema() -> Any:
    spec = importlib.util.spec_from_file_location("gen_schema", ROOT / "scripts" / "gen_schema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_schema_is_what_the_script_generates() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == _load_gen_schema().generate(), "run: python scripts/gen_schema.py"
    schema = json.loads(committed)
    assert schema["$id"] and schema["title"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_json_report_validates_against_schema(real: Report, made: Report) -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for report in (real, made):
        doc = json.loads(render(report, "report.json"))
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    bad = json.loads(render(real, "report.json"))
    bad["membership"]["attacks"][0]["auc"] = "high"
    assert not validator.is_valid(bad)


# --- SARIF ---------------------------------------------------------------------------------------


def _sarif(report: Report, options: WriteOptions | None = None) -> dict[str, Any]:
    return json.loads(render(report, "out.sarif.json", options))


def _assert_github_fields(doc: dict[str, Any]) -> None:
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    assert len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "privaudit" and driver["version"] == privaudit.__version__
    assert "informationUri" not in driver  # optional in SARIF; privaudit has no published home page to name
    assert run["invocations"] == [{"executionSuccessful": True}]
    assert run["automationDetails"]["id"]
    assert [r["id"] for r in driver["rules"]] == list(rules())
    for rule in driver["rules"]:
        assert rule["name"] and rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
        props = rule["properties"]
        assert isinstance(props["security-severity"], str) and 0.0 <= float(props["security-severity"]) <= 10.0
        assert "security" in props["tags"] and len(props["tags"]) <= 10
    for result in run["results"]:
        assert result["ruleId"] == driver["rules"][result["ruleIndex"]]["id"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"]
        assert location["region"]["startLine"] == 1
        assert result["partialFingerprints"]
        assert all(isinstance(v, str) and v for v in result["partialFingerprints"].values())


def test_sarif_has_what_github_requires(real: Report, made: Report) -> None:
    for report in (real, made):
        _assert_github_fields(_sarif(report))


def test_sarif_parses_into_sarif_pydantic_model(real: Report, made: Report) -> None:
    from sarif_pydantic import Level, Sarif

    for report in (real, made):
        text = render(report, "out.sarif")
        log = Sarif.model_validate_json(text)
        assert log.version == "2.1.0"
        (run,) = log.runs
        assert run.tool.driver.name == "privaudit"
        assert [r.id for r in run.tool.driver.rules or []] == list(rules())
        failed = [f for f in report.findings if f.status == "fail"]
        assert len(run.results or []) == len(failed)
        for result in run.results or []:
            assert result.level in (Level.ERROR, Level.WARNING, Level.NOTE)
            assert result.partial_fingerprints


def test_sarif_results_levels_and_suppressions(made: Report) -> None:
    doc = _sarif(made)
    run = doc["runs"][0]
    results = {r["ruleId"]: r for r in run["results"]}
    assert set(results) == {"ATLAS-EXF-003", "ATLAS-EXF-001"}
    high = results["ATLAS-EXF-003"]
    assert high["level"] == "error" and "suppressions" not in high
    text = high["message"]["text"]
    assert text.startswith(made.findings[0].summary)
    assert "attack_power" in text and "overfitting" in text and "query_limits" not in text
    assert high["properties"]["severity"] == "high"
    assert high["properties"]["checks"] == {"PASS": 1, "FAIL": 2, "UNKNOWN": 1, "MANUAL": 1}
    suppressed = results["ATLAS-EXF-001"]
    assert suppressed["suppressions"] == [{"kind": "external", "justification": "accepted risk, ticket SEC-1"}]
    rule_props = {r["id"]: r["properties"] for r in run["tool"]["driver"]["rules"]}
    assert rule_props["ATLAS-EXF-003"]["security-severity"] == SECURITY_SEVERITY[Severity.HIGH]
    tags = rule_props["ATLAS-EXF-003"]["tags"]
    for tag in ("security", "privacy", "mitre-atlas/AML.T0024.000", "owasp-llm/LLM02:2025", "gdpr/art-32"):
        assert tag in tags
    assert "mitre-atlas/AML.T0024.001" in rule_props["ATLAS-EXF-001"]["tags"]
    markdown = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == "ATLAS-EXF-003")["help"]["markdown"]
    assert "```python" in markdown and "```yaml" in markdown and "## Audit questions" in markdown


def test_sarif_omits_passing_findings_and_uses_base_severity(real: Report) -> None:
    passing = [f.model_copy(update={"status": "pass", "severity": Severity.INFO}) for f in real.findings]
    doc = _sarif(real.model_copy(update={"findings": passing}))
    run = doc["runs"][0]
    assert run["results"] == []
    metas = {meta.id: meta for meta, _fn in rules().values()}
    for rule in run["tool"]["driver"]["rules"]:
        assert rule["properties"]["security-severity"] == SECURITY_SEVERITY[metas[rule["id"]].base_severity]


def _fingerprints(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {r["ruleId"]: r["partialFingerprints"] for r in doc["runs"][0]["results"]}


def test_sarif_fingerprints_stable_across_retraining(real: Report, made: Report) -> None:
    retrained = made.model_copy(update={
        "provenance": made.provenance.model_copy(update={"created_at": "2030-01-01T00:00:00+00:00",
                                                         "sha256": {**made.provenance.sha256, "model": "f" * 64}}),
        "findings": [f.model_copy(update={"summary": "different numbers", "severity": Severity.MEDIUM})
                     for f in made.findings]})
    first, second = _fingerprints(_sarif(made)), _fingerprints(_sarif(retrained))
    assert first == second and len(first) == 2
    other = _fingerprints(_sarif(_constructed(real, model_name="other-model")))
    assert set(other) == set(first)
    assert all(other[k] != first[k] for k in first)


def test_sarif_location_is_the_local_model_file(made: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "clf.skops").write_bytes(b"not really a model")
    monkeypatch.chdir(tmp_path)
    local = made.model_copy(update={"model": made.model.model_copy(update={
        "path": str(tmp_path / "models" / "clf.skops"), "format": "skops"})})
    doc = _sarif(local, WriteOptions(sarif_location="privaudit.toml"))
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in doc["runs"][0]["results"]}
    assert uris == {"models/clf.skops"}


def test_sarif_location_for_an_endpoint_is_the_given_file(made: Report) -> None:
    endpoint = made.model_copy(update={"model": made.model.model_copy(update={
        "path": "https://models.example.com/v1/predict", "format": "http", "output_mode": "top_k", "k": 1})})
    doc = _sarif(endpoint, WriteOptions(sarif_location="privaudit.toml"))
    results = doc["runs"][0]["results"]
    assert results
    for result in results:
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "privaudit.toml"
    _assert_github_fields(doc)


# --- JUnit ---------------------------------------------------------------------------------------


def _junit(report: Report) -> ET.Element:
    return ET.fromstring(render(report, "report.xml"))


def test_junit_counts_match_check_statuses(real: Report, made: Report) -> None:
    for report in (real, made):
        root = _junit(report)
        assert root.tag == "testsuites"
        suites = root.findall("testsuite")
        assert len(suites) == len(report.findings)
        totals = {"tests": 0, "failures": 0, "skipped": 0}
        for suite, finding in zip(suites, report.findings):
            assert suite.get("name") == f"{finding.rule_id} {finding.title}"
            cases = suite.findall("testcase")
            assert len(cases) == len(finding.checks)
            for case, check in zip(cases, finding.checks):
                assert case.get("classname") == finding.rule_id
                assert case.get("name") == f"{check.check}: {check.title}"
            fails = sum(c.status == CheckStatus.FAIL for c in finding.checks) if not finding.suppressed else 0
            skips = len(finding.checks) - fails - sum(c.status == CheckStatus.PASS for c in finding.checks)
            assert suite.get("tests") == str(len(finding.checks))
            assert suite.get("failures") == str(fails) == str(len(suite.findall("testcase/failure")))
            assert suite.get("skipped") == str(skips) == str(len(suite.findall("testcase/skipped")))
            assert suite.get("errors") == "0"
            totals["tests"] += len(finding.checks)
            totals["failures"] += fails
            totals["skipped"] += skips
        for key, value in totals.items():
            assert root.get(key) == str(value)


def test_junit_messages(made: Report) -> None:
    root = _junit(made)
    suite = root.find("testsuite[@name='ATLAS-EXF-003 Membership inference']")
    assert suite is not None
    cases = {c.get("name", "").split(":")[0]: c for c in suite.findall("testcase")}
    failure = cases["attack_power"].find("failure")
    assert failure is not None and failure.get("message") == "attack_power evidence"
    assert "pass --guard-config" in (cases["query_limits"].find("skipped").get("message") or "")  # type: ignore[union-attr]
    assert "ask the data owner" in (cases["review"].find("skipped").get("message") or "")  # type: ignore[union-attr]
    assert cases["tested"].find("failure") is None and cases["tested"].find("skipped") is None
    suppressed = root.find("testsuite[@name='ATLAS-EXF-001 Model inversion']")
    assert suppressed is not None and suppressed.get("failures") == "0"
    assert "accepted risk" in ET.tostring(suppressed, encoding="unicode")


def test_junit_survives_control_characters(made: Report) -> None:
    finding = made.findings[0]
    dirty = finding.model_copy(update={"checks": [finding.checks[0].model_copy(update={"evidence": "bad\x00byte\x1b"})]})
    root = _junit(made.model_copy(update={"findings": [dirty]}))
    assert root.get("failures") == "1"


# --- Markdown ------------------------------------------------------------------------------------


def test_markdown_verdict_then_regressions_then_tables(made: Report) -> None:
    text = render(made, "comment.md")
    lines = text.splitlines()
    assert lines[0].startswith("**privaudit: HIGH**") and "`demo`" in lines[0]
    assert "| Rule | Severity | Status | Summary |" in text
    assert text.index("Regressions") < text.index("| Rule |")
    assert "ATLAS-EXF-001 Model inversion | critical | fail (suppressed)" in text
    assert "privaudit " + privaudit.__version__ in lines[-1]


def test_markdown_real_report(real: Report) -> None:
    text = render(real, "comment.md")
    lines = text.splitlines()
    failed = [f for f in real.findings if f.failed]
    if failed:
        worst = max(failed, key=lambda f: f.severity.rank).severity
        assert lines[0].startswith(f"**privaudit: {worst.value.upper()}**")
    else:
        assert lines[0].startswith("**privaudit: no findings**")
    assert "| Attack | AUC | TPR@1% FPR | TPR@0.1% FPR | TPR@0.01% FPR |" in text
    for attack in real.membership.attacks:
        assert attack.name in text
    if any(v is None for a in real.membership.attacks for v in a.tpr_at_fpr.values()):
        assert "n/a" in text
    if real.what_if:
        assert "| Serving |" in text
    assert "Regressions" not in text
    assert len(lines) < 60
    assert re.search(r"<sub>privaudit .* model .*</sub>", lines[-1])


def test_markdown_no_findings(real: Report) -> None:
    passing = [f.model_copy(update={"status": "pass", "severity": Severity.INFO}) for f in real.findings]
    text = render(real.model_copy(update={"findings": passing, "regressions": []}), "comment.md")
    assert text.startswith("**privaudit: no findings**")


def test_write_report_writes_every_format(made: Report, tmp_path: Path) -> None:
    from privaudit.report import write_report

    for name in ("r.json", "r.sarif.json", "r.xml", "r.md"):
        write_report(made, str(tmp_path / name), WriteOptions(sarif_location="README.md"))
        assert (tmp_path / name).read_text(encoding="utf-8") == render(made, name, WriteOptions(sarif_location="README.md"))
    assert os.path.getsize(tmp_path / "r.sarif.json") > 0
