#!/usr/bin/env python3
"""GPU speed, measured: frameworks (PyTorch on CUDA, fp32 and fp16) against onnxrt (CUDA
execution provider) and trt (fp32 and fp16, with and without CUDA graphs), for gpt2 and
t5-small with random weights (timing does not depend on weight values): batch 1, 128 prompt
tokens, exactly 64 new tokens, cache on. Each configuration runs in its own process.

A configuration whose backend this machine lacks (no onnxruntime-gpu, no TensorRT) is
recorded as skipped with run.py's one-line reason, never as a number. Without a CUDA GPU the
script stops at once.

    python benchmarks/gpu_speed.py [--cases gpt2 t5-small] [--iterations 10] [--save FILE.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from runner import case_parser, peak_megabytes, run_backend  # noqa: E402

CASES = {"gpt2": ("GPT2", "gpt2"), "t5-small": ("T5", "t5-small")}
CONFIGS = [  # label, backend, extra flags
    ("frameworks fp32", "frameworks", []),
    ("frameworks fp16", "frameworks", ["--fp16"]),
    ("onnxrt fp32 (CUDA EP)", "onnxrt", []),
    ("onnxrt fp16 (CUDA EP)", "onnxrt", ["--fp16"]),
    ("trt fp32 (TF32 off)", "trt", []),
    ("trt fp16", "trt", ["--fp16"]),
    ("trt fp16 + CUDA graphs", "trt", ["--fp16", "--use-cuda-graph"]),
]


def missing_backend(backend: str) -> str | None:
    """Why this machine cannot run `backend` on the GPU, or None."""
    if backend == "onnxrt":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu is not installed)"
    if backend == "trt":
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as e:
            return f"TensorRT cannot be imported ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
    return None


def main() -> int:
    args = case_parser(__doc__, CASES, 10, "results-gpu.json").parse_args()

    import torch

    if not torch.cuda.is_available():
        print("error: benchmarks/gpu_speed.py needs a CUDA GPU visible to PyTorch, and there is none "
              "(python run.py env says what is missing)", file=sys.stderr)
        return 2
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cases": {}}
    print(f"GPU: {report['gpu']}, torch {torch.__version__}")
    for case in args.cases:
        family, variant = CASES[case]
        rows = {}
        for label, backend, flags in CONFIGS:
            reason = missing_backend(backend)
            # --require-cuda: a CUDA provider that cannot start is a one-line failure recorded as the
            # row's reason, never a CPU number in a GPU table (trt runs only on CUDA anyway)
            cuda = ["--require-cuda"] if backend != "trt" else []
            rows[label] = {"skipped": reason} if reason else \
                run_backend(family, variant, backend, ["--use-cache", *cuda, *flags], args.working_dir,
                            args.iterations, warmup=3, record_failure=True)
            print(f"  {case} {label}: {rows[label].get('full_latency_s', rows[label])}", flush=True)
        report["cases"][case] = rows
        base = rows["frameworks fp32"]
        print(f"\n{case}: batch 1, 128 prompt tokens, 64 new tokens, cache on")
        print("| backend | device | end to end (s) | vs frameworks fp32 | decode step (ms) | tokens/s | peak host (MB) "
              "| peak GPU (MB) | same tokens |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, r in rows.items():
            if "full_latency_s" not in r:
                print(f"| {label} | - | not run: {r.get('skipped') or r.get('failed')} | | | | | | |")
                continue
            speedup = base["full_latency_s"] / r["full_latency_s"] if "full_latency_s" in base else float("nan")
            same = "yes" if base.get("tokens") == r["tokens"] else "NO"
            print(f"| {label} | {r['device']} | {r['full_latency_s']:.3f} | {speedup:.2f}x | "
                  f"{r['decoder_latency_s'] * 1e3:.2f} | {r['tokens_per_second']:.1f} | {peak_megabytes(r)} | {same} |")
    Path(args.save).write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
