"""Helpers the actions share: the result file, settings and tables."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from NNDF.config import RunConfig


def save_json(path: Path | None, result: dict) -> None:
    """Write atomically so a reader never sees half a file."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(result, f, indent=2, sort_keys=False, default=float)
    os.replace(tmp, path)


def identity(backend) -> dict:
    """What every backend's result names, so results from other machines and settings never get confused."""
    return {"device": backend.device, "precision": backend.precision}


def label(backend) -> str:
    """A backend as tables name it, e.g. "frameworks (cuda:0, fp16)"."""
    return f"{backend.name} ({backend.device}, {backend.precision})"


def settings_dict(cfg: RunConfig) -> dict:
    g = cfg.generation
    return {"family": cfg.family, "variant": cfg.variant, "backends": list(cfg.backends), "batch_size": cfg.batch_size,
            "use_cache": g.use_cache, "num_beams": g.num_beams, "fp16": cfg.fp16, "use_mask": cfg.use_mask,
            "max_new_tokens": g.max_new_tokens, "min_new_tokens": g.min_new_tokens}


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
