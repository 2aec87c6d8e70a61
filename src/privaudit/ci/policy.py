"""The team's policy file: thresholds, data sensitivity, gate level, model name and suppressions.

Looked up in the working directory: ``privaudit.toml``, else the ``[tool.privaudit]`` table of
``pyproject.toml``; ``--policy FILE`` replaces the lookup, and command-line flags override the file.
Suppressions are applied to a finished report by :func:`apply_suppressions` (see docs/ci.md).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from privaudit.ci.gate import DEFAULT_FAIL_ON, FAIL_ON_LEVELS, check_fail_on
from privaudit.errors import ConfigError
from privaudit.findings import CheckStatus, Finding
from privaudit.report.monitor_schema import MonitorReport
from privaudit.report.scan_schema import ScanReport
from privaudit.report.schema import Regression, Report
from privaudit.rules import SENSITIVITIES, Policy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

POLICY_FILE = "privaudit.toml"
PYPROJECT = "pyproject.toml"


class Suppression(BaseModel):
    """An accepted risk: a finding id or check id, why it is accepted, and until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    reason: str
    expires: _dt.date

    @field_validator("reason")
    @classmethod
    def _reason_says_something(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must say why the risk is accepted (it is empty)")
        return v.strip()

    def expired(self, today: _dt.date) -> bool:
        """A suppression holds through its ``expires`` day and lapses the day after."""
        return today > self.expires


_HINTS = typing.get_type_hints(Policy)
THRESHOLD_KEYS = tuple(f.name for f in dataclasses.fields(Policy) if f.name != "data_sensitivity")
_fields: dict[str, Any] = {
    name: (Optional[Annotated[_HINTS[name], Field(ge=0)]], None) for name in THRESHOLD_KEYS  # type: ignore[valid-type]
}
PolicyFile = create_model(  # type: ignore[call-overload]
    "PolicyFile",
    __config__=ConfigDict(extra="forbid"),
    data_sensitivity=(Optional[Literal[SENSITIVITIES]], None),  # type: ignore[valid-type]
    fail_on=(Optional[Literal[FAIL_ON_LEVELS]], None),  # type: ignore[valid-type]
    model_name=(Optional[Annotated[str, Field(min_length=1)]], None),
    suppressions=(list[Suppression], []),
    **_fields,
)
REMOVED_KEYS = {"max_auc": ("attack_power is now a held-out test at low FPRs rather than a threshold on AUC; "
                           "set max_tpr_ratio (the margin) and confidence instead -- see docs/severity.md")}
TOP_KEYS = ("data_sensitivity", "fail_on", "model_name", *THRESHOLD_KEYS, "suppressions")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run uses: the file's values with the command line's on top."""

    policy: Policy
    fail_on: str
    model_name: str | None
    suppressions: tuple[Suppression, ...]
    source: Path | None  # the policy file read, if any


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such policy file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _pyproject_table(path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool")
    table = tool.get("privaudit") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.privaudit] must be a table")
    return table


def find_policy_file(cwd: Path | None = None) -> Path | None:
    """``privaudit.toml`` in ``cwd``, else ``pyproject.toml`` there if it has a [tool.privaudit] table."""
    here = Path.cwd() if cwd is None else Path(cwd)
    own = here / POLICY_FILE
    if own.is_file():
        return own
    pyproject = here / PYPROJECT
    if pyproject.is_file() and _pyproject_table(pyproject, _read_toml(pyproject)) is not None:
        return pyproject
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = _loc(tuple(err["loc"]))
    in_suppression = bool(err["loc"]) and err["loc"][0] == "suppressions"
    allowed = ", ".join(Suppression.model_fields) if in_suppression else ", ".join(TOP_KEYS)
    if err["type"] == "extra_forbidden" and loc in REMOVED_KEYS:
        text = f"key '{loc}' was removed: {REMOVED_KEYS[loc]}"
    elif err["type"] == "extra_forbidden":
        text = f"unknown key '{loc}' (allowed: {allowed})"
    elif err["type"] == "missing":
        text = f"key '{loc}' is required" + (" (each suppression needs id, reason and expires)" if in_suppression else "")
    else:
        text = f"key '{loc}': {err['msg']}"
    more = len(errors) - 1
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def parse_policy(data: dict[str, Any], label: str) -> Any:
    """Validate a policy table; ``label`` names it in errors (file, plus table for pyproject)."""
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{label}: {_describe(exc)}") from None


def read_policy_file(path: Path) -> Any:
    """The validated contents of a policy file (a pyproject.toml is read from its [tool.privaudit] table)."""
    data = _read_toml(path)
    label = str(path)
    if path.name == PYPROJECT:
        table = _pyproject_table(path, data)
        if table is None:
            raise ConfigError(f"{path}: no [tool.privaudit] table; add one or pass a privaudit.toml")
        data, label = table, f"{path} [tool.privaudit]"
    return parse_policy(data, label)


def load_settings(policy_file: Path | None = None, *, cwd: Path | None = None, fail_on: str | None = None,
                  data_sensitivity: str | None = None, model_name: str | None = None,
                  default_fail_on: str = DEFAULT_FAIL_ON) -> Settings:
    """Merge, lowest first: built-in defaults, the policy file, the command-line values given (not None)."""
    if fail_on is not None:
        fail_on = check_fail_on(fail_on)
    if data_sensitivity is not None:
        ds = data_sensitivity.strip().lower()
        if ds not in SENSITIVITIES:
            raise ConfigError(f"--data-sensitivity {data_sensitivity!r}: choose one of {', '.join(SENSITIVITIES)}")
        data_sensitivity = ds
    if model_name is not None and not model_name.strip():
        raise ConfigError("--model-name: must not be empty")
    source = Path(policy_file) if policy_file is not None else find_policy_file(cwd)
    parsed = read_policy_file(source) if source is not None else PolicyFile()
    values: dict[str, Any] = {k: getattr(parsed, k) for k in THRESHOLD_KEYS if getattr(parsed, k) is not None}
    values["data_sensitivity"] = data_sensitivity or parsed.data_sensitivity or Policy().data_sensitivity
    label = str(source) if source is not None else "policy"
    if not 0.5 <= values.get("confidence", 0.95) < 1:
        raise ConfigError(f"{label}: key 'confidence' must be at least 0.5 and below 1, got {values['confidence']}")
    if not 0 < values.get("min_resolved_fpr", 0.01) <= 1:
        raise ConfigError(f"{label}: key 'min_resolved_fpr' must be above 0 and at most 1, got {values['min_resolved_fpr']}")
    if values.get("max_tpr_ratio", 2.0) < 1:
        raise ConfigError(f"{label}: key 'max_tpr_ratio' must be at least 1 (1 = any provable leak fails), "
                          f"got {values['max_tpr_ratio']}")
    return Settings(policy=Policy(**values), fail_on=fail_on or parsed.fail_on or default_fail_on,
                    model_name=model_name or parsed.model_name, suppressions=tuple(parsed.suppressions), source=source)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (for SARIF locations and messages)."""
    try:
        rel = os.path.relpath(Path(path).resolve(), Path.cwd().resolve())
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel.replace(os.sep, "/")


def _suppress_checks(finding: Finding, active: list[Suppression], used: set[str]) -> Finding:
    checks = []
    for c in finding.checks:
        s = next((s for s in active if s.id == c.id), None)
        if s is not None and c.status == CheckStatus.FAIL:
            used.add(s.id)
            c = c.model_copy(update={"data": {**c.data, "suppressed": True, "suppression_reason": s.reason,
                                              "suppression_expires": s.expires.isoformat()}})
        checks.append(c)
    update: dict[str, Any] = {"checks": checks}
    if finding.status == "fail":
        whole = next((s for s in active if s.id == finding.id), None)
        failing = [c for c in checks if c.status == CheckStatus.FAIL]
        if whole is not None:
            used.add(whole.id)
            update.update(suppressed=True, suppression_reason=whole.reason)
        elif failing and all(c.data.get("suppressed") for c in failing):
            reasons = list(dict.fromkeys(str(c.data["suppression_reason"]) for c in failing))
            update.update(suppressed=True, suppression_reason="; ".join(reasons))
    return finding.model_copy(update=update)


AnyReport = TypeVar("AnyReport", Report, ScanReport, MonitorReport)


def apply_suppressions(report: AnyReport, suppressions: typing.Sequence[Suppression],
                       today: _dt.date | None = None) -> AnyReport:
    """Mark suppressed findings and checks; report expired suppressions as regressions and warnings.

    A suppression naming a finding id suppresses that finding. One naming a check id marks that
    check (``data.suppressed``); the finding is suppressed only once every one of its failing
    checks is. An expired suppression suppresses nothing and becomes a regression of kind
    ``expired_suppression``, so the gate fails until it is renewed or removed.
    """
    day = today or _dt.date.today()
    active = [s for s in suppressions if not s.expired(day)]
    warnings = list(report.warnings)
    regressions = list(report.regressions)
    for s in suppressions:
        if s.expired(day):
            msg = (f"suppression '{s.id}' expired on {s.expires.isoformat()} (reason given: {s.reason}); "
                   "it no longer applies -- fix the finding, or renew the suppression with a new date")
            warnings.append(msg)
            regressions.append(Regression(kind="expired_suppression", id=s.id, message=msg,
                                          before=s.expires.isoformat(), after=day.isoformat()))
    used: set[str] = set()
    findings = [_suppress_checks(f, active, used) for f in report.findings]
    for s in active:
        if s.id not in used:
            warnings.append(f"suppression '{s.id}' matches no failing finding or check in this report; "
                            "remove it if the problem is gone")
    return report.model_copy(update={"findings": findings, "warnings": warnings, "regressions": regressions})
