"""The one path from a finished report to files and an exit code, shared by ``audit``, ``scan`` and ``monitor``.

Each command produces evidence and the rules turn it into a report with findings; from there every
report goes the same way: the policy file's suppressions, the baseline's regressions, the registered
writers (privaudit.report), then the gate (privaudit.ci.gate). :func:`prepare_ci` checks every CI input
(policy file, output paths, baseline) before the command starts its work, so a usage error never waits
for a long audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from privaudit.ci import gate
from privaudit.ci.baseline import LOADERS, with_baseline
from privaudit.ci.gate import DEFAULT_FAIL_ON
from privaudit.ci.policy import Settings, apply_suppressions, display_path, load_settings
from privaudit.report import WriteOptions, check_output, write_report


@dataclass(frozen=True)
class CiOptions:
    """What happens to a report once it exists: suppressions, baseline, outputs and the gate's level."""

    kind: str  # "audit", "scan" or "monitor"
    settings: Settings
    outputs: tuple[Path, ...] = ()
    baseline: Any = None  # an earlier report of the same kind
    baseline_source: str = ""
    write: WriteOptions = WriteOptions()


def prepare_ci(kind: str, *, policy: Path | None = None, outputs: Sequence[Path] = (), baseline: Path | None = None,
               fail_on: str | None = None, sarif_location: str | None = None, include_records: bool = False,
               default_location: str | None = "README.md", default_fail_on: str = DEFAULT_FAIL_ON,
               **settings: Any) -> CiOptions:
    """Read the policy file (command-line values on top), check every output path and read the baseline.

    SARIF results of reports that point at no file of their own point at ``sarif_location``, else the
    policy file, else ``default_location`` (None lets the writer choose, e.g. the monitored log).
    """
    loaded = load_settings(policy, fail_on=fail_on, default_fail_on=default_fail_on, **settings)
    for out in outputs:
        check_output(out, kind)
    base = LOADERS[kind](baseline) if baseline is not None else None
    location = sarif_location or (display_path(loaded.source) if loaded.source is not None else default_location)
    return CiOptions(kind=kind, settings=loaded, outputs=tuple(outputs), baseline=base,
                     baseline_source=str(baseline or ""),
                     write=WriteOptions(sarif_location=location, include_records=include_records))


def judge(report: Any, ci: CiOptions) -> tuple[Any, list[str]]:
    """The report with the policy's suppressions and the baseline's regressions; warnings to show."""
    report = apply_suppressions(report, ci.settings.suppressions)
    notes: list[str] = []
    if ci.baseline is not None:
        report, note = with_baseline(report, ci.baseline, ci.baseline_source, ci.settings.policy.confidence)
        if note:
            notes.append(note)
    return report, notes


def write_all(report: Any, outputs: Sequence[Path], options: WriteOptions,
              announce: Callable[[Path], None] = lambda _p: None) -> None:
    """Every requested output, each written atomically by the writer its name and the report's kind pick."""
    for out in outputs:
        write_report(report, str(out), options)
        announce(out)


def gate_result(report: Any, ci: CiOptions) -> gate.GateResult:
    return gate.evaluate(report, ci.settings.fail_on)
