#!/usr/bin/env python3
"""The accuracy gate for --quantize, measured: teacher-forced LAMBADA (the shipped sample) on the
tiny trained models, each quantized backend against fp32 PyTorch.

Rows: onnxrt int8/int4 at accuracy levels 4 (the default: int8 activations) and 1 (fp32
activations), at the default block size (32; 64 for LLAMA's graph written from the weights, whose
blocks of 32 and 128 get rows of their own, and a planted bug of its own quantizer); trt int4 (fp16 graphs, blocks of 64: TensorRT's W4A16; trt refuses weight-only int8)
on the CPU stand-in for TensorRT (tests/trt_standin: it runs the QDQ graph TensorRT would get with
ONNX Runtime, dequantizing weights as TensorRT does); and trt int4 with a planted bug (INT4 pairs
packed high nibble first), which the gate must catch. Exits 1 if any correct row is outside its
bound or the planted bug is inside it.

    python benchmarks/quant_accuracy.py [--models t5-tiny bart-tiny gpt2-tiny llama-gate-tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# gpt2-tiny has seeded, untrained weights; llama-gate-tiny is a 128-wide Llama trained on the shipped tokenizer
# corpus (tests/test_llama_graph.py), whose onnxrt graph is written from the weights (NNDF/export/llama_graph.py)
MODELS = {"t5-tiny": "T5", "bart-tiny": "BART", "gpt2-tiny": "GPT2", "llama-gate-tiny": "LLAMA"}
ROWS = [  # label, backend, flags, planted bug
    ("onnxrt int8", "onnxrt", ["--quantize", "int8"], False),
    ("onnxrt int4", "onnxrt", ["--quantize", "int4"], False),
    ("onnxrt int8, accuracy level 1", "onnxrt", ["--quantize", "int8", "--quant-accuracy-level", "1"], False),
    ("onnxrt int4, accuracy level 1", "onnxrt", ["--quantize", "int4", "--quant-accuracy-level", "1"], False),
    ("trt int4, fp16 (stand-in)", "trt", ["--quantize", "int4", "--fp16"], False),
    ("trt int4, planted nibble-order bug", "trt", ["--quantize", "int4", "--fp16"], True),
]
LLAMA_ROWS = [  # the graph written from the weights: its own quantizer, and its default block (64)
    ("onnxrt int4, blocks of 32", "onnxrt", ["--quantize", "int4", "--quant-block-size", "32"], False),
    ("onnxrt int4, blocks of 128", "onnxrt", ["--quantize", "int4", "--quant-block-size", "128"], False),
    ("onnxrt int4, planted nibble-order bug", "onnxrt", ["--quantize", "int4"], True),
]


@contextlib.contextmanager
def standin_tensorrt():
    import pytest
    import trt_standin

    with pytest.MonkeyPatch.context() as mp:
        yield trt_standin.install(mp)


@contextlib.contextmanager
def planted_nibble_order_bug(backend: str):
    """INT4 pairs packed high nibble first: in the trt QDQ form, or in the onnxrt graph written from the weights."""
    from NNDF.export import quantize, weights_graph

    if backend == "trt":
        module, name = quantize, "int4_tensor"
        correct = quantize.int4_tensor

        def swapped(values, tensor_name):
            flat = values.reshape(-1)
            return correct(np.stack([flat[1::2], flat[0::2]], axis=-1).reshape(values.shape), tensor_name)
    else:
        module, name = weights_graph, "quantize_blocks"      # llama_graph's and gpt2_graph's MatMulNBits
        correct = weights_graph.quantize_blocks

        def swapped(weight, bits, block, rows_per_chunk=1024):
            packed, scales = correct(weight, bits, block, rows_per_chunk)
            return (packed >> 4) | (packed << 4) if bits == 4 else packed, scales

    setattr(module, name, swapped)
    try:
        yield
    finally:
        setattr(module, name, correct)


def main() -> int:
    from NNDF.actions.accuracy import evaluate, load_texts
    from NNDF.actions.quant_gate import MAX_RELATIVE_PERPLEXITY, delta_to_fp32, describe, passes
    from NNDF.cli import parse_args
    from NNDF.export.workdir import WorkingDir
    from NNDF.kinds.makers import make_backends
    from NNDF.registry import get_family

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--num-samples", type=int, default=40)
    parser.add_argument("--save", default=str(ROOT / "benchmarks" / "results-quant-accuracy.json"))
    args = parser.parse_args()

    texts = load_texts(ROOT / "NNDF" / "data" / "lambada_sample.jsonl", args.num_samples)
    report, failed = {"bounds_token_perplexity_rel": MAX_RELATIVE_PERPLEXITY, "models": {}}, []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.models:
            family = get_family(MODELS[variant])
            source = ["--variant", variant]
            if variant == "llama-gate-tiny":
                from test_llama_graph import trained_llama

                source = ["--torch-dir", str(trained_llama(Path(tmp) / variant))]
            cfg = lambda backend, *flags, wd=tmp: parse_args(["accuracy", family.name, backend, *source,
                                                              "--use-cache", "--working-dir", wd, *flags])
            loaded = family.load(cfg("frameworks"))
            score = lambda b: evaluate(b, loaded, texts, 5, [1, 10])
            fp32 = score(make_backends(family, loaded, cfg("frameworks"), WorkingDir(tmp))[0])
            rows = {"fp32 (frameworks)": fp32}
            print(f"\n{variant}: fp32 token_ppl {fp32['token_perplexity']:.4g}, top1 {fp32['top_n']['1']:.4f}")
            for label, backend, flags, planted in ROWS + (LLAMA_ROWS if family.name == "LLAMA" else []):
                scheme = flags[1]
                workdir = Path(tempfile.mkdtemp(dir=tmp)) if planted else Path(tmp)   # never cache a bug
                with contextlib.ExitStack() as stack:
                    if backend == "trt":
                        stack.enter_context(standin_tensorrt())
                    if planted:
                        stack.enter_context(planted_nibble_order_bug(backend))
                    run_cfg = cfg(backend, *flags, wd=str(workdir))
                    opened = make_backends(family, loaded, run_cfg, WorkingDir(workdir))
                    result = score(next(b for b in opened if b.name == backend))   # frameworks is added too
                delta = delta_to_fp32(fp32, result)
                inside = passes(scheme, delta)
                rows[label] = {**result, "delta_to_fp32": delta, "within_gate": inside, "planted_bug": planted}
                if inside == planted:
                    failed.append(f"{variant} {label}")
                verdict = ("caught" if not inside else "NOT CAUGHT") if planted else ("within" if inside else "OUTSIDE")
                print(f"  {label:<34} {describe(delta)}  {verdict} ({scheme} bound "
                      f"{MAX_RELATIVE_PERPLEXITY[scheme] * 100:.0f}%)")
            report["models"][variant] = rows
    Path(args.save).write_text(json.dumps(report, indent=2))
    print(f"\nsaved {args.save}")
    if failed:
        print("gate failures: " + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
