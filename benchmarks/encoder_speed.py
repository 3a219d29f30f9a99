#!/usr/bin/env python3
"""The encoder speed claims of issue 17, measured in one run with PyTorch as the reference.

Real-size architectures with random weights (timing does not depend on weight values), each
backend in its own process (`run.py benchmark ... --random-weights`), p50 of --iterations
after 2 warm-ups. The backends run in turn, --rounds times (3 by default): this 2-core machine's
speed drifts by up to 15% from one minute to the next, so each latency is the median over the
rounds and each speed-up is the ratio of those medians; the per-round speed-ups are saved and
printed beside it, so their spread is in view. The cases:
- distilbert-base-uncased-finetuned-sst-2-english (DistilBERT base, a classification head),
  128 tokens per row, at batch 1 and 32: frameworks, onnxrt fp32 and onnxrt int8;
- vit-base-patch16-224 (ViT base, 224x224 images) at batch 1: frameworks and onnxrt fp32.
Each onnxrt row also names its graph's size (MB of ONNX + weights). Targets: onnxrt >= 2.5x frameworks at batch 1 and >= 2x at batch 32, int8 >= 3x at batch 1
(distilbert); onnxrt >= 2x at batch 1 (ViT). Results go to benchmarks/results-encoder-speed.json.

    python benchmarks/encoder_speed.py [--iterations 10] [--rounds 3] [--working-dir temp]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [  # name, family, variant, batch sizes, runs: (label, backend, flags), targets {(label, batch): speed-up}
    ("distilbert-base", "BERT", "distilbert-base-uncased-finetuned-sst-2-english", (1, 32),
     [("frameworks", "frameworks", []), ("onnxrt fp32", "onnxrt", []), ("onnxrt int8", "onnxrt", ["--quantize", "int8"])],
     {("onnxrt fp32", 1): 2.5, ("onnxrt fp32", 32): 2.0, ("onnxrt int8", 1): 3.0}),
    ("vit-base-patch16-224", "VIT", "vit-base-patch16-224", (1,),
     [("frameworks", "frameworks", []), ("onnxrt fp32", "onnxrt", [])],
     {("onnxrt fp32", 1): 2.0}),
]


def run_backend(family: str, variant: str, backend: str, flags: list[str], sizes, workdir: str, iterations: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(ROOT / "run.py"), "benchmark", family, backend, "--variant", variant,
               "--random-weights", "--working-dir", workdir, "--input-seq-len", "128",
               "--batch-sweep", ",".join(map(str, sizes)), "--batch-size", str(sizes[0]),
               "--iterations", str(iterations), "--warmup", "2", "--save-output-fpath", out.name, *flags]
        subprocess.run(cmd, check=True, cwd=ROOT)
        return json.loads(Path(out.name).read_text())["results"][backend]


def graph_megabytes(workdir: str, family: str, variant: str) -> dict[str, float]:
    """MB of the graph each onnxrt run used (ONNX + weights, from the artifacts' manifests): the plain
    export for fp32, its dynamic-int8 form for int8."""
    sys.path.insert(0, str(ROOT))
    from NNDF.pipeline import graph_sizes
    from NNDF.workdir import WorkingDir

    subdir = (family, variant.replace("/", "--"))
    sizes = dict(graph_sizes(WorkingDir(Path(workdir)), subdir))
    onnx_dir = WorkingDir(Path(workdir)).artifact_dir(*subdir, "onnx")
    # the newest of each kind: a working dir keeps the graphs of earlier code versions too
    newest = lambda pick: max((n for n in sizes if n.startswith("encoder-fp32") and pick(n)),
                              key=lambda n: (onnx_dir / n).stat().st_mtime, default=None)
    found = {"onnxrt fp32": newest(lambda n: n.count("-") == 2), "onnxrt int8": newest(lambda n: n.endswith("-int8-dynamic"))}
    return {label: round(sizes[name] / 1e6, 1) for label, name in found.items() if name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="times each backend is run, in turn")
    parser.add_argument("--working-dir", default=str(ROOT / "temp"))
    parser.add_argument("--save", default=str(ROOT / "benchmarks" / "results-encoder-speed.json"))
    args = parser.parse_args()

    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_average_at_start": os.getloadavg()},
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "iterations": args.iterations, "rounds": args.rounds,
              "cases": {}}
    for name, family, variant, sizes, runs, targets in CASES:
        rounds = [{label: run_backend(family, variant, backend, flags, sizes, args.working_dir, args.iterations)
                   for label, backend, flags in runs} for _ in range(args.rounds)]
        latency = lambda r, label, b: r[label]["batch_sizes"][b]["latency_s"]
        rows = []
        for label, _, _ in runs:
            for b in map(str, sizes):
                median = statistics.median(latency(r, label, b) for r in rounds)
                speedup = statistics.median(latency(r, "frameworks", b) for r in rounds) / median
                target = targets.get((label, int(b)))
                rows.append({"backend": label, "batch": int(b), "latency_s": median,
                             "samples_per_second": int(b) / median, "speedup": speedup,
                             "speedup_per_round": [latency(r, "frameworks", b) / latency(r, label, b) for r in rounds],
                             "target": target, "meets_target": None if target is None else speedup >= target})
        megabytes = graph_megabytes(args.working_dir, family, variant)
        for row in rows:
            row["graph_mb"] = megabytes.get(row["backend"])
        report["cases"][name] = {"family": family, "variant": variant, "rows": rows}
        print(f"\n{name} ({variant}, random weights{', 128 tokens' if family == 'BERT' else ', 224x224'})")
        print(f"{'backend':<14}{'batch':>6}{'latency (ms)':>14}{'samples/s':>11}{'speed-up':>10}{'per round':>18}"
              f"{'graph MB':>10}  target")
        for row in rows:
            target = "-" if row["target"] is None else f">= {row['target']}x {'met' if row['meets_target'] else 'MISSED'}"
            spread = f"{min(row['speedup_per_round']):.2f}-{max(row['speedup_per_round']):.2f}x"
            print(f"{row['backend']:<14}{row['batch']:>6}{row['latency_s'] * 1e3:>14.1f}"
                  f"{row['samples_per_second']:>11.1f}{row['speedup']:>9.2f}x{spread:>18}{row['graph_mb'] or '-':>10}  {target}")
    report["load_average_at_end"] = os.getloadavg()
    Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {args.save}")


if __name__ == "__main__":
    main()
