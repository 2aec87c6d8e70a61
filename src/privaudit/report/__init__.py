"""Report model and writers. Writers render a :class:`Report`; they never see attack internals.

Each writer module registers itself for one or more file suffixes and report kinds ("audit", "scan",
"monitor") with :func:`register_writer`; :func:`write_report` picks the writer from the report's kind
and the output file's name (longest matching suffix wins, so ``.sarif.json`` is SARIF while other
``.json`` files are the JSON report). Every command's reports go through here.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from privaudit.errors import ConfigError
from privaudit.fileio import atomic_write_text
from privaudit.report.schema import Report

WRITER_MODULES = ("json", "sarif", "html", "markdown", "junit", "scan_html", "scan_markdown", "monitor_markdown")
KINDS = ("audit", "scan", "monitor")


@dataclass(frozen=True)
class WriteOptions:
    """Options some writers use: where SARIF results point, whether raw records may be embedded."""

    sarif_location: str | None = None  # file results point at when the model is an endpoint
    include_records: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Writer = Callable[[Any, WriteOptions], str]
_WRITERS: dict[str, dict[str, tuple[str, Writer]]] = {kind: {} for kind in KINDS}


def register_writer(name: str, *suffixes: str, kind: str = "audit") -> Callable[[Writer], Writer]:
    """Register ``fn`` as the ``name`` writer of ``kind`` reports for files ending in ``suffixes``."""
    def deco(fn: Writer) -> Writer:
        for suffix in suffixes:
            _WRITERS[kind][suffix.lower()] = (name, fn)
        return fn

    return deco


def report_kind(report: Any) -> str:
    """"audit" for a Report, "scan" for a ScanReport, "monitor" for a MonitorReport."""
    return str(getattr(report, "report_kind", "audit"))


def writers(kind: str = "audit") -> dict[str, tuple[str, Writer]]:
    for module in WRITER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:  # a writer module not written yet must not break the others
            if exc.name != f"{__name__}.{module}":
                raise
    return dict(_WRITERS[kind])


def writer_for(path: str, kind: str = "audit") -> tuple[str, Writer]:
    lower = str(path).lower()
    known = writers(kind)
    matches = [s for s in known if lower.endswith(s)]
    if not matches:
        raise ConfigError(f"-o {path}: unknown report format; use one of {', '.join(sorted(known))}")
    return known[max(matches, key=len)]


def check_output(path: str | os.PathLike[str], kind: str = "audit") -> None:
    """Refuse, before any work, an output that could not be written: an unknown format, a name that is
    not valid UTF-8, a directory, a missing or unwritable folder."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(f"-o {shown}: the file name is not valid UTF-8; choose a name in UTF-8") from None
    writer_for(text, kind)
    target = Path(text)
    if target.is_dir():
        raise ConfigError(f"-o {text}: is a directory; give a file name, e.g. {target / 'report.json'}")
    folder = target.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"-o {text}: {folder} {what}; create the folder first or choose another path")
    try:  # the writer's own way in: a temporary file beside the report, renamed over it
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{target.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise ConfigError(f"-o {text}: cannot write in {folder} ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None


def render(report: Any, path: str, options: WriteOptions | None = None) -> str:
    """The text a writer produces for ``path``'s format (an audit Report or a ScanReport)."""
    _name, fn = writer_for(path, report_kind(report))
    return fn(report, options or WriteOptions())


def write_report(report: Any, path: str, options: WriteOptions | None = None) -> None:
    """Render and write atomically: a failure leaves any existing file untouched."""
    atomic_write_text(path, render(report, path, options))


__all__ = ["KINDS", "Report", "WriteOptions", "check_output", "register_writer", "render", "report_kind",
           "write_report", "writer_for", "writers"]
