#!/usr/bin/env python3
"""Peak host memory to load a model and to export it, for the README's memory table.

    python benchmarks/export_memory.py BLOOM bloom-560m
    python benchmarks/export_memory.py LLAMA TinyLlama-1.1B-Chat-v1.0 --quantize int4 --quant-block-size 64

Loads the real architecture with random weights (or `--torch-dir DIR`), then exports its cached decoder
(fp32, no verification), reporting Linux's peak resident set (VmHWM), reset between the two phases so
each peak is its own. With `--quantize` (LLAMA), the second phase writes onnxrt's quantized decoder from
the weights (NNDF/export/llama_graph.py), as `--quantize` on onnxrt does, and a third opens its ONNX
Runtime session.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("variant")
    parser.add_argument("--torch-dir", help="load this HF folder instead of random weights")
    parser.add_argument("--quantize", choices=("int4", "int8"), help="LLAMA: write onnxrt's quantized decoder")
    parser.add_argument("--quant-block-size", default="64")
    args = parser.parse_args()

    from NNDF.cli import parse_args
    from NNDF.export.onnx_export import exported
    from NNDF.export.workdir import WorkingDir
    from NNDF.kinds.decoder_only.graphs import decoder_spec
    from NNDF.registry import resolve

    source = ["--torch-dir", args.torch_dir] if args.torch_dir else ["--random-weights"]
    quantize = ["--quantize", args.quantize, "--quant-block-size", args.quant_block_size] if args.quantize else []
    with tempfile.TemporaryDirectory() as work:
        family, cfg = resolve(parse_args(["run", args.family, "onnxrt", "--use-cache", "--variant", args.variant,
                                          *source, *quantize, "--working-dir", work]))
        start = time.perf_counter()
        loaded = family.load(cfg)
        weights = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**30
        print(f"{args.variant}: {weights:.2f} GiB of fp32 weights; load peak {peak_gib():.2f} GiB "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        reset_peak()
        start = time.perf_counter()
        if args.quantize:
            from NNDF.export.llama_graph import llama_graph
            from NNDF.runtime.ort_session import OrtSession

            path = llama_graph(WorkingDir(work), Path(work) / "onnx", loaded.model, loaded.source_key, cfg.quantize,
                               loaded.max_positions)
            size = sum(f.stat().st_size for f in path.parent.iterdir()) / 2**30
            print(f"{args.variant}: onnxrt {args.quantize} decoder written from the weights ({size:.2f} GiB of files), "
                  f"peak {peak_gib():.2f} GiB ({time.perf_counter() - start:.0f} s)", flush=True)
            reset_peak()
            session = OrtSession(path, allow_cuda=False)
            print(f"{args.variant}: its ONNX Runtime session beside the model, peak {peak_gib():.2f} GiB")
            del session
            return
        spec = decoder_spec(loaded.model, family.layout(loaded), with_cache=True)
        exported(WorkingDir(work), (family.name, args.variant), loaded.model, spec, loaded.source_key, False, verify=False)
        print(f"{args.variant}: export peak {peak_gib():.2f} GiB ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
