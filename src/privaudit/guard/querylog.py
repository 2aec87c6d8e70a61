"""The query log: one JSON line per request, written without raw inputs.

Each record holds who asked (``principal``, ``tier``, ``client_ip``, ``request_id``), when (``time``),
what happened (``decision``, ``status``, the monitor's ``level`` and detector ``scores``) and, per
row, three things that let detectors run again offline without the row itself:

* ``fingerprint`` -- HMAC-SHA256 of the row's float64 bytes under the log key (first 128 bits, hex):
  equal rows give equal fingerprints, and without the key nobody can test a guess of a row against it;
* ``sketch`` -- the row times a random Gaussian matrix seeded from the log key (``sketch_dims``
  columns, scaled so distances are preserved in expectation, Johnson-Lindenstrauss): near rows stay
  near. It is a linear map: whoever holds the key and a sketch of a row with at most ``sketch_dims``
  features can solve for the row, so guard the key like the raw data, or keep ``sketch_dims`` below
  the input width;
* ``top`` and ``margin`` -- the top label and the top-1 minus top-2 probability, never the full vector.

The raw row is written (as ``raw``) only with ``raw_inputs: true``.

The key comes from ``key_env`` (an environment variable holding at least 16 characters) or
``key_file`` (a file holding at least 16 bytes). Use the same key across restarts: sketches and
fingerprints made under different keys cannot be compared (each record carries a ``key_id`` so
``privaudit monitor`` can tell). Without a ``path`` no log is written and a random key is used.

Writes go to an in-memory buffer (the proxy's event loop never waits on the disk); a background
thread flushes it every ``flush_seconds`` or at ``flush_records`` lines, and :meth:`QueryLog.close`
(called on shutdown, SIGTERM included, and at interpreter exit) writes whatever is left. The file
is rotated past ``rotate_bytes`` and at each UTC day's change; rotated files are named
``<stem>.<UTC time>Z<suffix>`` and deleted after ``retention_days``.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from privaudit.errors import ConfigError
from privaudit.guard.detectors import EventFeatures
from privaudit.guard.events import QueryEvent

RECORD_VERSION = 1
MIN_KEY_BYTES = 16
STAMP = "%Y%m%dT%H%M%S"
log = logging.getLogger("privaudit.guard.querylog")


class LogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    key_env: str | None = None
    key_file: str | None = None
    raw_inputs: bool = False
    sketch_dims: int = Field(32, ge=2, le=1024)
    feature_scale: list[float] | None = None  # divide each feature by this before sketching (mixed units)
    sketch_digits: int = Field(6, ge=2, le=17)  # significant digits stored per sketch value
    flush_seconds: float = Field(1.0, gt=0.0)
    flush_records: int = Field(1000, ge=1)
    rotate_bytes: int | None = Field(100_000_000, ge=1)
    rotate_daily: bool = True
    retention_days: float | None = Field(30.0, gt=0.0)


def load_key(cfg: LogConfig) -> bytes:
    """The log key from the configuration; a random one when nothing is persisted."""
    if cfg.key_env and cfg.key_file:
        raise ConfigError("log.key_file: give key_env or key_file, not both")
    if cfg.key_env:
        value = os.environ.get(cfg.key_env)
        if value is None:
            raise ConfigError(f"log.key_env: environment variable {cfg.key_env} is not set")
        key = value.encode("utf-8")
    elif cfg.key_file:
        try:
            key = Path(cfg.key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"log.key_file: cannot read {cfg.key_file}: {exc.strerror or exc}") from None
    elif cfg.path:
        raise ConfigError("log.key_env: a query log needs a key (key_env or key_file) so its fingerprints "
                          "and sketches stay comparable across restarts")
    else:
        return os.urandom(32)
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"log.{'key_env' if cfg.key_env else 'key_file'}: the key must be at least "
                          f"{MIN_KEY_BYTES} bytes")
    return key


def subkey(key: bytes, label: str) -> bytes:
    """Independent keys for independent uses of the one log key."""
    return hmac.new(key, label.encode("utf-8"), hashlib.sha256).digest()


def output_summary(outputs: NDArray[np.float64] | None, n: int) -> tuple[list[int | None], NDArray[np.float64]]:
    """Top label and top-1 minus top-2 probability per row (NaN margins when there is no output)."""
    if outputs is None:
        return [None] * n, np.full(n, np.nan)
    p = np.atleast_2d(np.asarray(outputs, dtype=float))
    if p.shape[0] != n or p.shape[1] == 0:
        return [None] * n, np.full(n, np.nan)
    if p.shape[1] == 1:  # one probability: binary, the other class is 1 - p
        p = np.hstack([1 - p, p])
    order = np.argsort(-p, axis=1, kind="stable")
    rows = np.arange(n)
    margins = p[rows, order[:, 0]] - p[rows, order[:, 1]]
    return [int(t) for t in order[:, 0]], margins


BLOCK = 4096  # input features per cached piece of a projection
PROJECTION_CACHE_BYTES = 16 * 2**20  # projection pieces kept (least recently used dropped first)


class Featurizer:
    """Turns raw rows into fingerprints and sketches under the log key. Pure apart from a cache.

    The projection for rows of width ``d`` is drawn from a seed derived from the key and ``d``;
    wider than ``BLOCK`` features it is drawn piece by piece (one seed per piece of ``BLOCK``
    features), so no request makes one huge matrix. Pieces live in a cache of at most
    ``PROJECTION_CACHE_BYTES``: a caller sending rows of ever new widths costs time, not memory."""

    def __init__(self, key: bytes, dims: int = 32, feature_scale: list[float] | None = None,
                 cache_bytes: int = PROJECTION_CACHE_BYTES) -> None:
        self.fp_key = subkey(key, "fingerprint/v1")
        self.sketch_key = subkey(key, "sketch/v1")
        self.key_id = subkey(key, "key-id/v1").hex()[:12]
        self.dims = dims
        self.scale = None if feature_scale is None else np.asarray(feature_scale, dtype=float)
        self.cache_bytes = cache_bytes
        self._projections: OrderedDict[tuple[int, int], NDArray[np.float64]] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    @property
    def cached_bytes(self) -> int:
        return self._cached

    def _piece(self, d: int, block: int) -> NDArray[np.float64]:
        key = (d, block)
        with self._lock:
            proj = self._projections.get(key)
            if proj is not None:
                self._projections.move_to_end(key)
                return proj
        label = str(d) if d <= BLOCK else f"{d}/{block}"
        seed = int.from_bytes(hmac.new(self.sketch_key, label.encode(), hashlib.sha256).digest()[:8], "big")
        rows = d if d <= BLOCK else min(BLOCK, d - block * BLOCK)
        # Entries N(0, 1/k): E|xR|^2 = |x|^2, so sketch distances match input distances on average.
        proj = np.random.default_rng(seed).normal(0.0, 1.0 / np.sqrt(self.dims), size=(rows, self.dims))
        with self._lock:
            if key not in self._projections:
                self._projections[key] = proj
                self._cached += proj.nbytes
            while self._cached > self.cache_bytes and len(self._projections) > 1:
                _, old = self._projections.popitem(last=False)
                self._cached -= old.nbytes
        return proj

    def projection(self, d: int) -> NDArray[np.float64]:
        """The whole (d, dims) projection (assembled from its pieces when d > BLOCK)."""
        if d <= BLOCK:
            return self._piece(d, 0)
        return np.vstack([self._piece(d, b) for b in range((d + BLOCK - 1) // BLOCK)])

    def fingerprints(self, rows: NDArray[np.float64]) -> tuple[str, ...]:
        rows = np.ascontiguousarray(rows, dtype=np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0
        return tuple(hmac.new(self.fp_key, r.tobytes(), hashlib.sha256).hexdigest()[:32] for r in rows)

    def sketches(self, rows: NDArray[np.float64]) -> NDArray[np.float64]:
        x = np.nan_to_num(np.asarray(rows, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if self.scale is not None and self.scale.shape == (x.shape[1],):
            x = x / np.where(self.scale > 0, self.scale, 1.0)
        d = x.shape[1]
        if x.size == 0:
            return np.zeros((x.shape[0], self.dims))
        if d <= BLOCK:
            out = x @ self._piece(d, 0)
        else:
            out = np.zeros((x.shape[0], self.dims))
            for b in range((d + BLOCK - 1) // BLOCK):
                out += x[:, b * BLOCK:(b + 1) * BLOCK] @ self._piece(d, b)
        if not np.all(np.isfinite(out)):
            # The proxy refuses values this large before forwarding; anything else reaching here is a
            # monitoring error (a refusal), never a row silently left out of the detectors.
            raise ValueError("a row's sketch is not finite (feature values too large)")
        return out

    def features(self, event: QueryEvent) -> EventFeatures:
        rows = as_rows(event.inputs)
        top, margins = output_summary(event.outputs, rows.shape[0])
        return EventFeatures(time=float(event.time), principal=event.principal, tier=event.tier,
                             client_ip=event.client_ip, request_id=event.request_id,
                             fingerprints=self.fingerprints(rows), sketches=self.sketches(rows),
                             top=tuple(top), margins=margins, decision=event.decision, status=int(event.status))


def as_rows(inputs: Any) -> NDArray[np.float64]:
    """The request's rows as a 2-D float array: one 1-D row becomes one row; no rows, shape (0, 0)."""
    rows = np.asarray(inputs, dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 0))
    return rows.reshape(1, -1) if rows.ndim == 1 else rows.reshape(rows.shape[0], -1)


def _sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def make_record(event: QueryEvent, f: EventFeatures, key_id: str, scores: dict[str, float], level: str,
                raw_inputs: bool = False, digits: int = 6) -> dict[str, Any]:
    rows = []
    for fp, sketch, top, margin in zip(f.fingerprints, f.sketches, f.top, f.margins):
        rows.append({"fingerprint": fp, "sketch": [_sig(v, digits) for v in sketch.tolist()], "top": top,
                     "margin": None if not np.isfinite(margin) else round(float(margin), 4)})
    record: dict[str, Any] = {
        "v": RECORD_VERSION, "time": f.time, "principal": f.principal, "tier": f.tier, "client_ip": f.client_ip,
        "request_id": f.request_id, "n_rows": f.n_rows, "decision": f.decision, "status": f.status,
        "level": level, "key_id": key_id, "scores": {k: round(v, 4) for k, v in scores.items()}, "rows": rows}
    if raw_inputs:
        record["raw"] = as_rows(event.inputs).tolist()
    return record


def features_from_record(rec: dict[str, Any]) -> EventFeatures:
    """The detectors' view of a stored record: the same as the proxy had, up to sketch rounding."""
    rows = rec.get("rows") or []
    sketches = np.asarray([r["sketch"] for r in rows], dtype=float) if rows else np.zeros((0, 1))
    margins = np.asarray([np.nan if r.get("margin") is None else r["margin"] for r in rows], dtype=float)
    return EventFeatures(time=float(rec["time"]), principal=str(rec["principal"]), tier=str(rec.get("tier") or ""),
                         client_ip=str(rec.get("client_ip") or ""), request_id=str(rec.get("request_id") or ""),
                         fingerprints=tuple(str(r["fingerprint"]) for r in rows), sketches=sketches,
                         top=tuple(r.get("top") for r in rows), margins=margins,
                         decision=str(rec.get("decision") or ""), status=int(rec.get("status") or 0))


def rotated_time(path: Path, stem: str, suffix: str) -> float | None:
    """When a rotated file was rotated, from its name; None for any other file."""
    name = path.name
    if not (name.startswith(stem + ".") and name.endswith(suffix)):
        return None
    middle = name[len(stem) + 1: len(name) - len(suffix)].split(".")[0]
    try:
        return datetime.strptime(middle, STAMP + "Z").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


class QueryLog:
    """Append-only JSONL with a buffer, a flusher thread, rotation and retention."""

    def __init__(self, cfg: LogConfig, clock: Callable[[], float] = time.time) -> None:
        if not cfg.path:
            raise ConfigError("log.path: no path configured")
        self.cfg = cfg
        self.path = Path(cfg.path)
        self.clock = clock
        self.written = 0
        self.errors = 0
        self.dropped = 0
        self._buffer: list[str] = []
        self._lock = threading.Lock()  # guards the buffer: held only to append or swap
        self._io = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._closed = False
        self._fh: Any = None
        self._size = 0
        self._day = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
        except OSError as exc:
            raise ConfigError(f"log.path: cannot write {self.path}: {exc.strerror or exc}") from None
        self.enforce_retention()
        self._thread = threading.Thread(target=self._run, name="privaudit-querylog", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        with self._lock:
            if self._closed:  # a request finishing during shutdown: say so rather than fail it
                self.dropped += 1
                log.warning("query log: record after close dropped (request %s)", record.get("request_id"))
                return
            self._buffer.append(line)
            full = len(self._buffer) >= self.cfg.flush_records
        if full:
            self._wake.set()

    def _day_of(self, t: float) -> str:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y%m%d")

    def _open(self) -> None:
        # 0600: the log names principals and addresses; nobody else on the host needs it.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        st = os.fstat(fd)
        self._size = st.st_size
        self._day = self._day_of(st.st_mtime if st.st_size else self.clock())

    def _rotate(self, now: float) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime(STAMP)
        target = self.path.with_name(f"{self.path.stem}.{stamp}Z{self.path.suffix}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.stem}.{stamp}Z.{n}{self.path.suffix}")
            n += 1
        os.replace(self.path, target)
        self._open()
        self._day = self._day_of(now)
        self.enforce_retention(now)

    def enforce_retention(self, now: float | None = None) -> list[Path]:
        """Delete rotated files older than ``retention_days``; return what was deleted."""
        if self.cfg.retention_days is None:
            return []
        horizon = (self.clock() if now is None else now) - self.cfg.retention_days * 86400
        deleted = []
        for p in self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"):
            t = rotated_time(p, self.path.stem, self.path.suffix)
            if t is not None and t < horizon:
                try:
                    p.unlink()
                    deleted.append(p)
                except OSError as exc:
                    log.warning("query log: cannot delete %s: %s", p, exc)
        return deleted

    def flush(self) -> None:
        with self._io:
            with self._lock:
                lines, self._buffer = self._buffer, []
            if not lines or self._fh is None:
                return
            done = 0
            try:
                for line in lines:
                    now = self.clock()
                    size = len(line.encode("utf-8"))
                    too_big = self.cfg.rotate_bytes is not None and self._size and self._size + size > self.cfg.rotate_bytes
                    if too_big or (self.cfg.rotate_daily and self._size and self._day_of(now) != self._day):
                        self._rotate(now)
                    self._fh.write(line)
                    self._size += size
                    self.written += 1
                    done += 1
                self._fh.flush()
            except OSError as exc:  # disk full, file removed...: keep what is unwritten for the next try
                self.errors += 1
                log.error("query log: write to %s failed: %s", self.path, exc)
                with self._lock:
                    self._buffer[:0] = lines[done:]

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.cfg.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Write every buffered record and close the file. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.flush()
        with self._io:
            if self._fh is not None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
                self._fh = None
        atexit.unregister(self.close)
