"""Cache entries are signed, so an edited cache file is recomputed rather than trusted.

Anyone who can write to ``~/.cache/privaudit`` could otherwise change a cached score and turn a failing
gate into a pass on the next run. Each entry carries an HMAC-SHA256 under a random key kept in the
cache directory (``cache.key``, created with mode 0600): an entry whose HMAC does not match is
ignored with a warning and computed again. This stops edits by whoever cannot read the key file;
the key file's own permissions are what protect it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path

log = logging.getLogger("privaudit.cache")
KEY_FILE = "cache.key"
KEY_BYTES = 32


def cache_key(directory: Path) -> bytes | None:
    """The directory's signing key, created on first use; None when it can be neither read nor made."""
    path = directory / KEY_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            return key if len(key) >= KEY_BYTES else None
        key = os.urandom(KEY_BYTES)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError:
        return None


def sign(key: bytes, *parts: bytes) -> str:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def verified(key: bytes | None, mac: str, *parts: bytes, what: str) -> bool:
    """Whether ``mac`` signs ``parts``; warns (naming ``what``) when it does not."""
    if key is not None and hmac.compare_digest(sign(key, *parts), mac.strip()):
        return True
    log.warning("cache entry %s does not carry a valid signature (edited, or from another cache); "
                "ignoring it and computing it again", what)
    return False
