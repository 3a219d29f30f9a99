#!/usr/bin/env python3
"""Peak host memory to load a model and to export it, for the README's memory table.

    python benchmarks/export_memory.py BLOOM bloom-560m

Loads the real architecture with random weights, then exports its cached decoder
(fp32, no verification), reporting Linux's peak resident set (VmHWM), reset
between the two phases so each peak is its own.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(family_name: str, variant: str) -> None:
    from NNDF.cli import parse_args
    from NNDF.export.onnx_export import exported
    from NNDF.export.workdir import WorkingDir
    from NNDF.kinds.decoder_only.graphs import decoder_spec
    from NNDF.registry import resolve

    with tempfile.TemporaryDirectory() as work:
        family, cfg = resolve(parse_args(["run", family_name, "--variant", variant, "--random-weights",
                                          "--working-dir", work]))
        start = time.perf_counter()
        loaded = family.load(cfg)
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**30
        print(f"{variant}: {weights:.2f} GiB of fp32 weights; load peak {peak_gib():.2f} GiB "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        reset_peak()
        start = time.perf_counter()
        spec = decoder_spec(loaded.model, family.layout(loaded), with_cache=True)
        exported(WorkingDir(work), (family.name, variant), loaded.model, spec, loaded.source_key, False, verify=False)
        print(f"{variant}: export peak {peak_gib():.2f} GiB ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
