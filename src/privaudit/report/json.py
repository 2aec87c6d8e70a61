"""The JSON report: the Report itself, validated by the published schema (schema/report.schema.json)."""

from __future__ import annotations

from privaudit.report import WriteOptions, register_writer
from privaudit.report.schema import Report


@register_writer("json", ".json")
@register_writer("json", ".json", kind="scan")
@register_writer("json", ".json", kind="monitor")
def render(report: Report, options: WriteOptions) -> str:
    return report.to_json_text()
