#!/usr/bin/env python3
"""The --quantize speed claims, measured in one run with PyTorch as the reference: real-size
architectures with random weights, batch 1, 128 prompt tokens, exactly 64 new tokens, cache on.

Each backend runs in its own process (benchmarks/runner.py). A decode step is compared
with the floor of its own graph: the bytes of every weight the decoder graph reads per step (its
quantized weights and scales, and the float norms and biases; tables it only gathers rows from are
left out), read once at the host's measured bandwidth. File sizes are each graph's ONNX + weights.

    python benchmarks/quant_speed.py [--cases gpt2 t5-small bart-base] [--iterations 5]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from NNDF.base.config import DEFAULT_BLOCK_SIZE  # noqa: E402
from runner import case_parser, graph_bytes, newest_graph, peak_megabytes, read_bandwidth_gbs, run_backend  # noqa: E402

CACHE = ["--use-cache"]
RUNS = [  # label, backend, flags, precision
    ("frameworks (HF generate)", "frameworks", CACHE, "fp32"),
    ("onnxrt fp32", "onnxrt", CACHE, "fp32"),
    ("onnxrt int8", "onnxrt", CACHE + ["--quantize", "int8"], "int8"),
    ("onnxrt int4", "onnxrt", CACHE + ["--quantize", "int4"], "int4"),
]
CASES = {  # name -> (family, variant, speed-up the issue asks of int4, of int8)
    "gpt2": ("GPT2", "gpt2", 4.0, 3.0),
    "t5-small": ("T5", "t5-small", 3.5, None),
    "bart-base": ("BART", "bart-base", 3.5, None),
}


def used_graph(onnx_dir: Path, graph: str, precision: str) -> Path:
    """The onnxrt graph a run just used: the newest export of `graph`, or its quantized form."""
    suffix = "" if precision == "fp32" else f"-{precision}-b{DEFAULT_BLOCK_SIZE}-a4-onnxrt"
    return newest_graph(onnx_dir, f"{graph}-fp32-*{suffix}", plain=not suffix)


def tensor_bytes(t: onnx.TensorProto) -> int:
    for entry in t.external_data:
        if entry.key == "length":
            return int(entry.value)
    return len(t.raw_data) or onnx.numpy_helper.to_array(t).nbytes


def step_weight_bytes(path: Path) -> int:
    """Bytes of the initializers one step reads: all but tables that only Gather reads rows from."""
    proto = onnx.load(str(path), load_external_data=False)
    readers: dict[str, set[str]] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return sum(tensor_bytes(t) for t in proto.graph.initializer if readers.get(t.name, set()) - {"Gather"})


def main() -> None:
    parser = case_parser(__doc__, CASES, 5, "results-quant-speed.json")
    parser.add_argument("--bandwidth-gbs", type=float,
                        help="read bandwidth for the floors, e.g. one measured when the machine was quiet "
                             "(default: measured now; on a shared machine that probe reads low)")
    args = parser.parse_args()

    measured = read_bandwidth_gbs()
    bandwidth = args.bandwidth_gbs or measured
    report = {"read_bandwidth_gbs": bandwidth, "measured_read_bandwidth_gbs": measured, "cases": {}}
    print(f"host read bandwidth: {measured:.1f} GB/s measured now; floors use {bandwidth:.1f} GB/s")
    for case in args.cases:
        family, variant, want_int4, want_int8 = CASES[case]
        onnx_dir = Path(args.working_dir) / family / variant / "onnx"
        rows = {}
        for label, backend, flags, precision in RUNS:
            r = run_backend(family, variant, backend, flags, args.working_dir, args.iterations)
            if backend == "onnxrt":
                decoder = used_graph(onnx_dir, "decoder", precision)
                r["decode_step_weight_bytes"] = step_weight_bytes(decoder)
                r["decode_step_floor_s"] = r["decode_step_weight_bytes"] / (bandwidth * 1e9)
                r["graph_bytes"] = {g: graph_bytes(used_graph(onnx_dir, g, precision))
                                    for g in ("encoder", "cache_generator", "decoder")
                                    if list(onnx_dir.glob(f"{g}-fp32-*"))}
            rows[label] = r
        base = rows[RUNS[0][0]]
        for r in rows.values():
            r["speedup"] = base["full_latency_s"] / r["full_latency_s"]
        report["cases"][case] = {"results": rows, "targets": {"int4": want_int4, "int8": want_int8}}
        print(f"\n{case}: batch 1, 128 prompt tokens, 64 new tokens, cache on")
        print("| backend | end to end (s) | speed-up | decode step (ms) | floor (ms) | x floor | prefill (ms) "
              "| graph files (MB) | peak host (MB) | peak GPU (MB) | same tokens |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, r in rows.items():
            floor = r.get("decode_step_floor_s")
            files = "+".join(f"{b / 1e6:.0f}" for b in r.get("graph_bytes", {}).values()) or "-"
            print(f"| {label} | {r['full_latency_s']:.3f} | {r['speedup']:.2f}x | {r['decoder_latency_s'] * 1e3:.1f} | "
                  f"{floor * 1e3:.1f} | {r['decoder_latency_s'] / floor:.2f} | " if floor else
                  f"| {label} | {r['full_latency_s']:.3f} | {r['speedup']:.2f}x | {r['decoder_latency_s'] * 1e3:.1f} | - | - | ",
                  end="")
            print(f"{r['prefill_latency_s'] * 1e3:.0f} | {files} | {peak_megabytes(r)} | {'yes' if r['tokens'] == base['tokens'] else 'no'} |")
        for scheme, want in (("int4", want_int4), ("int8", want_int8)):
            if want:
                got = rows[f"onnxrt {scheme}"]["speedup"]
                print(f"onnxrt {scheme}: {got:.2f}x frameworks end to end (target {want}x): "
                      f"{'met' if got >= want else 'NOT met'}")
    Path(args.save).write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.save}")


if __name__ == "__main__":
    main()
