"""Join privaudit audit reports to deployments (``--reports DIR``), by model name or by the
``privaudit:report`` tag, so a scan finding carries the audit's attack evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privaudit.errors import ConfigError
from privaudit.report.schema import Report
from privaudit.scan.checks.tested import REPORT_TAGS
from privaudit.scan.graph import Deployment


class ReportStore:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.by_name: dict[str, tuple[Any, str]] = {}
        self.by_file: dict[str, tuple[Any, str]] = {}
        self.warnings: list[str] = []
        if directory is None:
            return
        if not directory.is_dir():
            raise ConfigError(f"--reports {directory}: not a directory")

        for path in sorted(directory.rglob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue  # not every JSON file in a folder is ours
            if not isinstance(data, dict) or "membership" not in data:
                continue
            try:
                report = Report.model_validate(data)
            except ValueError as exc:
                self.warnings.append(f"{path}: looks like a privaudit report but does not validate ({str(exc).splitlines()[0]}); ignored")
                continue
            entry = (report, str(path))
            self.by_file[path.name] = entry
            self.by_file[str(path.relative_to(directory))] = entry
            if report.model_name:
                self.by_name.setdefault(report.model_name, entry)

    def join(self, dep: Deployment) -> tuple[Any, str | None, str | None]:
        """(report, its path, a problem sentence) for a deployment."""
        tag = dep.tag(*REPORT_TAGS)
        if tag is not None and tag.strip().lower() not in ("none", "no", "false"):
            if tag in self.by_file:
                return self.by_file[tag][0], self.by_file[tag][1], None
            base = Path(dep.endpoint.file).parent if dep.endpoint.file else Path(".")
            candidate = base / tag
            if candidate.is_file():

                try:
                    return Report.model_validate_json(candidate.read_text(encoding="utf-8")), str(candidate), None
                except (OSError, UnicodeDecodeError, ValueError):
                    return None, None, (f"{dep.name} is tagged {REPORT_TAGS[0]}={tag}, but {candidate} is not a readable "
                                        "privaudit audit report")
            return None, None, f"{dep.name} is tagged {REPORT_TAGS[0]}={tag}, but no such report was found"
        # the endpoint's own name: a deployment renamed "name@region" is still the model "name"
        name = dep.tag("privaudit:model", "privaudit.io/model") or dep.endpoint.name
        if name in self.by_name:
            return self.by_name[name][0], self.by_name[name][1], None
        return None, None, None
