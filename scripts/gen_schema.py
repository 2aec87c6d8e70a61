"""Regenerate src/privaudit/schema/report.schema.json from the pydantic Report model.

Usage: python scripts/gen_schema.py          write the file
       python scripts/gen_schema.py --check  exit 1 if the committed file is out of date

tests/test_report_writers.py runs generate() and compares it with the committed file, so the
published schema cannot drift from the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "src" / "privaudit" / "schema" / "report.schema.json"
SCHEMA_ID = "urn:privaudit:schema:report:{version}"


def schema() -> dict[str, Any]:
    from privaudit.report.schema import SCHEMA_VERSION, Report

    body = Report.model_json_schema(by_alias=True, mode="serialization")
    head = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(version=SCHEMA_VERSION),
        "title": "privaudit report",
        "description": (f"The JSON report written by `privaudit audit -o report.json` (schema_version "
                        f"{SCHEMA_VERSION}). Generated from privaudit.report.schema.Report by "
                        "scripts/gen_schema.py; do not edit by hand."),
    }
    body.pop("title", None)
    body.pop("description", None)
    return {**head, **body}


def generate() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != text:
            print(f"{SCHEMA_PATH.relative_to(ROOT)} is out of date; run python scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
