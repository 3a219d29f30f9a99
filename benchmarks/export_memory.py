#!/usr/bin/env python3
"""Peak host memory and time of every stage of producing a decoder's artifacts, for the README's
Memory section and the estimate's formula (NNDF/runtime/memory.py).

    python benchmarks/export_memory.py LLAMA TinyLlama-1.1B-Chat-v1.0 --random-weights
    python benchmarks/export_memory.py LLAMA tinyllama --torch-dir /path/to/folder --json out.json

One process does what a run does, in order, with the torch model loaded throughout (a run holds it
while it exports), calling the same functions the backends call:

    load -> export fp32 -> ONNX Runtime fusions -> onnxrt session
         -> quantize int8 / int4 (onnxrt, MatMulNBits) -> their fusions -> their sessions
         -> export fp16 -> quantize int4 for TensorRT (QDQ, blocks of 64) -> the fp16 session

and, for LLAMA (`--paths weights-fp32,weights-int8,weights-int4`), onnxrt's decoder written from the
weights (NNDF/export/llama_graph.py: what run.py's onnxrt runs with the KV cache on the CPU), then its
session. With one quantized path from the weights alone (`--paths weights-int4`) the model loads as that
run loads it: a bf16 or fp16 checkpoint in its own dtype, so `weight_bytes` are the checkpoint's.

Each stage's peak is the kernel's high-water mark of this process's resident set, reset before the
stage (NNDF/runtime/peak_memory.py), next to what was resident when it began, so a stage's own cost
is peak - before. Beside it, `peak_anon_gib` is the sampled peak of what the process allocated: the
resident set less the pages of mapped files (a safetensors checkpoint being read), which the kernel
drops under pressure and which so cannot run the machine out of memory. Every graph is the cached
decoder (`--use-cache`). Artifacts go to a temporary working dir (or --working-dir), removed at the
end unless --keep. The load average and CPU are recorded beside the figures: this machine is shared.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from runner import head_commit, lscpu_fields  # noqa: E402

GIB = float(1 << 30)
PATHS = ("fp32", "int8", "int4", "fp16", "trt-int4")
FROM_WEIGHTS = ("weights-fp32", "weights-int8", "weights-int4")   # LLAMA: onnxrt's decoder written from the weights


def cpu_model() -> str:
    return lscpu_fields().get("Model name") or platform.processor()


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class Stages:
    """Each stage measured in turn: its peak, what was resident when it began, its time."""

    def __init__(self):
        self.rows: list[dict] = []

    def measure(self, name: str, fn):
        from NNDF.runtime.peak_memory import PeakMemory, resident_bytes

        gc.collect()
        trim_heap()
        before = resident_bytes()
        load_start = load_average()
        start = time.perf_counter()
        with PeakMemory(sample_s=0.02) as peak:
            result = fn()
        row = {"stage": name, "seconds": round(time.perf_counter() - start, 1),
               "resident_before_gib": round(before / GIB, 3), "peak_gib": round(peak.host_mb / 1024, 3),
               "peak_anon_gib": round(peak.anon_mb / 1024, 3) if peak.anon_mb is not None else None,
               "load_average": [load_start, load_average()]}
        self.rows.append(row)
        print(f"{name:<34} peak {row['peak_gib']:6.2f} GiB, allocated {row['peak_anon_gib'] or 0:6.2f} GiB  "
              f"(resident before {row['resident_before_gib']:5.2f})  "
              f"{row['seconds']:7.1f} s  load {row['load_average'][0]:.2f}-{row['load_average'][1]:.2f}", flush=True)
        return result


def checkpoint_bytes(folder: str) -> int:
    """Bytes of a checkpoint's weight files on disk (what issue 25 bounds a --quantize from an fp16/bf16
    checkpoint by)."""
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.suffix in (".safetensors", ".bin"))


def trim_heap() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim), so that what an earlier stage freed
    is not counted as resident under the next: a run goes through one path, this script through all of them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def session_stage(stages: Stages, name: str, path: Path):
    from NNDF.runtime.ort_session import OrtSession
    from NNDF.runtime.peak_memory import resident_bytes

    session = stages.measure(name, lambda: OrtSession(path, allow_cuda=False))
    stages.rows[-1]["resident_with_session_gib"] = round(resident_bytes() / GIB, 3)
    del session
    gc.collect()


def summary(result: dict) -> str:
    """The highest peak of producing an artifact (item 1's bound: at most 2.5x the fp32 weights), apart from
    the sessions', which here hold the torch model as well (a run releases it once its graphs exist)."""
    weights = result["weight_bytes"]
    export = [r for r in result["stages"] if not r["stage"].startswith("onnxrt session")]
    sessions = [r for r in result["stages"] if r["stage"].startswith("onnxrt session")]
    line = f"{result['variant']}: {weights / GIB:.2f} GiB of weights, largest tensor " \
           f"{result['largest_tensor_bytes'] / GIB:.3f} GiB"
    if export:
        top = max(export, key=lambda r: r["peak_gib"])
        line += f"; highest export stage peak {top['peak_gib']:.2f} GiB ({top['peak_gib'] * GIB / weights:.2f}x the " \
                f"weights, {top['stage']})"
        checkpoint = result.get("checkpoint_bytes")
        anon = max((r for r in export if r.get("peak_anon_gib") is not None), key=lambda r: r["peak_anon_gib"], default=None)
        if checkpoint and anon:
            line += f"; checkpoint {checkpoint / GIB:.2f} GiB on disk: highest resident peak " \
                    f"{top['peak_gib'] * GIB / checkpoint:.2f}x it, highest allocated peak {anon['peak_anon_gib']:.2f} GiB " \
                    f"({anon['peak_anon_gib'] * GIB / checkpoint:.2f}x, {anon['stage']})"
    if sessions:
        top = max(sessions, key=lambda r: r["peak_gib"] - r["resident_before_gib"])
        line += f"; largest session {top['peak_gib'] - top['resident_before_gib']:.2f} GiB above what was " \
                f"resident ({top['stage']})"
    return line


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("variant")
    parser.add_argument("--torch-dir")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"some of {','.join(PATHS + FROM_WEIGHTS)}")
    parser.add_argument("--working-dir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    paths = args.paths.split(",")

    from NNDF.base.config import QuantSettings
    from NNDF.cli import parse_args
    from NNDF.export.onnx_export import MODEL_FILE, exported, ort_optimized
    from NNDF.export.onnx_weights import largest_bytes, open_graph
    from NNDF.export.quantize import quantized_graph
    from NNDF.export.workdir import WorkingDir
    from NNDF.models.artifacts import artifact_subdir
    from NNDF.registry import resolve

    work = Path(args.working_dir or tempfile.mkdtemp(prefix="export-memory-"))
    flags = ["run", args.family, "onnxrt", "--variant", args.variant, "--working-dir", str(work), "--use-cache"]
    flags += ["--torch-dir", args.torch_dir] if args.torch_dir else []
    flags += ["--random-weights"] if args.random_weights else []
    quantized = {p.split("-")[1] for p in paths if p in ("weights-int8", "weights-int4")}
    if len(quantized) == 1 and len(paths) == 1:
        # the run --quantize makes, loaded as it loads (a bf16/fp16 checkpoint in its own dtype: family.load_dtype)
        flags += ["--quantize", quantized.pop()]
    family, cfg = resolve(parse_args(flags))
    stages = Stages()
    print(f"{args.variant} on {cpu_model()}, {os.cpu_count()} CPUs", flush=True)
    loaded = stages.measure("load", lambda: family.load(cfg))
    model = loaded.model
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    workdir, subdir = WorkingDir(work), artifact_subdir(family, loaded)
    onnx_dir = workdir.artifact_dir(*subdir, "onnx")
    spec = family.decoder_graph(loaded, True)
    layout = family.layout(loaded)
    rotary = (model, loaded.max_positions) if layout.ort_rotary else None

    def export(fp16: bool) -> Path:
        return exported(workdir, subdir, model, spec, loaded.source_key, fp16, verify=False).file(MODEL_FILE)

    def fused(path: Path) -> Path:
        return ort_optimized(path, layout.ort_fusions, model.config, workdir, rotary)

    largest = 0
    try:
        for name in (p for p in FROM_WEIGHTS if p in paths):
            from NNDF.export.llama_graph import llama_graph

            scheme = name.split("-")[1]
            q = None if scheme == "fp32" else QuantSettings(scheme, 64, 4)
            path = stages.measure(f"onnxrt graph from the weights, {scheme}",
                                  lambda: llama_graph(workdir, onnx_dir, model, loaded.source_key, q, loaded.max_positions))
            largest = max(largest, largest_bytes(open_graph(path)))
            session_stage(stages, f"onnxrt session, from the weights, {scheme}", path)
        if {"fp32", "int8", "int4"} & set(paths):
            fp32 = stages.measure("export fp32 (torch -> ONNX, folding)", lambda: export(False))
            largest = largest_bytes(open_graph(fp32))
            if "fp32" in paths:
                path = stages.measure("ONNX Runtime fusions, fp32", lambda: fused(fp32))
                session_stage(stages, "onnxrt session, fp32", path)
            for scheme in ("int8", "int4"):
                if scheme in paths:
                    q = QuantSettings(scheme, 32, 4)
                    path = stages.measure(f"quantize {scheme} (onnxrt)",
                                          lambda: quantized_graph(fp32, q, "onnxrt", workdir, onnx_dir))
                    path = stages.measure(f"ONNX Runtime fusions, {scheme}", lambda: fused(path))
                    session_stage(stages, f"onnxrt session, {scheme}", path)
        if {"fp16", "trt-int4"} & set(paths):
            fp16 = stages.measure("export fp16 (torch -> ONNX -> fp16)", lambda: export(True))
            largest = largest or 2 * largest_bytes(open_graph(fp16))     # in fp32 bytes, as the fp32 paths give it
            if "trt-int4" in paths:      # before the fp16 session, whose heap would stay resident under it
                q = QuantSettings("int4", 64, 4)
                stages.measure("quantize int4 (trt QDQ, blocks of 64)",
                               lambda: quantized_graph(fp16, q, "trt", workdir, onnx_dir))
            if "fp16" in paths:
                session_stage(stages, "onnxrt session, fp16", fp16)
        sizes = {d.name: sum(f.stat().st_size for f in d.iterdir()) for d in onnx_dir.iterdir() if d.is_dir()}
    finally:
        if not args.keep and not args.working_dir:
            shutil.rmtree(work, ignore_errors=True)
    result = {"variant": args.variant, "cpu": cpu_model(), "cpus": os.cpu_count(), "loaded_dtype": str(model.dtype),
              "checkpoint_bytes": checkpoint_bytes(args.torch_dir) if args.torch_dir else None, "commit": head_commit(),
              "parameters": sum(p.numel() for p in model.parameters()), "weight_bytes": weights,
              "largest_tensor_bytes": largest, "artifact_bytes": sizes, "stages": stages.rows}
    print(summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
