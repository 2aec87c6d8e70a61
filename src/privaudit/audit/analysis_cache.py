"""Results of an audit's analysis kept on disk, so re-running an unchanged audit is nearly free.

The reference-score cache already spares re-training. What is left on a re-run -- scoring every
attack, bootstrapping its operating points, re-scoring the what-if variants -- is a pure function of
the target's outputs, the reference models' outputs, the labels, the options and privaudit's own
code. This cache keys those results by a hash of all of them, so any change to one (a retrained
model, other data, another seed or number of bootstrap resamples, an edited privaudit) misses.

Attacks that send their own queries are never taken from here: their answers depend on the target
beyond the outputs the key covers. Every entry is signed (privaudit.audit.cache_hmac): an edited entry is
recomputed with a warning, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from privaudit.attacks.membership import AttackResult
from privaudit.audit.cache_hmac import cache_key, sign, verified
from privaudit.fileio import atomic_write_npy, atomic_write_text
from privaudit.report.schema import AttackReport, WhatIfRow

_FORMAT = "2"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 over privaudit's own source files: results computed by other code are never reused."""
    root = Path(__file__).resolve().parents[1]  # the whole package, not only audit/
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def analysis_key(*, target_outputs: NDArray[Any], reference_keys: Sequence[str], y: NDArray[np.int64],
                 is_member: NDArray[np.bool_], options: dict[str, Any]) -> str:
    """Hash of everything the attacks' scores and reports depend on."""
    h = hashlib.sha256(f"analysis|{_FORMAT}|{code_digest()}".encode())
    outputs = np.ascontiguousarray(target_outputs)
    h.update(str((outputs.dtype.str, outputs.shape)).encode() + outputs.tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(is_member, dtype=np.bool_).tobytes())
    h.update(json.dumps(list(reference_keys)).encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()


class AnalysisCache:
    """One audit's attack results, attack reports and what-if rows under ``directory/analysis-<key>``."""

    def __init__(self, directory: Path | None, key: str) -> None:
        self.root = None if directory is None else directory / f"analysis-{key}"
        self._key = None if directory is None else cache_key(directory)

    def load_attack(self, name: str) -> tuple[AttackResult, AttackReport] | None:
        if self.root is None:
            return None
        try:
            text = (self.root / f"{name}.json").read_bytes()
            raw = (self.root / f"{name}.npy").read_bytes()
            if not verified(self._key, (self.root / f"{name}.mac").read_text(), name.encode(), raw, text,
                            what=str(self.root / name)):
                return None
            meta = json.loads(text)
            scores = np.load(io.BytesIO(raw), allow_pickle=False)
            result = AttackResult(name, np.asarray(scores, dtype=np.float64), queries=int(meta["queries"]),
                                  reference_models=int(meta["reference_models"]), seconds=float(meta["seconds"]),
                                  params=dict(meta["params"]))
            return result, AttackReport.model_validate(meta["report"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged: the attack simply runs again

    def store_attack(self, result: AttackResult, report: AttackReport) -> None:
        if self.root is None:
            return
        meta = {"queries": result.queries, "reference_models": result.reference_models, "seconds": result.seconds,
                "params": result.params, "report": report.model_dump(mode="json", by_alias=True)}
        if self._key is None:
            return  # nothing can be signed: store nothing rather than something unverifiable
        try:
            atomic_write_npy(self.root / f"{result.name}.npy", result.scores)
            text = json.dumps(meta, default=str)
            atomic_write_text(self.root / f"{result.name}.json", text)
            raw = (self.root / f"{result.name}.npy").read_bytes()
            # The signature goes last: a reader that finds it also finds what it signs.
            atomic_write_text(self.root / f"{result.name}.mac", sign(self._key, result.name.encode(), raw, text.encode()))
        except OSError:
            pass  # an unwritable cache costs the next run time, not correctness

    def load_what_if(self) -> list[WhatIfRow] | None:
        if self.root is None:
            return None
        try:
            text = (self.root / "what_if.json").read_bytes()
            if not verified(self._key, (self.root / "what_if.mac").read_text(), b"what_if", text,
                            what=str(self.root / "what_if")):
                return None
            rows = json.loads(text)
            return [WhatIfRow.model_validate(r) for r in rows]
        except (OSError, ValueError, TypeError):
            return None

    def store_what_if(self, rows: list[WhatIfRow]) -> None:
        if self.root is None:
            return
        if self._key is None:
            return
        try:
            text = json.dumps([r.model_dump(mode="json", by_alias=True) for r in rows])
            atomic_write_text(self.root / "what_if.json", text)
            atomic_write_text(self.root / "what_if.mac", sign(self._key, b"what_if", text.encode()))
        except OSError:
            pass

