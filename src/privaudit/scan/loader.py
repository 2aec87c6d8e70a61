"""Walk the paths given to ``privaudit scan`` and hand each file to the parser that reads it."""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from privaudit.ci.policy import display_path
from privaudit.errors import ConfigError
from privaudit.scan import cloudformation, kubernetes, terraform
from privaudit.scan.guardfile import is_guard_config, parse_guard
from privaudit.scan.model import Resource

SUFFIXES = (".tf", ".json", ".yaml", ".yml", ".template")
SKIP_DIRS = {".terraform", ".git", "node_modules", "__pycache__", ".venv"}
PARALLEL_FROM = 16  # .tf files; below this a process pool costs more than it saves


def display(path: Path) -> str:
    return display_path(path)


def collect(paths: list[Path]) -> list[Path]:
    """Every file the scan reads, in a stable order; a missing path is a one-line ConfigError."""
    files: list[Path] = []
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p}: no such file or directory")
        if p.is_file():
            files.append(p)
            continue
        for root, dirs, names in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            files += [Path(root) / n for n in sorted(names) if n.lower().endswith(SUFFIXES)]
    return list(dict.fromkeys(files))


def _yaml_docs(text: str, label: str) -> list[Any]:
    return cloudformation.load_yaml_text(text, label)


def parse_file(path: Path) -> list[Resource]:
    """The resources in one file; files of no known kind give none (a scan reads whole trees). A file of a
    known kind whose structure no parser expects (a list where a mapping belongs, a key missing, an alias
    of itself) is a one-line error naming it, at this one boundary rather than in every resource builder."""
    label = display(path)
    try:
        return _parse_file(path, label)
    except ConfigError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{label}: unexpected structure, not read ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]}); fix the file or leave it out of the scan") from exc


def _parse_file(path: Path, label: str) -> list[Resource]:
    suffix = path.suffix.lower()
    if suffix == ".tf":
        return terraform.parse_tf_file(path, label)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{label}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if terraform.is_plan(data):
            return terraform.parse_plan(data, label)
        if cloudformation.is_template(data):
            return cloudformation.parse_template(data, text, label)
        return []
    docs = _yaml_docs(text, label)
    out: list[Resource] = []
    for doc in docs:
        if cloudformation.is_template(doc):
            out += cloudformation.parse_template(doc, text, label)
        elif is_guard_config(doc):
            out.append(parse_guard(doc, label))
        elif isinstance(doc, dict):
            res = kubernetes.parse_manifest(doc, text, label)
            if res is not None:
                out.append(res)
    return out


def load_resources(paths: list[Path], jobs: int | None = None) -> tuple[list[Resource], int]:
    """All resources under ``paths`` and the number of files read. Many .tf files are parsed in
    processes (hcl2 is pure Python), in file order so results do not depend on ``jobs``."""
    files = collect(paths)
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    tf = [f for f in files if f.suffix.lower() == ".tf"]
    out: list[Resource] = []
    if workers > 1 and len(tf) >= PARALLEL_FROM:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parsed = dict(zip(tf, pool.map(parse_file, tf, chunksize=max(1, len(tf) // (4 * workers)))))
        for f in files:
            out += parsed[f] if f in parsed else parse_file(f)
    else:
        for f in files:
            out += parse_file(f)
    return out, len(files)
