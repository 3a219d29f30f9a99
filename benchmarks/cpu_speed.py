#!/usr/bin/env python3
"""The speed claims in the README, measured: real-size architectures with random weights
(timing does not depend on weight values), batch 1, 128 prompt tokens, 64 new tokens.

Each backend runs in its own process, so one runtime's thread pool never slows another's.
Also measured: host read bandwidth, and from it the floor for one decode step (every fp32
weight byte the step needs, read once).

    python benchmarks/cpu_speed.py [--cases gpt2 smollm2-135m t5-small bart-base] [--iterations 5]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner import ROOT, case_parser, peak_megabytes, read_bandwidth_gbs, run_backend
CASES = {  # name -> (family, variant, [(label, backend, extra flags)])
    "gpt2": ("GPT2", "gpt2", [("frameworks (HF generate, cache)", "frameworks", ["--use-cache"]),
                              ("onnxrt (cache)", "onnxrt", ["--use-cache"])]),
    "smollm2-135m": ("LLAMA", "SmolLM2-135M", [("frameworks (HF generate, cache)", "frameworks", ["--use-cache"]),
                                               ("onnxrt (cache)", "onnxrt", ["--use-cache"])]),
    "t5-small": ("T5", "t5-small", [("frameworks (HF generate, cache)", "frameworks", ["--use-cache"]),
                                    ("onnxrt (cache + cache generator)", "onnxrt", ["--use-cache"]),
                                    ("onnxrt (no cache)", "onnxrt", [])]),
    "bart-base": ("BART", "bart-base", [("frameworks (HF generate, cache)", "frameworks", ["--use-cache"]),
                                        ("onnxrt (cache + cache generator)", "onnxrt", ["--use-cache"]),
                                        ("onnxrt (no cache)", "onnxrt", [])]),
}


def decode_weight_bytes(family, variant) -> int:
    """fp32 bytes one decode step must read: every weight of a decoder-only model; an
    encoder-decoder's decoder side only (its encoder ran once, in the prefill)."""
    code = ("import sys; sys.path.insert(0, %r); from NNDF.cli import parse_args; from NNDF.registry import get_family;"
            "f = get_family(%r); m = f.load(parse_args(['run', %r, '--variant', %r, '--random-weights'])).model;"
            "enc = {id(p) for p in m.get_encoder().parameters()} if m.config.is_encoder_decoder else set();"
            "dec = {id(p) for n, p in m.named_parameters() if 'decoder' in n} | {id(m.get_output_embeddings().weight)};"
            "print(sum(p.numel() * p.element_size() for p in m.parameters() if id(p) not in enc or id(p) in dec))"
            ) % (str(ROOT), family, family, variant)
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])


def main() -> None:
    args = case_parser(__doc__, CASES, 5, "results-cpu.json").parse_args()

    bandwidth = read_bandwidth_gbs()
    # cases not run this time keep their last results (with the bandwidth measured alongside them)
    earlier = json.loads(Path(args.save).read_text()) if Path(args.save).is_file() else {}
    for kept in earlier.get("cases", {}).values():
        kept.setdefault("read_bandwidth_gbs", earlier["read_bandwidth_gbs"])
    report = {"read_bandwidth_gbs": bandwidth, "cases": earlier.get("cases", {})}
    print(f"host read bandwidth: {bandwidth:.1f} GB/s")
    for case in args.cases:
        family, variant, runs = CASES[case]
        floor_s = decode_weight_bytes(family, variant) / (bandwidth * 1e9)
        rows = {label: run_backend(family, variant, backend, flags, args.working_dir, args.iterations)
                for label, backend, flags in runs}
        base = next(iter(rows.values()))
        report["cases"][case] = {"read_bandwidth_gbs": bandwidth, "decode_step_floor_s": floor_s, "results": rows}
        print(f"\n{case}: batch 1, 128 prompt tokens, 64 new tokens; floor per decode step {floor_s * 1e3:.1f} ms")
        print("| backend | end to end (s) | speed-up | decode step (ms) | x floor | tokens/s | peak host (MB) "
              "| peak GPU (MB) | same tokens |")
        print("|---|---|---|---|---|---|---|---|---|")
        for label, r in rows.items():
            print(f"| {label} | {r['full_latency_s']:.3f} | {base['full_latency_s'] / r['full_latency_s']:.2f}x | "
                  f"{r['decoder_latency_s'] * 1e3:.1f} | {r['decoder_latency_s'] / floor_s:.2f} | "
                  f"{r['tokens_per_second']:.1f} | {peak_megabytes(r)} | {'yes' if r['tokens'] == base['tokens'] else 'NO'} |")
    Path(args.save).write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.save}")


if __name__ == "__main__":
    main()
