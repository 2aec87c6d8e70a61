"""The CI gate: which exit code a finished report earns. Pure logic on a :class:`Report`, no I/O.

Exit codes of ``privaudit audit``:

* 0 -- nothing fails at or above ``--fail-on`` and there is no regression;
* 1 -- a failing, non-suppressed finding at or above ``--fail-on``, or any regression (regressions fail
  under every level except ``never``);
* 2 -- a usage or input error (raised as :class:`~privaudit.errors.PrivauditError` before a report exists);
* 3 -- nothing auditable (:class:`~privaudit.errors.NothingAuditable`).

Codes 2 and 3 are exceptions raised before a report exists, so they win over 1 by construction: the
CLI validates every input (policy, baseline, guard config, output formats) before the audit starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from privaudit.errors import ConfigError
from privaudit.findings import Finding, Severity
from privaudit.report.schema import Regression

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_NOTHING_AUDITABLE = 3

FAIL_ON_LEVELS = ("critical", "high", "medium", "low", "never")
DEFAULT_FAIL_ON = "high"


def check_fail_on(value: str, where: str = "--fail-on") -> str:
    """The normalised level, or a one-line ConfigError naming the allowed ones."""
    level = str(value).strip().lower()
    if level not in FAIL_ON_LEVELS:
        raise ConfigError(f"{where} {value!r}: choose one of {', '.join(FAIL_ON_LEVELS)}")
    return level


class Gated(Protocol):
    """What the gate reads: an audit Report and a ScanReport both have it."""

    @property
    def findings(self) -> Sequence[Finding]: ...

    @property
    def regressions(self) -> Sequence[Regression]: ...


@dataclass(frozen=True)
class GateResult:
    code: int
    fail_on: str
    failing: tuple[Finding, ...]  # non-suppressed failing findings at or above fail_on
    regressions: tuple[Regression, ...]

    @property
    def passed(self) -> bool:
        return self.code == EXIT_PASS

    @property
    def message(self) -> str:
        if self.fail_on == "never":
            return "gate: --fail-on never, so this run passes whatever it found"
        reasons = []
        if self.regressions:
            reasons.append(f"{len(self.regressions)} regression{'s' if len(self.regressions) != 1 else ''}")
        if self.failing:
            ids = ", ".join(f"{f.id} ({f.severity.value})" for f in self.failing)
            reasons.append(f"failing at or above {self.fail_on}: {ids}")
        if not reasons:
            return f"gate: passed (no regression, nothing failing at or above {self.fail_on})"
        return "gate: FAILED -- " + "; ".join(reasons)


def failing_findings(report: Gated, fail_on: str = DEFAULT_FAIL_ON) -> list[Finding]:
    """Findings that fail the gate: status fail, not suppressed, severity at or above ``fail_on``."""
    level = check_fail_on(fail_on)
    if level == "never":
        return []
    threshold = Severity(level)
    return [f for f in report.findings if f.failed and f.severity.at_least(threshold)]


def evaluate(report: Gated, fail_on: str = DEFAULT_FAIL_ON) -> GateResult:
    level = check_fail_on(fail_on)
    if level == "never":
        return GateResult(EXIT_PASS, level, (), tuple(report.regressions))
    failing = tuple(failing_findings(report, level))
    regressions = tuple(report.regressions)
    code = EXIT_FAIL if failing or regressions else EXIT_PASS
    return GateResult(code, level, failing, regressions)


def exit_code(report: Gated, fail_on: str = DEFAULT_FAIL_ON) -> int:
    return evaluate(report, fail_on).code
