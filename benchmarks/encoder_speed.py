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

    python benchmarks/encoder_speed.py [--cases distilbert-base vit-base-patch16-224] [--iterations 10] [--rounds 3]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from NNDF.actions.reporting import megabytes  # noqa: E402
from runner import case_parser, graph_bytes, newest_graph, run_backend  # noqa: E402

CASES = {  # name -> family, variant, batch sizes, runs: (label, backend, flags), targets {(label, batch): speed-up}
    "distilbert-base": (
        "BERT", "distilbert-base-uncased-finetuned-sst-2-english", (1, 32),
        [("frameworks", "frameworks", []), ("onnxrt fp32", "onnxrt", []), ("onnxrt int8", "onnxrt", ["--quantize", "int8"])],
        {("onnxrt fp32", 1): 2.5, ("onnxrt fp32", 32): 2.0, ("onnxrt int8", 1): 3.0}),
    "vit-base-patch16-224": (
        "VIT", "vit-base-patch16-224", (1,),
        [("frameworks", "frameworks", []), ("onnxrt fp32", "onnxrt", [])],
        {("onnxrt fp32", 1): 2.0}),
}


def graph_megabytes(workdir: str, family: str, variant: str) -> dict[str, float]:
    """MB of the graph each onnxrt run used (ONNX + weights, from the artifacts' manifests): the plain
    export for fp32, its dynamic-int8 form for int8."""
    onnx_dir = Path(workdir) / family / variant.replace("/", "--") / "onnx"
    found = {"onnxrt fp32": newest_graph(onnx_dir, "encoder-fp32-*", plain=True),
             "onnxrt int8": newest_graph(onnx_dir, "encoder-fp32-*-int8-dynamic")}
    return {label: round(graph_bytes(path) / 1e6, 1) for label, path in found.items() if path}


def peak(values) -> float | None:
    """The highest of the rounds' measured peaks (None where none was measured)."""
    measured = [v for v in values if v is not None]
    return max(measured) if measured else None


def main() -> None:
    parser = case_parser(__doc__, CASES, 10, "results-encoder-speed.json")
    parser.add_argument("--rounds", type=int, default=3, help="times each backend is run, in turn")
    args = parser.parse_args()

    report = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_average_at_start": os.getloadavg()},
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "iterations": args.iterations, "rounds": args.rounds,
              "cases": {}}
    for name in args.cases:
        family, variant, sizes, runs, targets = CASES[name]
        sweep = ["--batch-sweep", ",".join(map(str, sizes)), "--batch-size", str(sizes[0])]
        rounds = [{label: run_backend(family, variant, backend, flags + sweep, args.working_dir, args.iterations,
                                      lengths=("--input-seq-len", "128"))
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
                             "target": target, "meets_target": None if target is None else speedup >= target,
                             **{key: peak(r[label]["batch_sizes"][b].get(key) for r in rounds)
                                for key in ("peak_host_memory_mb", "peak_gpu_memory_mb")}})
        graph_mb = graph_megabytes(args.working_dir, family, variant)
        for row in rows:
            row["graph_mb"] = graph_mb.get(row["backend"])
        report["cases"][name] = {"family": family, "variant": variant, "rows": rows}
        print(f"\n{name} ({variant}, random weights{', 128 tokens' if family == 'BERT' else ', 224x224'})")
        print(f"{'backend':<14}{'batch':>6}{'latency (ms)':>14}{'samples/s':>11}{'speed-up':>10}{'per round':>18}"
              f"{'graph MB':>10}{'peak host MB':>14}{'peak GPU MB':>13}  target")
        for row in rows:
            target = "-" if row["target"] is None else f">= {row['target']}x {'met' if row['meets_target'] else 'MISSED'}"
            spread = f"{min(row['speedup_per_round']):.2f}-{max(row['speedup_per_round']):.2f}x"
            print(f"{row['backend']:<14}{row['batch']:>6}{row['latency_s'] * 1e3:>14.1f}"
                  f"{row['samples_per_second']:>11.1f}{row['speedup']:>9.2f}x{spread:>18}{row['graph_mb'] or '-':>10}"
                  f"{megabytes(row['peak_host_memory_mb']):>14}{megabytes(row['peak_gpu_memory_mb']):>13}  {target}")
    report["load_average_at_end"] = os.getloadavg()
    Path(args.save).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {args.save}")


if __name__ == "__main__":
    main()
