"""Run privaudit in a subprocess that can import only what a core install (``pip install .``) brings.

A real fresh virtualenv needs the network and minutes; instead, every top-level module of an installed
distribution outside the transitive closure of ``[project] dependencies`` is made unimportable. A
module the code imports but does not declare (click, once typer stopped installing it) then fails
here exactly as on a core-only machine. ``scripts/check-core-install`` does the real thing.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_closure() -> set[str]:
    """Canonical names of the distributions a core install of this checkout pulls in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = _canon(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in md.requires(req.name) or []]
        except md.PackageNotFoundError:
            pass  # declared but absent here: the import would fail in the test anyway
    return seen


def blocked_modules() -> set[str]:
    """Top-level modules installed here that a core install would not have."""
    keep = core_closure() | {"privaudit"}
    out = set()
    for module, dists in md.packages_distributions().items():
        if module.startswith("_") and module != "_yaml":
            continue  # private helpers (e.g. _pytest) are reached only through their public package
        if not any(_canon(d) in keep for d in dists):
            out.add(module)
    return out


_BOOT = """
import importlib.abc, sys
BLOCKED = frozenset({blocked!r})
class _CoreOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in a core install)", name=name)
        return None
sys.meta_path.insert(0, _CoreOnly())
sys.argv = ["privaudit", *{argv!r}]
from privaudit.cli import main
main()
"""


def run_core_only(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``privaudit *argv`` from this checkout's src/, with only core dependencies importable."""
    code = _BOOT.format(blocked=sorted(blocked_modules()), argv=list(argv))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "120"}
    env.pop("PRIVAUDIT_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
