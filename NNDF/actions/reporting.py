"""Helpers the actions share: the result file, settings and tables."""

from __future__ import annotations

import json
from pathlib import Path

from NNDF.base.config import RunConfig
from NNDF.export.workdir import atomic_write, disk_error


def save_json(path: Path | None, result: dict) -> None:
    """Write atomically so a reader never sees half a file, and nothing is left behind on failure."""
    if path is None:
        return
    path = Path(path)
    fix = "free some space or pass another --save-output-fpath"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(e, path, fix) from None
    atomic_write(path, json.dumps(result, indent=2, sort_keys=False, default=float).encode(), fix)


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
            "max_new_tokens": g.max_new_tokens, "min_new_tokens": g.min_new_tokens, **sampling_dict(g)}


def sampling_dict(g) -> dict:
    """The sampling settings a result depends on (only those in effect)."""
    out = {"do_sample": g.do_sample}
    if g.do_sample:
        out.update(seed=g.seed, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    if g.repetition_penalty != 1.0:
        out["repetition_penalty"] = g.repetition_penalty
    return out


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def megabytes(value: float | None) -> str:
    """A measured memory figure for a table ("-" where it was not measured)."""
    return "-" if value is None else f"{value:.0f}"
