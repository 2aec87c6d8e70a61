"""Atomic file writes: a failed run never leaves a half-written or clobbered output."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; a report should get the permissions any new file would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npy(path: str | Path, array: NDArray[np.float64]) -> None:
    """One array in .npy format (never pickled), written atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float64), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
