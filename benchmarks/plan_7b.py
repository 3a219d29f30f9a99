#!/usr/bin/env python3
"""A 7B-class plan on paper (issue 25, item 5): each stage's peak host memory and time for
Llama-2-7b and Mistral-7B, for fp32, fp16 and int4 and a TensorRT fp16 build, from the formula the
memory check uses (NNDF/runtime/memory.py) and stage times measured on TinyLlama-1.1B.

    python benchmarks/plan_7b.py [--measured benchmarks/results-export-memory-tinyllama.json] [--json OUT]

- Memory: `memory.estimate` on the published config built on the meta device (nothing is allocated),
  batch 1, 128 prompt + 64 new tokens: exactly what `run.py --torch-dir` on the published (fp16)
  checkpoint would compute before refusing or starting.
  For setups that run on a GPU, the host stages are the same formula with the sessions on the GPU, and
  the GPU's share (the graph's weights and the KV cache) is given beside them; TensorRT's own builder
  memory cannot be measured here and is the estimate's stated assumption.
- Time: each stage's seconds measured by benchmarks/export_memory.py on TinyLlama-1.1B (the JSON named
  by --measured), scaled by the ratio of parameters. Export stages stream weights, so they scale about
  linearly; a stage with no measurement here (TensorRT's build) is left blank, not guessed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GIB = float(1 << 30)
VARIANTS = ("Llama-2-7b-hf", "Mistral-7B-v0.1")
# setup -> (backends, extra flags, runs on a GPU)
SETUPS = {
    "onnxrt fp32 (CPU)": (("onnxrt",), ("--use-cache",), False),
    "onnxrt int4 (CPU)": (("onnxrt",), ("--use-cache", "--quantize", "int4"), False),
    "onnxrt fp16 (GPU)": (("onnxrt",), ("--use-cache", "--fp16"), True),
    "trt fp16 (GPU)": (("trt",), ("--use-cache", "--fp16"), True),
    "trt int4 fp16 (GPU)": (("trt",), ("--use-cache", "--fp16", "--quantize", "int4"), True),
}
# an estimate's stage -> the stage of benchmarks/export_memory.py whose time it takes
TIMED = {
    "load": ("load",),
    "onnxrt graph written from the weights": ("onnxrt graph from the weights, {q}",),
    "export fp32": ("export fp32 (torch -> ONNX, folding)",),
    "export fp16": ("export fp16 (torch -> ONNX -> fp16)",),
    "quantize int4 (trt)": ("quantize int4 (trt QDQ, blocks of 64)",),
    "ONNX Runtime fusions": ("ONNX Runtime fusions, fp32",),
    "opening sessions": ("onnxrt session, from the weights, {q}", "onnxrt session, {p}"),
}


def plan(variant: str, setup: str, measured: dict) -> dict:
    from NNDF.cli import parse_args
    from NNDF.registry import get_family
    from NNDF.runtime import memory

    backends, flags, gpu = SETUPS[setup]
    family = get_family("LLAMA")
    # the published checkpoint, as --torch-dir of a folder holding its config.json: the dtype it loads in
    # (fp16 for these under --quantize on onnxrt) is the one a user's run holds; nothing else is read
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(family.config_dir() / family.find_variant(variant).config_file, Path(folder) / "config.json")
        cfg = parse_args(["benchmark", "LLAMA", *backends, "--torch-dir", folder, "--variant", variant,
                          "--working-dir", "/nonexistent", *flags, *([] if gpu else ["--cpu"])])
        meta = family.meta_model(cfg)

    cfg = replace(cfg, generation=replace(cfg.generation, max_new_tokens=64))
    shape = memory.ModelShape.of(*meta)
    work = memory.Workload(1, 128, 64)
    original = memory.runs_on_host
    memory.runs_on_host = lambda backend, c: not gpu          # the machine this setup is for
    try:
        est = memory.estimate(cfg, shape, work, family, family.onnxrt_from_weights(shape.config, cfg) and not gpu)
        on_host = replace(cfg, cpu=True)
        memory.runs_on_host = lambda backend, c: True
        host_run = memory.estimate(on_host, shape, work, family)
    finally:
        memory.runs_on_host = original
    scale = shape.parameters / measured["parameters"] if measured else None
    times = {row["stage"]: row["seconds"] for row in measured.get("stages", [])} if measured else {}
    q = cfg.quantize.scheme if cfg.quantize else "fp32"
    p = "fp16" if cfg.fp16 else "fp32"
    stages = []
    for stage in est.all_stages:
        seconds = None
        for name in TIMED.get(stage.name, ()):
            if name.format(q=q, p=p) in times:
                seconds = round(times[name.format(q=q, p=p)] * scale)
                break
        stages.append({"stage": stage.name, "host_gib": round(stage.bytes / GIB, 1), "seconds": seconds})
    gpu_gib = (shape.graph_bytes(cfg.fp16, cfg.quantize) + host_run.scaling) / GIB if gpu else 0.0
    return {"variant": variant, "setup": setup, "parameters": shape.parameters,
            "fp32_weights_gib": round(shape.parameters * 4 / GIB, 1), "peak_host_gib": round(est.peak.bytes / GIB, 1),
            "peak_stage": est.peak.name, "gpu_gib": round(gpu_gib, 1), "stages": stages}


def main(argv: list[str]) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, default=ROOT / "benchmarks" / "results-export-memory-tinyllama.json")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    measured = json.loads(args.measured.read_text()) if args.measured.is_file() else {}
    if not measured:
        print(f"note: no stage times ({args.measured} is missing): memory only", file=sys.stderr)
    rows = [plan(v, s, measured) for v in VARIANTS for s in SETUPS]
    for row in rows:
        print(f"\n{row['variant']}, {row['setup']}: peak host {row['peak_host_gib']} GiB in '{row['peak_stage']}'"
              + (f", GPU about {row['gpu_gib']} GiB (weights + KV cache)" if row["gpu_gib"] else ""))
        for s in row["stages"]:
            t = f"{s['seconds']:>5} s" if s["seconds"] is not None else "    - "
            print(f"  {s['stage']:<40} {s['host_gib']:6.1f} GiB  {t}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
