"""Policy files (privaudit.toml, [tool.privaudit]), suppressions, and the guard configuration reader."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio

import privaudit
from privaudit.ci import gate
from privaudit.ci.controls import load_controls, parse_guard_config
from privaudit.errors import ConfigError
from privaudit.findings import CheckStatus, Severity
from privaudit.ci.policy import Suppression, apply_suppressions, find_policy_file, load_settings
from privaudit.report.schema import Report
from privaudit.rules import Policy
from tests.conftest import Run, write_readmission

LABEL = "readmitted_30d"
TREE = "sklearn.tree._tree.Tree"
FAST = ["--attacks", "loss", "--reference-models", "2", "--jobs", "1", "--no-cache", "--bootstrap", "20",
        "--trust", TREE]
TODAY = dt.date(2030, 6, 15)


@dataclass(frozen=True)
class Files:
    train: Path
    holdout: Path
    forest: Path  # fits its training half: moderate leakage the loss attack alone proves


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    from sklearn.ensemble import RandomForestClassifier

    d = tmp_path_factory.mktemp("policy-data")
    train, holdout, df = write_readmission(d, LABEL)
    sio.dump(RandomForestClassifier(n_estimators=30, random_state=0).fit(df.drop(columns=[LABEL]), df[LABEL]), d / "forest.skops")
    return Files(train, holdout, d / "forest.skops")


@pytest.fixture(scope="module")
def forest_report(files: Files) -> Report:
    """A real report whose ATLAS-EXF-003 finding fails on two checks (attack_power and overfitting)."""
    return privaudit.audit(str(files.forest), str(files.train), str(files.holdout), label=LABEL, attacks=["loss"],
                           reference_models=0, cache_dir=False, n_bootstrap=20, what_if=False, trust=[TREE],
                           policy=Policy(data_sensitivity="internal"))


@pytest.fixture(autouse=True)
def _here(plain_terminal: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path




def _audit(f: Files, *extra: Any) -> list[Any]:
    return ["audit", "--model", f.forest, "--train", f.train, "--holdout", f.holdout, "--label", LABEL, *FAST, *extra]


def one_error_line(r: Run, *needles: str) -> str:
    assert r.code == 2, (r.code, r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.err
    assert "Traceback" not in r.out + r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --- finding and reading the policy ---------------------------------------------------------------


def test_defaults_without_a_policy_file(tmp_path: Path) -> None:
    assert find_policy_file(tmp_path) is None
    s = load_settings(cwd=tmp_path)
    assert s.policy == Policy() and s.fail_on == "high" and s.model_name is None
    assert s.suppressions == () and s.source is None


def test_privaudit_toml_is_read(tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", """
        data_sensitivity = "pii"
        fail_on = "medium"
        model_name = "churn"
        max_generalization_gap = 0.02
        max_tpr_ratio = 3
        confidence = 0.99
        max_epsilon = 4

        [[suppressions]]
        id = "ATLAS-EXF-001/churn"
        reason = "inversion is out of scope for tabular churn data"
        expires = 2031-01-31
    """)
    s = load_settings(cwd=tmp_path)
    assert s.source == tmp_path / "privaudit.toml"
    assert s.policy == Policy(data_sensitivity="pii", max_generalization_gap=0.02, max_tpr_ratio=3.0, confidence=0.99,
                              max_epsilon=4.0)
    assert (s.fail_on, s.model_name) == ("medium", "churn")
    assert s.suppressions == (Suppression(id="ATLAS-EXF-001/churn",
                                          reason="inversion is out of scope for tabular churn data",
                                          expires=dt.date(2031, 1, 31)),)


def test_pyproject_table_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", """
        [project]
        name = "x"

        [tool.privaudit]
        data_sensitivity = "health"
        fail_on = "low"
    """)
    assert find_policy_file(tmp_path) == tmp_path / "pyproject.toml"
    s = load_settings(cwd=tmp_path)
    assert s.policy.data_sensitivity == "health" and s.fail_on == "low"


def test_pyproject_without_the_table_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert find_policy_file(tmp_path) is None


def test_privaudit_toml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.privaudit]\nfail_on = "low"\n')
    write(tmp_path / "privaudit.toml", 'fail_on = "critical"\n')
    assert load_settings(cwd=tmp_path).fail_on == "critical"


def test_policy_option_replaces_the_lookup(tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", 'fail_on = "critical"\n')
    other = write(tmp_path / "team.toml", 'fail_on = "medium"\n')
    s = load_settings(other, cwd=tmp_path)
    assert s.fail_on == "medium" and s.source == other
    (tmp_path / "sub").mkdir()
    proj = write(tmp_path / "sub" / "pyproject.toml", '[tool.privaudit]\ndata_sensitivity = "financial"\n')
    assert load_settings(proj).policy.data_sensitivity == "financial"


def test_flags_override_the_file(tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", """
        data_sensitivity = "pii"
        fail_on = "medium"
        model_name = "from-file"
        max_generalization_gap = 0.02
    """)
    s = load_settings(cwd=tmp_path, fail_on="never", data_sensitivity="public", model_name="from-flag")
    assert (s.fail_on, s.policy.data_sensitivity, s.model_name) == ("never", "public", "from-flag")
    assert s.policy.max_generalization_gap == 0.02  # what the flags do not set still comes from the file


@pytest.mark.parametrize(("text", "needles"), [
    ('max_gap = 0.1\n', ["unknown key 'max_gap'", "max_generalization_gap"]),
    ('data_sensitivity = "secret"\n', ["data_sensitivity", "health"]),
    ('fail_on = "sometimes"\n', ["fail_on"]),
    ('max_tpr_ratio = -1\n', ["max_tpr_ratio"]),
    ('max_tpr_ratio = "high"\n', ["max_tpr_ratio"]),
    ('max_tpr_ratio = 0.5\n', ["max_tpr_ratio", "at least 1"]),
    ('confidence = 1.0\n', ["confidence", "below 1"]),
    ('min_resolved_fpr = 0\n', ["min_resolved_fpr"]),
    ('max_auc = 0.6\n', ["'max_auc' was removed", "max_tpr_ratio"]),
    ('[[suppressions]]\nid = "A/m"\nexpires = 2031-01-01\n', ["suppressions[0].reason", "required"]),
    ('[[suppressions]]\nid = "A/m"\nreason = "ok"\n', ["suppressions[0].expires", "required"]),
    ('[[suppressions]]\nid = "A/m"\nreason = "  "\nexpires = 2031-01-01\n', ["suppressions[0].reason", "empty"]),
    ('[[suppressions]]\nid = "A/m"\nreason = "ok"\nexpires = "soon"\n', ["suppressions[0].expires"]),
    ('[[suppressions]]\nid = "A/m"\nreason = "ok"\nexpires = 2031-01-01\nowner = "me"\n',
     ["unknown key 'suppressions[0].owner'", "id, reason, expires"]),
    ("fail_on = \n", ["not valid TOML"]),
])
def test_bad_policy_is_one_line_naming_file_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path / "privaudit.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for n in needles:
        assert n in msg, (n, msg)


def test_bad_key_in_pyproject_names_the_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.privaudit]\nfail_onn = "low"\n')
    with pytest.raises(ConfigError, match=r"pyproject\.toml \[tool\.privaudit\]: unknown key 'fail_onn'"):
        load_settings(cwd=tmp_path)


def test_missing_policy_file_and_pyproject_without_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such policy file"):
        load_settings(tmp_path / "nope.toml")
    proj = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"no \[tool\.privaudit\] table"):
        load_settings(proj)


@pytest.mark.parametrize(("flag", "value"), [("fail_on", "severe"), ("data_sensitivity", "secret"), ("model_name", " ")])
def test_bad_flag_values(tmp_path: Path, flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}"):
        load_settings(cwd=tmp_path, **{flag: value})


# --- suppressions on a report ---------------------------------------------------------------------------


def _membership(report: Report) -> Any:
    return next(f for f in report.findings if f.rule_id == "ATLAS-EXF-003")


def test_the_fixture_fails_on_two_checks(forest_report: Report) -> None:
    f = _membership(forest_report)
    assert f.failed and {c.check for c in f.checks if c.status == CheckStatus.FAIL} == {"attack_power", "overfitting"}


def test_finding_suppression(forest_report: Report) -> None:
    f = _membership(forest_report)
    rep = apply_suppressions(forest_report, [Suppression(id=f.id, reason="accepted by the DPO", expires=TODAY)], TODAY)
    g = _membership(rep)
    assert g.suppressed and g.suppression_reason == "accepted by the DPO" and not g.failed
    assert g.status == "fail" and g.severity == f.severity  # still reported as it is
    assert rep.regressions == [] and rep.warnings == forest_report.warnings
    assert gate.exit_code(rep, "low") == 0
    assert gate.exit_code(forest_report, "low") == 1


def test_check_suppression_needs_every_failing_check(forest_report: Report) -> None:
    f = _membership(forest_report)
    by_check = {c.check: c for c in f.checks}
    one = [Suppression(id=by_check["overfitting"].id, reason="retraining next sprint", expires=TODAY)]
    rep = apply_suppressions(forest_report, one, TODAY)
    g = _membership(rep)
    assert not g.suppressed and g.failed
    marked = next(c for c in g.checks if c.check == "overfitting")
    assert marked.status == CheckStatus.FAIL  # the check keeps its status; it is marked, not rewritten
    assert marked.data["suppressed"] is True and marked.data["suppression_reason"] == "retraining next sprint"
    both = [*one, Suppression(id=by_check["attack_power"].id, reason="labels only in production", expires=TODAY)]
    g = _membership(apply_suppressions(forest_report, both, TODAY))
    assert g.suppressed and not g.failed
    assert g.suppression_reason == "labels only in production; retraining next sprint"  # in check order


def test_a_suppression_holds_through_its_expiry_day(forest_report: Report) -> None:
    s = Suppression(id=_membership(forest_report).id, reason="r", expires=TODAY)
    assert _membership(apply_suppressions(forest_report, [s], TODAY)).suppressed
    rep = apply_suppressions(forest_report, [s], TODAY + dt.timedelta(days=1))
    assert not _membership(rep).suppressed


def test_expired_suppression_is_reported_and_fails_the_gate(forest_report: Report) -> None:
    f = _membership(forest_report)
    s = Suppression(id=f.id, reason="was fine last year", expires=dt.date(2029, 12, 31))
    rep = apply_suppressions(forest_report, [s], TODAY)
    assert not _membership(rep).suppressed
    assert [(r.kind, r.id, r.before, r.after) for r in rep.regressions] == [
        ("expired_suppression", f.id, "2029-12-31", "2030-06-15")]
    assert any("expired on 2029-12-31" in w for w in rep.warnings)
    # the finding itself is medium (below the default level): the expired suppression alone fails it
    assert _membership(rep).severity == Severity.MEDIUM
    assert gate.exit_code(rep) == 1 and gate.exit_code(rep, "critical") == 1 and gate.exit_code(rep, "never") == 0


def test_unmatched_suppression_is_a_warning_only(forest_report: Report) -> None:
    rep = apply_suppressions(forest_report, [Suppression(id="ATLAS-EXF-003/other-model", reason="r", expires=TODAY)], TODAY)
    assert any("matches no failing finding" in w for w in rep.warnings)
    assert rep.regressions == [] and rep.findings == forest_report.findings


# --- through the command line -------------------------------------------------------------------------


def test_policy_file_drives_the_gate(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", 'data_sensitivity = "health"\nfail_on = "medium"\nmodel_name = "tree-v2"\n')
    out = tmp_path / "r.json"
    r = run(*_audit(files, "-o", out))
    assert r.code == 1, r.out + r.err
    rep = json.loads(out.read_text())
    assert rep["model_name"] == "tree-v2" and rep["data_sensitivity"] == "health"
    assert {f["id"] for f in rep["findings"]} == {"ATLAS-EXF-003/tree-v2", "ATLAS-EXF-001/tree-v2"}


def test_pyproject_policy_through_the_cli(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.privaudit]\ndata_sensitivity = "health"\nfail_on = "medium"\n')
    assert run(*_audit(files)).code == 1


@pytest.mark.parametrize(("flags", "code"), [
    ([], 1),
    (["--fail-on", "critical"], 0),  # medium finding, gate at critical
    (["--data-sensitivity", "public"], 0),  # moderate on public data is low, below the file's medium
    (["--model-name", "other"], 1),
])
def test_flags_override_the_file_on_the_cli(run: Any, files: Files, tmp_path: Path, flags: list[str], code: int) -> None:
    write(tmp_path / "privaudit.toml", 'data_sensitivity = "health"\nfail_on = "medium"\n')
    out = tmp_path / "r.json"
    r = run(*_audit(files, *flags, "-o", out))
    assert r.code == code, r.out + r.err
    if "--model-name" in flags:
        assert json.loads(out.read_text())["model_name"] == "other"


def test_bad_policy_key_exits_2_with_one_line(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", 'fail-on = "low"\n')
    one_error_line(run(*_audit(files)), "privaudit.toml", "unknown key 'fail-on'")


def test_suppression_through_the_cli(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", """
        data_sensitivity = "health"
        fail_on = "medium"
        [[suppressions]]
        id = "ATLAS-EXF-003/forest"
        reason = "serves labels only; see ticket 42"
        expires = 2999-12-31
    """)
    out = tmp_path / "r.json"
    r = run(*_audit(files, "-o", out))
    assert r.code == 0, r.out + r.err
    f = next(x for x in json.loads(out.read_text())["findings"] if x["rule_id"] == "ATLAS-EXF-003")
    assert f["suppressed"] is True and f["suppression_reason"] == "serves labels only; see ticket 42"
    assert "SUPPRESSED" in r.out


def test_expired_suppression_fails_at_default_settings(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", """
        [[suppressions]]
        id = "ATLAS-EXF-003/forest"
        reason = "was accepted once"
        expires = 2001-01-01
    """)
    out = tmp_path / "r.json"
    r = run(*_audit(files, "-o", out))
    assert r.code == 1, r.out + r.err  # the finding alone (low on internal data) would pass
    rep = json.loads(out.read_text())
    assert [x["kind"] for x in rep["regressions"]] == ["expired_suppression"]
    assert "expired_suppression" in r.out


def test_suppression_without_reason_exits_2(run: Any, files: Files, tmp_path: Path) -> None:
    write(tmp_path / "privaudit.toml", '[[suppressions]]\nid = "ATLAS-EXF-003/forest"\nexpires = 2999-01-01\n')
    one_error_line(run(*_audit(files)), "privaudit.toml", "suppressions[0].reason")


# --- the guard configuration ------------------------------------------------------------------------------

GUARD = """
    identity:
      api_keys: {env: GUARD_API_KEYS}
      jwt: {issuer: "https://id.example", audience: model-api}
    limits:
      default: "20/second;120/minute"
      tiers: {partner: "100/second"}
      storage: memory
    hardening:
      default: {output: top_k, k: 1, round: 2}
    detectors:
      prada: {}
      query_similarity: {threshold: 0.9}
      off_one: {enabled: false}
    upstream: {url: "http://model:8080"}
"""


def test_guard_config_to_controls(tmp_path: Path) -> None:
    path = write(tmp_path / "guard.yaml", GUARD)
    c = load_controls(path)
    assert c.source == str(path)
    assert c.per_principal_limits and "20/second;120/minute" in c.limit_description
    assert c.probing_detection and c.detectors == ("prada", "query_similarity")
    assert (c.hardening_output, c.hardening_k, c.hardening_round) == ("top_k", 1, 2)


@pytest.mark.parametrize(("data", "limits", "probing"), [
    ({"limits": {"default": "10/second"}}, False, False),  # limits but nobody to count them against
    ({"identity": {"api_keys": {"env": "K"}}}, False, False),  # identity but no limit
    ({"identity": {"api_keys": {}}, "limits": {"default": "10/second"}}, False, False),  # empty key source
    ({"identity": {"jwt": {"issuer": "x"}}, "limits": {"default": "10/minute"}}, True, False),
    ({"detectors": {"prada": None}}, False, True),
    ({"detectors": ["prada"]}, False, True),
    ({"detectors": {"prada": False}}, False, False),
    ({}, False, False),
    # the guard's own file layout: key files, JWKS, and the rate grammar of the limits library
    ({"identity": {"api_keys": {"file": "keys.yaml"}, "jwt": {"jwks_file": "jwks.json", "issuer": "i", "audience": "a"}},
      "limits": {"default": "10 per second, 100/2 minutes|1000/day", "storage": "memory://"}}, True, False),
])
def test_guard_config_rules(data: dict[str, Any], limits: bool, probing: bool) -> None:
    c = parse_guard_config(data, "g.yaml")
    assert (c.per_principal_limits, c.probing_detection) == (limits, probing)
    assert c.hardening_output is None


@pytest.mark.parametrize(("text", "needles"), [
    ("identity: [\n", ["not valid YAML", "line"]),
    ("- a\n- b\n", ["mapping"]),
    ("hardening:\n  default: {output: scores}\n", ["hardening.default.output"]),
    ("hardening:\n  default: {output: top_k, k: 0}\n", ["hardening.default.k"]),
    ("hardening:\n  default: {output: label, colour: red}\n", ["hardening.default.colour"]),
    ("limits:\n  default: 'lots'\n", ["limits.default", "'lots'"]),
    ("limits:\n  default: 20\n", ["limits.default"]),
    ("limits:\n  default: '20/second;'\n", ["limits.default", "empty rate"]),
])
def test_bad_guard_config_is_one_line(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = write(tmp_path / "guard.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_controls(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_hardening_output_defaults_like_the_guard() -> None:
    c = parse_guard_config({"hardening": {"default": {"round": 2}}}, "g.yaml")
    assert (c.hardening_output, c.hardening_round) == ("probabilities", 2)
    assert parse_guard_config({"hardening": {"tiers": {}}}, "g.yaml").hardening_output is None  # not said: unknown


def test_guard_config_feeds_the_findings(run: Any, files: Files, tmp_path: Path) -> None:
    guard = write(tmp_path / "guard.yaml", GUARD)
    out = tmp_path / "r.json"
    assert run(*_audit(files, "--guard-config", guard, "-o", out)).code == 0
    f = next(x for x in json.loads(out.read_text())["findings"] if x["rule_id"] == "ATLAS-EXF-003")
    status = {c["check"]: c["status"] for c in f["checks"]}
    assert status["query_limits"] == "PASS" and status["probing_monitoring"] == "PASS"
    assert status["confidence_exposure"] == "FAIL"  # top-1 but rounded to 2 decimals still leaks


def test_missing_guard_config_exits_2(run: Any, files: Files, tmp_path: Path) -> None:
    one_error_line(run(*_audit(files, "--guard-config", tmp_path / "nope.yaml")), "nope.yaml", "no such file")

