"""``privaudit monitor``: replay stored query logs through the probing detectors and report findings.

DuckDB reads the logs (JSONL as the guard writes them, rotated files included, or Parquet copies)
and does the aggregations: requests and queries per principal, addresses per principal, principals
per fingerprint, decisions. The records are then replayed in time order through the same detectors
and escalation the proxy runs, so a log from a guard without detectors (or with other thresholds)
can be judged after the fact. The replay is evidence: privaudit.rules.querylog turns it into the
ATLAS-EXF-003/001 findings, and the report then takes the same path as an audit or a scan
(privaudit.ci.conclude: policy suppressions, baseline, the registered writers, the gate).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console

from privaudit import __version__
from privaudit.ci.controls import read_guard_yaml
from privaudit.ci.conclude import gate_result, judge, prepare_ci, write_all
from privaudit.errors import ConfigError, DataError
from privaudit.guard.monitoring import Monitor, build_monitor
from privaudit.guard.querylog import features_from_record
from privaudit.report.monitor_schema import Detection, FlaggedPrincipal, MonitorReport, Throughput
from privaudit.rules.querylog import RESPONDED, QueryLogEvidence, evaluate_query_log

BATCH = 5000
TOP = 10
ALL_DETECTORS: dict[str, Any] = {"prada": {}, "fingerprint": {}, "knn": {}, "manifold": {}, "rotation": {}, "boundary": {}, "volume": {}}
LEARNED = ("quantum", "radius")  # detector settings learned from traffic, reported so they can be pinned
COLUMNS = {"time": "DOUBLE", "principal": "VARCHAR", "tier": "VARCHAR", "client_ip": "VARCHAR",
           "request_id": "VARCHAR", "decision": "VARCHAR", "status": "BIGINT", "key_id": "VARCHAR",
           "rows": "STRUCT(fingerprint VARCHAR, sketch DOUBLE[], top BIGINT, margin DOUBLE)[]"}


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
    import duckdb  # only when a log is read: `privaudit --help` registers this command without loading it

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


def _guard_sections(config: Path | None) -> dict[str, Any]:
    if config is None:
        return {"detectors": ALL_DETECTORS, "response": None, "allow": []}
    data = read_guard_yaml(config, f"--config {config}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{config}: a guard configuration must be a mapping of sections")
    return {"detectors": data.get("detectors") or {}, "response": data.get("response"),
            "allow": data.get("allow") or [], "escalation": data.get("escalation")}


def run_monitor(paths: list[Path], config: Path | None = None, model_name: str = "model") -> MonitorReport:
    started = time.perf_counter()
    files = log_files(paths)
    sections = _guard_sections(config)
    try:
        monitor = build_monitor({}, sections["detectors"], sections["response"], sections["allow"],
                                {"log": False}, escalation=sections.get("escalation"))
    except ConfigError as exc:
        raise ConfigError(f"{config or 'detectors (defaults)'}: {exc}") from None
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
        privaudit_version=__version__, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_name=model_name, sources=[str(f) for f in files], records=agg["records"], queries=agg["queries"],
        principals=agg["principals"], start=agg["start"], end=agg["end"], decisions=agg["decisions"],
        detectors=detectors, flagged=flagged, allowed_alarms=allowed, most_addresses=agg["most_addresses"],
        shared_rows=agg["shared_rows"], key_ids=agg["key_ids"], warnings=warnings, calibrated=calibrated,
        throughput=Throughput(records=n, queries=rows, seconds=round(seconds, 4), total_seconds=round(total, 4),
                              records_per_second=round(n / max(seconds, 1e-9), 1),
                              queries_per_second=round(rows / max(seconds, 1e-9), 1)),
        findings=evaluate_query_log(QueryLogEvidence(model_name=model_name, flagged=tuple(flagged),
                                                     detectors=tuple(detectors), decisions=agg["decisions"])))


def monitor_command(
    logs: Annotated[list[Path], typer.Argument(help="Query logs written by the guard (.jsonl, rotated files too, or .parquet; a directory means every log in it).")],
    output: Annotated[list[Path], typer.Option("-o", "--output", help="Report file; repeatable: .json, .md or .sarif.")] = [],
    config: Annotated[Optional[Path], typer.Option("--config", help="Guard YAML whose detectors, response and allow sections are replayed (default: every detector, default settings).")] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="Name in finding ids.")] = "model",
    sarif_location: Annotated[Optional[str], typer.Option("--sarif-location", help="File SARIF results point at (default: the first log if under the working directory, else README.md).")] = None,
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 on a failing finding or a regression at or above: critical, high, medium, low or never (default: the policy file's, else never).")] = None,
    baseline: Annotated[Optional[Path], typer.Option(help="An earlier monitor JSON report: exit 1 on any new failing finding.")] = None,
    policy: Annotated[Optional[Path], typer.Option(help="Policy file for suppressions (default: ./privaudit.toml, else \\[tool.privaudit] in ./pyproject.toml).")] = None,
) -> None:
    """Replay stored query logs through the probing detectors and report who probed the model."""
    ci = prepare_ci("monitor", policy=policy, outputs=output, baseline=baseline, fail_on=fail_on,
                    sarif_location=sarif_location, default_location=None, default_fail_on="never")
    report, notes = judge(run_monitor(list(logs), config, model_name), ci)
    console = Console()
    t = report.throughput
    console.print(f"{report.records} requests, {report.queries} queries, {report.principals} principals; "
                  f"replayed at {t.queries_per_second:,.0f} queries/s ({t.records_per_second:,.0f} requests/s)",
                  highlight=False)
    for p in report.flagged:
        console.print(f"probing: {p.principal} -> {p.level} ("
                      + ", ".join(f"{d.detector} after {d.queries} queries" for d in p.detections) + ")",
                      highlight=False, markup=False)
    for w in [*report.warnings, *notes]:
        console.print(f"warning: {w}", highlight=False, markup=False)
    write_all(report, ci.outputs, ci.write, announce=lambda out: console.print(f"wrote {out}", highlight=False, markup=False))
    result = gate_result(report, ci)
    if ci.settings.fail_on != "never":
        console.print(result.message, highlight=False, markup=False)
    raise typer.Exit(result.code)
