"""``privaudit monitor``: replay stored query logs through the probing detectors and report findings.

DuckDB reads the logs (JSONL as the guard writes them, rotated files included, or Parquet copies)
and does the aggregations: requests and queries per principal, addresses per principal, principals
per fingerprint, decisions. The records are then replayed in time order through the same detectors
and escalation the proxy runs, so a log from a guard without detectors (or with other thresholds)
can be judged after the fact. The outcome is a :class:`MonitorReport` whose findings use the
audit's vocabulary (``privaudit.findings``: rule ids, check ids ``<rule>/<check>/<model name>``), as
JSON, Markdown or SARIF, with the replay's throughput.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from pydantic import BaseModel, ConfigDict

from privaudit.errors import ConfigError, DataError
from privaudit.findings import AuditAnswer, Check, CheckStatus, Finding, Severity
from privaudit.guard.monitoring import Monitor, build_monitor
from privaudit.guard.querylog import features_from_record

SCHEMA_VERSION = 1
RESPONDED = ("limited", "throttled", "blocked", "degraded")  # decisions showing a limit or response acted
BATCH = 5000
TOP = 10
ALL_DETECTORS: dict[str, Any] = {"prada": {}, "fingerprint": {}, "knn": {}, "manifold": {}, "rotation": {}, "boundary": {}, "volume": {}}
LEARNED = ("quantum", "radius")  # detector settings learned from traffic, reported so they can be pinned
COLUMNS = {"time": "DOUBLE", "principal": "VARCHAR", "tier": "VARCHAR", "client_ip": "VARCHAR",
           "request_id": "VARCHAR", "decision": "VARCHAR", "status": "BIGINT", "key_id": "VARCHAR",
           "rows": "STRUCT(fingerprint VARCHAR, sketch DOUBLE[], top BIGINT, margin DOUBLE)[]"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Detection(_Model):
    detector: str
    queries: int  # the principal's queries (rows) when the detector first alarmed
    time: float
    score: float


class FlaggedPrincipal(_Model):
    principal: str
    level: str  # highest level reached in the replay
    queries: int
    ips: int
    detections: list[Detection]
    responded_after: int  # requests limited, throttled, blocked or degraded after the first alarm
    answered_after: int  # requests answered normally after the first alarm


class Throughput(_Model):
    records: int
    queries: int
    seconds: float  # the replay through the detectors
    total_seconds: float  # reading and aggregating included
    records_per_second: float
    queries_per_second: float


class MonitorReport(_Model):
    schema_version: int = SCHEMA_VERSION
    kind: str = "privaudit.monitor"
    privaudit_version: str
    created_at: str
    model_name: str
    sources: list[str]
    records: int
    queries: int
    principals: int
    start: float | None
    end: float | None
    decisions: dict[str, int]
    detectors: list[str]
    throughput: Throughput
    flagged: list[FlaggedPrincipal]
    allowed_alarms: list[FlaggedPrincipal] = []  # principals on the allow list that detectors fired on
    most_addresses: list[dict[str, Any]]  # principals with the most client addresses
    shared_rows: list[dict[str, Any]]  # fingerprints sent by the most principals
    key_ids: list[str]
    calibrated: dict[str, float] = {}  # settings the replay learned from the data (set them to pin them)
    findings: list[Finding]
    warnings: list[str] = []

    def to_json_text(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def log_files(paths: list[Path]) -> list[Path]:
    """The files to read: each path, or the .jsonl / .parquet files in a directory."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".jsonl", ".parquet"))
        elif not p.exists():
            raise ConfigError(f"{p}: no such file")
        elif p.suffix not in (".jsonl", ".parquet"):
            raise ConfigError(f"{p}: not a query log (.jsonl, or .parquet)")
        else:
            out.append(p)
    if not out:
        raise ConfigError("no query log files given")
    return out


def _sql_list(items: list[str]) -> str:
    """A DuckDB list literal of strings (table functions in a view cannot take parameters)."""
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def _connect(files: list[Path]) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # it would draw over the command's own output
    selects = []
    names = ", ".join(COLUMNS)
    jsonl = [str(f) for f in files if f.suffix != ".parquet"]
    parquet = [str(f) for f in files if f.suffix == ".parquet"]
    if jsonl:  # explicit columns: extra keys (raw, scores) are ignored, types never guessed wrong
        selects.append(f"SELECT {names} FROM read_json({_sql_list(jsonl)}, format='newline_delimited', "
                       f"columns={COLUMNS!r})")
    if parquet:
        selects.append(f"SELECT {names} FROM read_parquet({_sql_list(parquet)}, union_by_name=true)")
    try:
        con.execute("CREATE VIEW log AS " + " UNION ALL ".join(selects))
        con.execute("SELECT count(*) FROM log").fetchone()
    except duckdb.Error as exc:
        raise DataError(f"cannot read the query log: {str(exc).splitlines()[0]}") from None
    return con


def _records(con: Any) -> Iterator[dict[str, Any]]:
    cur = con.execute(f"SELECT {', '.join(COLUMNS)} FROM log ORDER BY time")
    names = list(COLUMNS)
    while batch := cur.fetchmany(BATCH):
        for row in batch:
            yield dict(zip(names, row))


def _aggregate(con: Any) -> dict[str, Any]:
    def q(sql: str) -> list[Any]:
        return con.execute(sql).fetchall()

    records, start, end, principals, keys = q(
        "SELECT count(*), min(time), max(time), count(DISTINCT principal), list(DISTINCT key_id) FROM log")[0]
    return {
        "records": records, "start": start, "end": end, "principals": principals,
        "key_ids": sorted(k for k in keys if k),
        "decisions": dict(q("SELECT coalesce(decision, ''), count(*) FROM log GROUP BY 1 ORDER BY 2 DESC")),
        "most_addresses": [{"principal": p, "ips": n, "requests": r} for p, n, r in q(
            f"SELECT principal, count(DISTINCT client_ip) n, count(*) FROM log GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {TOP}")],
        "shared_rows": [{"fingerprint": f[:12], "principals": n, "times": t} for f, n, t in q(
            "SELECT fp, count(DISTINCT principal) n, count(*) FROM (SELECT principal, unnest(rows).fingerprint fp "
            f"FROM log) GROUP BY 1 HAVING count(DISTINCT principal) > 1 ORDER BY 2 DESC, 1 LIMIT {TOP}")],
        "queries": q("SELECT coalesce(sum(len(rows)), 0) FROM log")[0][0],
    }


def replay(records: Iterator[dict[str, Any]], monitor: Monitor) -> tuple[int, int, dict[str, dict[str, int]]]:
    """Feed records through ``monitor`` in order; count decisions of principals after their first alarm."""
    n = rows = 0
    after: dict[str, dict[str, int]] = {}
    for rec in records:
        if rec.get("time") is None or rec.get("principal") is None:
            continue
        f = features_from_record(rec)
        n += 1
        rows += f.n_rows
        st = monitor.standings.peek(f.principal)
        if st is not None and st.first_alarm:
            counts = after.setdefault(f.principal, {"responded": 0, "answered": 0})
            counts["responded" if f.decision in RESPONDED or f.status == 429 else "answered"] += 1
        monitor.observe_features(f)
    return n, rows, after


def _principal(name: str, st: Any, monitor: Monitor, after: dict[str, dict[str, int]]) -> FlaggedPrincipal:
    dets = sorted((Detection(detector=d, queries=a["queries"], time=a["time"], score=a["score"])
                   for d, a in st.first_alarm.items()), key=lambda d: d.queries)
    counts = after.get(name, {})
    return FlaggedPrincipal(principal=name, level=monitor.response[st.max_step], queries=st.queries, ips=len(st.ips),
                            detections=dets, responded_after=counts.get("responded", 0),
                            answered_after=counts.get("answered", 0))


def _describe(flagged: list[FlaggedPrincipal], limit: int = 5) -> str:
    parts = [f"{p.principal} ({', '.join(f'{d.detector} after {d.queries} queries' for d in p.detections)}; "
             f"reached {p.level})" for p in flagged[:limit]]
    more = len(flagged) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def findings_for(model_name: str, flagged: list[FlaggedPrincipal], detectors: list[str],
                 decisions: dict[str, int]) -> list[Finding]:
    """One finding per rule the query log bears on: membership inference and model inversion."""
    from privaudit.rules import Evidence, common
    from privaudit.rules.atlas_exf_001 import RULE as INVERSION
    from privaudit.rules.atlas_exf_003 import RULE as MEMBERSHIP

    ev = Evidence(model_name=model_name, report=None)
    limited = sum(n for d, n in decisions.items() if d in RESPONDED)
    ignored = [p for p in flagged if p.responded_after == 0 and p.answered_after > 0]
    out = []
    for rule in (MEMBERSHIP, INVERSION):
        def cid(key: str, rule: Any = rule) -> str:
            return common.check_id(rule, key, model_name)

        checks = [Check(id=cid("probing_monitoring"), check="probing_monitoring",
                        title="No systematic probing seen in the query log",
                        status=CheckStatus.FAIL if flagged else CheckStatus.PASS,
                        evidence=(f"{len(flagged)} principal{'s' if len(flagged) != 1 else ''} probed the model: "
                                  + _describe(flagged)) if flagged else
                        f"detectors {', '.join(detectors)} replayed over the log; no principal was flagged",
                        data={"principals": [p.principal for p in flagged]})]
        for name in detectors:
            hits = [p for p in flagged if any(d.detector == name for d in p.detections)]
            checks.append(Check(
                id=cid(f"probing_{name}"), check=f"probing_{name}", title=f"Detector {name} raised no alarm",
                status=CheckStatus.FAIL if hits else CheckStatus.PASS,
                evidence=(f"{name} flagged " + ", ".join(
                    f"{p.principal} after {next(d.queries for d in p.detections if d.detector == name)} queries"
                    for p in hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")) if hits
                else f"{name} stayed below its alarm for every principal"))
        if ignored:
            status, text = CheckStatus.FAIL, (f"{len(ignored)} flagged principal(s) kept getting normal answers after "
                                              f"the alarm, none limited or blocked: {_describe(ignored, 3)}")
        elif limited:
            status, text = CheckStatus.PASS, f"{limited} requests were limited, throttled, degraded or blocked"
        else:
            status, text = CheckStatus.UNKNOWN, "no request in the log was limited, so the log cannot show limits exist"
        checks.append(Check(id=cid("query_limits"), check="query_limits",
                            title="Limits and responses act on probing principals", status=status, evidence=text,
                            needs="audit with --guard-config to check the configured limits"
                            if status == CheckStatus.UNKNOWN else None))
        severity, reason = rule.base_severity, "probing seen in the query log"
        if ignored:
            severity, reason = Severity.HIGH, "probing seen and nothing limited the principals doing it"
        answers = []
        for q in rule.audit_questions:
            keys = (["probing_monitoring"] if "probing" in q.lower() else
                    ["query_limits"] if "limit" in q.lower() else [])
            answers.append(common.answer(q, checks, keys) if keys else AuditAnswer(
                question=q, answer=None, needs="privaudit audit answers this; the query log cannot"))
        summary = (f"Query log: {len(flagged)} principal(s) probing the model." if flagged
                   else "Query log: no systematic probing seen.")
        out.append(common.finding(rule, ev, checks, severity, reason, summary, answers, core=("probing_monitoring",)))
    return out


def _guard_sections(config: Path | None) -> dict[str, Any]:
    if config is None:
        return {"detectors": ALL_DETECTORS, "response": None, "allow": []}
    import yaml

    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{config}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{config}: a guard configuration must be a mapping of sections")
    return {"detectors": data.get("detectors") or {}, "response": data.get("response"),
            "allow": data.get("allow") or [], "escalation": data.get("escalation")}


def run_monitor(paths: list[Path], config: Path | None = None, model_name: str = "model") -> MonitorReport:
    import privaudit

    started = time.perf_counter()
    files = log_files(paths)
    sections = _guard_sections(config)
    try:
        monitor = build_monitor({}, sections["detectors"], sections["response"], sections["allow"],
                                {"log": False}, escalation=sections.get("escalation"))
    except ConfigError as exc:
        raise ConfigError(f"{config}: {exc}") from None
    con = _connect(files)
    agg = _aggregate(con)
    t0 = time.perf_counter()
    n, rows, after = replay(_records(con), monitor)
    seconds = time.perf_counter() - t0
    monitor.close()
    flagged, allowed = [], []
    for name, st in monitor.standings.items():
        if st.max_step > 0:
            flagged.append(_principal(name, st, monitor, after))
        elif st.first_alarm and name in monitor.allow:
            allowed.append(_principal(name, st, monitor, after))
    flagged.sort(key=lambda p: (min(d.time for d in p.detections), p.principal))
    warnings = []
    if len(agg["key_ids"]) > 1:
        warnings.append(f"the log mixes {len(agg['key_ids'])} keys: sketches and fingerprints from different keys "
                        "cannot be compared, so detections across them are missed")
    detectors = list(monitor.detectors)
    calibrated = {f"{name}.{key}": round(float(getattr(d, key)), 6) for name, d in monitor.detectors.items()
                  for key in LEARNED if getattr(d, key, None) is not None}
    total = time.perf_counter() - started
    return MonitorReport(
        privaudit_version=privaudit.__version__, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_name=model_name, sources=[str(f) for f in files], records=agg["records"], queries=agg["queries"],
        principals=agg["principals"], start=agg["start"], end=agg["end"], decisions=agg["decisions"],
        detectors=detectors, flagged=flagged, allowed_alarms=allowed, most_addresses=agg["most_addresses"],
        shared_rows=agg["shared_rows"], key_ids=agg["key_ids"], warnings=warnings, calibrated=calibrated,
        throughput=Throughput(records=n, queries=rows, seconds=round(seconds, 4), total_seconds=round(total, 4),
                              records_per_second=round(n / max(seconds, 1e-9), 1),
                              queries_per_second=round(rows / max(seconds, 1e-9), 1)),
        findings=findings_for(model_name, flagged, detectors, agg["decisions"]))


def to_markdown(report: MonitorReport) -> str:
    from privaudit.report.markdown import cell, shorten, status_label

    failed = [f for f in report.findings if f.failed]
    head = (f"**privaudit monitor: {max(failed, key=lambda f: f.severity.rank).severity.value.upper()}** - "
            f"{len(report.flagged)} principal(s) probing `{report.model_name}`" if failed
            else f"**privaudit monitor: no probing seen** for `{report.model_name}`")
    t = report.throughput
    lines = [head, "", f"{report.records} requests ({report.queries} queries) from {report.principals} principals; "
             f"replayed through {', '.join(report.detectors) or 'no detectors'} at {t.queries_per_second:,.0f} "
             f"queries/s ({t.records_per_second:,.0f} requests/s).", "",
             "| Rule | Severity | Status | Summary |", "|---|---|---|---|"]
    lines += [f"| {cell(f.rule_id)} {cell(f.title)} | {f.severity.value} | {cell(status_label(f))} | {cell(shorten(f.summary))} |"
              for f in report.findings]
    if report.flagged:
        lines += ["", "| Principal | Level | Queries | Addresses | Detections | Answered after alarm |",
                  "|---|---|---:|---:|---|---:|"]
        lines += [f"| {cell(p.principal)} | {p.level} | {p.queries} | {p.ips} | "
                  + cell(", ".join(f"{d.detector} @ {d.queries}" for d in p.detections))
                  + f" | {p.answered_after} |" for p in report.flagged]
    if report.allowed_alarms:
        lines += ["", "Alarms on allowed principals (logged, never escalated): "
                  + ", ".join(cell(p.principal) for p in report.allowed_alarms)]
    if report.decisions:
        lines += ["", "Decisions: " + ", ".join(f"{cell(k or 'none')} {v}" for k, v in report.decisions.items())]
    lines += [f"- warning: {shorten(w)}" for w in report.warnings]
    lines += ["", f"<sub>privaudit {report.privaudit_version} - {len(report.sources)} log file(s) - {report.created_at}</sub>"]
    return "\n".join(lines) + "\n"


def to_sarif(report: MonitorReport, location: str | None = None) -> dict[str, Any]:
    """SARIF 2.1.0 built from the audit's SARIF helpers, so rules and results look the same."""
    import os

    from privaudit.report import sarif

    uri = location
    if uri is None and report.sources:
        rel = os.path.relpath(os.path.abspath(report.sources[0]), os.getcwd())
        uri = Path(rel).as_posix() if not rel.startswith("..") and not os.path.isabs(rel) else None
    where = [sarif.location(uri or sarif.DEFAULT_LOCATION)]
    return sarif.build_log(report.findings, lambda _f: where, version=report.privaudit_version,
                           automation_id=f"privaudit-monitor/{report.model_name}/",
                           properties={"kind": report.kind, "modelName": report.model_name, "records": report.records,
                                       "queriesPerSecond": report.throughput.queries_per_second,
                                       "createdAt": report.created_at})


def render(report: MonitorReport, path: Path, sarif_location: str | None = None) -> str:
    import json

    name = path.name.lower()
    if name.endswith((".sarif", ".sarif.json")):
        return json.dumps(to_sarif(report, sarif_location), indent=2, ensure_ascii=False) + "\n"
    if name.endswith(".json"):
        return report.to_json_text()
    if name.endswith(".md"):
        return to_markdown(report)
    raise ConfigError(f"-o {path}: unknown format for a monitor report; use .json, .md or .sarif")


def monitor_command(
    logs: Annotated[list[Path], typer.Argument(help="Query logs written by the guard (.jsonl, rotated files too, or .parquet; a directory means every log in it).")],
    output: Annotated[list[Path], typer.Option("-o", "--output", help="Report file; repeatable: .json, .md or .sarif.")] = [],
    config: Annotated[Optional[Path], typer.Option("--config", help="Guard YAML whose detectors, response and allow sections are replayed (default: every detector, default settings).")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="Name in finding ids.")] = "model",
    sarif_location: Annotated[Optional[str], typer.Option("--sarif-location", help="File SARIF results point at (default: the first log if under the working directory, else README.md).")] = None,
    fail_on: Annotated[str, typer.Option("--fail-on", help="Exit 1 on a failing finding at or above: critical, high, medium, low or never.")] = "never",
) -> None:
    """Replay stored query logs through the probing detectors and report who probed the model."""
    from rich.console import Console

    from privaudit.fileio import atomic_write_text
    from privaudit.ci.gate import check_fail_on

    level = check_fail_on(fail_on)
    for out in output:  # every format is checked before any work
        if not out.name.lower().endswith((".sarif", ".json", ".md")):
            raise ConfigError(f"-o {out}: unknown format for a monitor report; use .json, .md or .sarif")
    report = run_monitor(list(logs), config, model_name)
    console = Console()
    t = report.throughput
    console.print(f"{report.records} requests, {report.queries} queries, {report.principals} principals; "
                  f"replayed at {t.queries_per_second:,.0f} queries/s ({t.records_per_second:,.0f} requests/s)",
                  highlight=False)
    for p in report.flagged:
        console.print(f"probing: {p.principal} -> {p.level} ("
                      + ", ".join(f"{d.detector} after {d.queries} queries" for d in p.detections) + ")",
                      highlight=False, markup=False)
    for w in report.warnings:
        console.print(f"warning: {w}", highlight=False, markup=False)
    for out in output:
        atomic_write_text(out, render(report, out, sarif_location))
        console.print(f"wrote {out}", highlight=False)
    if level != "never":
        threshold = Severity(level)
        if any(f.failed and f.severity.at_least(threshold) for f in report.findings):
            raise typer.Exit(1)
