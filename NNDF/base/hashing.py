"""Content hashes that name cached artifacts: of JSON-able keys, and of files read in chunks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def stable_hash(obj, length: int = 10) -> str:
    """A short content hash of a JSON-serialisable key (sorted, so order-free)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
