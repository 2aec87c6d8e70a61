"""Compare a report with an earlier one (``--baseline``) and list what got worse.

A regression is one of: a finding that fails now and did not before (by finding id); a failing finding
whose severity went up; a stronger best attack; a wider train-holdout gap. The last two compare two
measurements, each with its sampling noise, so each is a test, and the two hold together at the policy's
``confidence`` (95 % by default, each comparison then at 97.5 %). The best attack is stronger when its TPR's
95 % interval at 0.1 % FPR (1 % when 0.1 % is not resolvable) lies wholly above the baseline's, or, without
intervals, when the AUC rose by more than 0.02 and beyond chance (Hanley-McNeil standard errors). The gap
is wider when it grew by more than 0.01 and beyond chance (binomial standard errors).
bench/results/regressions.md measures how often a private model re-audited on fresh data is flagged, and
whether a model that starts memorising is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pydantic import ValidationError

from privaudit import metrics
from privaudit.errors import ConfigError
from privaudit.findings import Finding
from privaudit.report.monitor_schema import MONITOR_KIND, MONITOR_SCHEMA_VERSION, MonitorReport
from privaudit.report.scan_schema import SCAN_SCHEMA_VERSION, ScanReport
from privaudit.report.schema import SCHEMA_VERSION, AttackReport, Regression, Report

AUC_TOLERANCE = 0.02
GAP_TOLERANCE = 0.01
CONFIDENCE = 0.95  # default for both measurement comparisons together (Bonferroni: each at 97.5 %)


def _read_json(path: str | Path, where: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg} at line {exc.lineno}); pass a privaudit .json report") from None
    return data


def load_baseline(path: str | Path) -> Report:
    """Read an earlier JSON report; any problem is a one-line ConfigError naming the file."""
    where = f"--baseline {path}"
    data = _read_json(path, where)
    if isinstance(data, dict) and data.get("report_kind") == "scan":
        raise ConfigError(f"{where}: a privaudit scan report; an audit compares with an earlier audit report")
    if not isinstance(data, dict) or "membership" not in data:
        raise ConfigError(f"{where}: not a privaudit JSON report (write one with -o report.json)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema_version {version!r}, but this privaudit reads version {SCHEMA_VERSION}; "
                          "regenerate the baseline with this version")
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}: not a valid privaudit report ({loc}: {err['msg']})") from None


def _best(report: Report) -> AttackReport | None:
    m = report.membership
    return next((a for a in m.attacks if a.name == m.best), None)


def _check_id(report: Report, check: str) -> str:
    """The id of the membership check a measurement belongs to, so regressions line up with findings."""
    for f in report.findings:
        for c in f.checks:
            if c.check == check:
                return c.id
    return f"membership/{check}/{report.model_name or 'model'}"


def _attack_power(current: Report, baseline: Report, each: float) -> Regression | None:
    now, before = _best(current), _best(baseline)
    if now is None or before is None:
        return None
    key = next((k for k in ("0.001", "0.01") if before.tpr_at_fpr.get(k) is not None), None)
    was = before.tpr_at_fpr_detail.get(key) if key else None
    is_ = now.tpr_at_fpr_detail.get(key) if key else None
    rid = _check_id(current, "attack_power")
    if key is not None and was is not None and is_ is not None and was.ci_high is not None and is_.ci_low is not None:
        if is_.ci_low > was.ci_high:  # the two 95 % intervals do not overlap
            return Regression(kind="attack_power", id=rid,
                              message=(f"attack power up: {now.name} reaches TPR {is_.tpr:.2%} at {float(key):.1%} FPR "
                                       f"(95% interval from {is_.ci_low:.2%}), above the baseline's {before.name} "
                                       f"{was.tpr:.2%} (95% interval up to {was.ci_high:.2%})"),
                              before={"attack": before.name, "fpr": key, "tpr": was.tpr, "ci_high": was.ci_high},
                              after={"attack": now.name, "fpr": key, "tpr": is_.tpr, "ci_low": is_.ci_low})
        return None
    var_now = metrics.auc_standard_error(now.auc, current.data.train, current.data.holdout) ** 2
    var_before = metrics.auc_standard_error(before.auc, baseline.data.train, baseline.data.holdout) ** 2
    low = metrics.increase_lower_bound(now.auc, var_now, before.auc, var_before, each)
    if now.auc > before.auc + AUC_TOLERANCE and low > 0:
        return Regression(kind="attack_power", id=rid,
                          message=(f"attack power up: best AUC {now.auc:.3f} ({now.name}) against the baseline's "
                                   f"{before.auc:.3f} ({before.name}): more than {AUC_TOLERANCE} higher, and higher "
                                   f"beyond chance (by at least {low:.3f} at {each:.1%} confidence)"),
                          before={"attack": before.name, "auc": before.auc}, after={"attack": now.name, "auc": now.auc})
    return None


def _wider_gap(current: Report, baseline: Report, each: float) -> Regression | None:
    now, before = current.membership, baseline.membership
    gap_now, gap_before = now.generalization_gap, before.generalization_gap
    low = metrics.increase_lower_bound(
        gap_now, metrics.gap_variance(now.train_accuracy, current.data.train, now.holdout_accuracy, current.data.holdout),
        gap_before, metrics.gap_variance(before.train_accuracy, baseline.data.train, before.holdout_accuracy,
                                         baseline.data.holdout), each)
    if gap_now > gap_before + GAP_TOLERANCE and low > 0:
        return Regression(kind="generalization_gap", id=_check_id(current, "overfitting"), before=gap_before,
                          after=gap_now, message=(f"train-holdout gap widened from {gap_before:.3f} to {gap_now:.3f}: "
                                                  f"more than {GAP_TOLERANCE}, and beyond chance (by at least "
                                                  f"{low:.3f} at {each:.1%} confidence)"))
    return None


def finding_regressions(current: Sequence[Finding], baseline: Sequence[Finding]) -> list[Regression]:
    """New failing findings and higher severities, by finding id (audits and scans alike)."""
    out: list[Regression] = []
    old = {f.id: f for f in baseline}
    for f in current:
        if not f.failed:
            continue
        prev = old.get(f.id)
        if prev is None or not prev.failed:
            was = "absent" if prev is None else ("suppressed" if prev.suppressed else prev.status)
            out.append(Regression(kind="new_finding", id=f.id, before=was, after=f.severity.value,
                                  message=f"new failing finding {f.id} ({f.severity.value}): {f.title}; in the baseline it was {was}"))
        elif f.severity.rank > prev.severity.rank:
            out.append(Regression(kind="higher_severity", id=f.id, before=prev.severity.value, after=f.severity.value,
                                  message=f"{f.id} severity up from {prev.severity.value} to {f.severity.value}: {f.severity_reason}"))
    return out


def compare(current: Report, baseline: Report, confidence: float = CONFIDENCE) -> list[Regression]:
    """Everything that got worse since ``baseline`` (assumed to be the same model); the two measurement
    comparisons hold together at ``confidence`` (the policy's)."""
    each = 1 - (1 - confidence) / 2
    out = finding_regressions(current.findings, baseline.findings)
    power = _attack_power(current, baseline, each)
    if power is not None:
        out.append(power)
    gap = _wider_gap(current, baseline, each)
    if gap is not None:
        out.append(gap)
    return out


def apply_baseline(report: Report, baseline: Report, source: str | Path = "baseline",
                   confidence: float = CONFIDENCE) -> tuple[Report, str | None]:
    """The report with regressions against ``baseline`` added, and a warning if the two could not be compared."""
    if baseline.model_name != report.model_name:
        msg = (f"baseline {source} is for model {baseline.model_name!r}, this audit is {report.model_name!r}: not "
               "compared (pass --model-name so both runs use the same name)")
        return report.model_copy(update={"warnings": [*report.warnings, msg]}), msg
    found = compare(report, baseline, confidence)
    return report.model_copy(update={"regressions": [*report.regressions, *found]}), None



Loaded = TypeVar("Loaded", ScanReport, MonitorReport)


def _load_kind(path: str | Path, model: type[Loaded], kind: tuple[str, str], version: int, name: str) -> Loaded:
    """An earlier report of one kind (``kind``: the JSON key and value that mark it); any problem is one line."""
    where = f"--baseline {path}"
    data = _read_json(path, where)
    if not isinstance(data, dict) or data.get(kind[0]) != kind[1]:
        raise ConfigError(f"{where}: not a privaudit {name} report (write one with privaudit {name} -o {name}.json)")
    if data.get("schema_version") != version:
        raise ConfigError(f"{where}: {name} schema_version {data.get('schema_version')!r}, this privaudit reads "
                          f"{version}; regenerate the baseline")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"{where}: not a valid {name} report ({'.'.join(str(p) for p in err['loc'])}: {err['msg']})") from None


def load_scan_baseline(path: str | Path) -> ScanReport:
    """Read an earlier ``privaudit scan`` JSON report."""
    return _load_kind(path, ScanReport, ("report_kind", "scan"), SCAN_SCHEMA_VERSION, "scan")


def load_monitor_baseline(path: str | Path) -> MonitorReport:
    """Read an earlier ``privaudit monitor`` JSON report."""
    return _load_kind(path, MonitorReport, ("kind", MONITOR_KIND), MONITOR_SCHEMA_VERSION, "monitor")


AnyFindings = TypeVar("AnyFindings", ScanReport, MonitorReport)


def apply_scan_baseline(report: AnyFindings, baseline: AnyFindings) -> AnyFindings:
    """A scan or monitor report with regressions against an earlier one: findings that fail now and did not."""
    found: list[Regression] = finding_regressions(report.findings, baseline.findings)
    return report.model_copy(update={"regressions": [*report.regressions, *found]})


LOADERS: dict[str, Callable[[str | Path], Any]] = {"audit": load_baseline, "scan": load_scan_baseline,
                                                    "monitor": load_monitor_baseline}


def with_baseline(report: Any, baseline: Any, source: str | Path,
                  confidence: float = CONFIDENCE) -> tuple[Any, str | None]:
    """Any report kind with its regressions against ``baseline`` (of the same kind, from :data:`LOADERS`)."""
    if isinstance(report, Report):
        return apply_baseline(report, baseline, source, confidence)
    return apply_scan_baseline(report, baseline), None
