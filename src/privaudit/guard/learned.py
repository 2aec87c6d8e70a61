"""What the scale-learning detectors know, from the first request on.

Three detectors (fingerprint, knn, manifold) learn the data's scale from ordinary traffic. Left to
themselves they learn it from the first principals after a start, and score nothing until then: a
prober who arrives first is never scored. Two ways close that window:

* ``detectors.calibration_data: PATH`` -- a CSV or Parquet file of ordinary records (a sample of
  the training data will do; ``detectors.calibration_label`` names a label column to leave out).
  The records are sketched under the log key and every learner calibrates from them at start.
* the learned state, saved beside the query log (``<log stem>.state.json``, mode 0600) whenever a
  detector finishes learning and at shutdown, and read back at the next start. The file carries an
  HMAC under the log key: a file edited by hand, or written under another key, is ignored with a
  warning (its sketches would not be comparable anyway).

Whatever stays blind after both is named in one warning at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from privaudit.errors import ConfigError
from privaudit.guard.querylog import Featurizer, subkey

log = logging.getLogger("privaudit.guard.monitoring")
STATE_VERSION = 1
CALIBRATION_SEED = 0  # the records are shuffled before being cut into pseudo-principals


def learners(detectors: dict[str, Any]) -> dict[str, Any]:
    """The enabled detectors that learn the data's scale (they have ``calibrate``)."""
    return {name: d for name, d in detectors.items() if hasattr(d, "calibrate")}


def blind(detectors: dict[str, Any]) -> list[str]:
    return sorted(name for name, d in learners(detectors).items() if d.blind)


def read_records(path: str, label: str | None, feature_names: list[str] | None) -> NDArray[np.float64]:
    """The numeric records of a CSV or Parquet file; every problem is one ConfigError line."""
    where = "detectors.calibration_data"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where}: {path}: no such file; give a CSV or Parquet file of ordinary records")
    try:
        df = pd.read_csv(p, low_memory=False) if p.suffix.lower() == ".csv" else pd.read_parquet(p)
    except ImportError:
        raise ConfigError(f"{where}: {path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    except Exception as exc:  # pandas and pyarrow raise many types for a bad file
        raise ConfigError(f"{where}: {path}: cannot be read ({' '.join(str(exc).split())[:160]})") from None
    if label is not None:
        if label not in df.columns:
            raise ConfigError(f"detectors.calibration_label: {path} has no column {label!r}")
        df = df.drop(columns=[label])
    if feature_names and all(n in df.columns for n in feature_names):
        df = df[feature_names]
    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]):
            raise ConfigError(f"{where}: {path}: column {column!r} is not numeric; drop it or name it as "
                              "detectors.calibration_label")
    X: NDArray[np.float64] = np.asarray(df.to_numpy(dtype=np.float64), dtype=np.float64)
    if len(X) == 0 or not np.all(np.isfinite(X)):
        raise ConfigError(f"{where}: {path}: needs at least one record and no empty or infinite values")
    return X


def calibrate(detectors: dict[str, Any], featurizer: Featurizer, X: NDArray[np.float64]) -> list[str]:
    """Calibrate every learner from records ``X``; the names of those it taught."""
    rows = X[np.random.default_rng(CALIBRATION_SEED).permutation(len(X))]
    sketches = featurizer.sketches(rows)
    taught = []
    for name, d in learners(detectors).items():
        d.calibrate(sketches)
        if not d.blind:
            taught.append(name)
    return taught


def state_path(log_path: str) -> Path:
    p = Path(log_path)
    return p.with_name(p.stem + ".state.json")


class StateFile:
    """The learners' state beside the query log, authenticated with an HMAC under the log key."""

    def __init__(self, path: Path, key: bytes, key_id: str) -> None:
        self.path = path
        self.mac_key = subkey(key, "learned-state/v1")
        self.key_id = key_id

    def _mac(self, body: str) -> str:
        return hmac.new(self.mac_key, body.encode("utf-8"), hashlib.sha256).hexdigest()

    def save(self, detectors: dict[str, Any]) -> None:
        states = {name: s for name, d in learners(detectors).items() if (s := d.export_state()) is not None}
        if not states:
            return
        body = json.dumps({"v": STATE_VERSION, "key_id": self.key_id, "detectors": states}, sort_keys=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"mac": self._mac(body), "body": body}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save the detectors' learned state to %s: %s", self.path, exc.strerror or exc)

    def load(self, detectors: dict[str, Any]) -> list[str]:
        """Restore what was saved; the names restored. A damaged or forged file is ignored, loudly."""
        if not self.path.is_file():
            return []
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            body = doc["body"]
            if not hmac.compare_digest(self._mac(body), str(doc["mac"])):
                raise ValueError("its HMAC does not match (edited, or written under another log key)")
            data = json.loads(body)
            if data.get("v") != STATE_VERSION or data.get("key_id") != self.key_id:
                raise ValueError("it was written by another version or under another log key")
            restored = []
            for name, d in learners(detectors).items():
                state = data["detectors"].get(name)
                if state is not None:
                    d.import_state(state)
                    restored.append(name)
            return restored
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the detectors' saved state %s: %s", self.path, exc)
            return []
