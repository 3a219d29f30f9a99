#!/usr/bin/env python3
"""Where a decode step's time goes: ONNX Runtime's profiler on run.py's onnxrt decoder, one token per step
on a cache already holding `--contexts` tokens (issue 25).

    python benchmarks/profile_decode.py --torch-dir HF_DIR [--quantize int4] [--contexts 128 512] [--steps 16]
    python benchmarks/profile_decode.py --variant TinyLlama-1.1B-Chat-v1.0 --random-weights

The graph is the one run.py's onnxrt backend makes with these flags (built or reused in --working-dir); it is
opened once more with the profiler on and driven by its own step model. Per context: the prompt in one
call, then `--steps` decode steps, whose node times are summed by op type (ms per step) and by node. The
op types whose time grows with the context are what a longer context costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def decode_runs(trace: list[dict], prompt_runs: list[int], steps: int) -> dict[int, list[dict]]:
    """Node events of the decode steps, by context: the trace's model runs in order are, per context, one
    prompt call then `steps` decode calls."""
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])
    nodes = sorted((e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    by_context, at = {}, 0
    for context in prompt_runs:
        windows = runs[at + 1: at + 1 + steps]
        at += 1 + steps
        by_context[context] = [n for n in nodes if any(w["ts"] <= n["ts"] <= w["ts"] + w["dur"] for w in windows)]
    return by_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--torch-dir")
    source.add_argument("--variant")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--quantize", default="int4", help="int4, int8 or none")
    parser.add_argument("--quant-block-size")
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--working-dir", default=str(ROOT / "temp"))
    parser.add_argument("--save", default=str(ROOT / "benchmarks" / "results-profile-decode.json"))
    args = parser.parse_args()

    from NNDF.cli import parse_args
    from NNDF.export.workdir import WorkingDir
    from NNDF.kinds.makers import default_block_size, make_backends
    from NNDF.registry import resolve
    from NNDF.runtime.ort_session import OrtSession
    from NNDF.runtime.placement import torch_threads

    flags = ["--torch-dir", args.torch_dir] if args.torch_dir else ["--variant", args.variant]
    flags += ["--random-weights"] if args.random_weights else []
    flags += ["--quantize", args.quantize] if args.quantize != "none" else []
    flags += ["--quant-block-size", args.quant_block_size] if args.quant_block_size else []
    family, cfg = resolve(parse_args(["benchmark", "LLAMA", "onnxrt", "--use-cache", "--working-dir", args.working_dir,
                                      *flags]))
    loaded = family.load(cfg)
    cfg = default_block_size(cfg, family, loaded)
    backend, = make_backends(family, loaded, cfg, WorkingDir(args.working_dir))
    steps_model = backend.steps
    graph = steps_model.session.path
    del backend
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        session = OrtSession(graph, allow_cuda=False, profile_prefix=os.path.join(tmp, "decode"))
        steps = type(steps_model)(session, steps_model.spec)
        for context in args.contexts:
            prompt = rng.integers(3, loaded.config.vocab_size, (1, context))
            steps.plan(1, context, args.steps + 1)
            state, ids, mask = steps.start(prompt, np.ones_like(prompt))
            steps.step(state, ids, mask)
            for _ in range(args.steps):
                ids = np.concatenate([ids, rng.integers(3, loaded.config.vocab_size, (1, 1))], axis=1)
                steps.step(state, ids, np.ones_like(ids))
        trace = json.loads(Path(session.end_profiling()).read_text())
    by_context = decode_runs(trace, args.contexts, args.steps)
    ops, nodes = {}, {}
    for context, events in by_context.items():
        per_op, per_node = defaultdict(float), defaultdict(float)
        for e in events:
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / args.steps
            per_node[e["name"].removesuffix("_kernel_time")] += e["dur"] / 1e3 / args.steps
        ops[context], nodes[context] = dict(per_op), dict(sorted(per_node.items(), key=lambda kv: -kv[1])[:15])
    first, last = args.contexts[0], args.contexts[-1]
    names = sorted(set(ops[first]) | set(ops[last]), key=lambda op: -ops[last].get(op, 0))
    print(f"{graph.parent.name}: ms per decode step by op type (sum of its nodes), {args.steps} steps per context")
    print(f"{'op type':34s}" + "".join(f"{f'context {c}':>14s}" for c in args.contexts) + f"{'growth':>10s}")
    for op in names:
        row = [ops[c].get(op, 0.0) for c in args.contexts]
        print(f"{op:34s}" + "".join(f"{v:14.3f}" for v in row) + f"{row[-1] - row[0]:+10.3f}")
    totals = [sum(ops[c].values()) for c in args.contexts]
    print(f"{'all nodes':34s}" + "".join(f"{v:14.3f}" for v in totals) + f"{totals[-1] - totals[0]:+10.3f}")
    result = {"graph": str(graph), "quantize": cfg.quantize and vars(cfg.quantize), "steps": args.steps,
              "ms_per_step_by_op": ops, "top_nodes_ms_per_step": nodes, "total_node_ms_per_step": dict(zip(args.contexts, totals)),
              "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None),
              "load_average": os.getloadavg()}
    Path(args.save).write_text(json.dumps(result, indent=1))
    print(f"saved {args.save}")


if __name__ == "__main__":
    main()
