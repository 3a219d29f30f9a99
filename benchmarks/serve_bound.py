#!/usr/bin/env python3
"""How fast continuous batching could be on this host: the OpenAI server's scheduler run in process
(no HTTP) on openai_serve_speed.py's workload, with where its time goes and the ceiling a perfect
scheduler would reach.

    python benchmarks/serve_bound.py [--rounds 3] [--working-dir DIR] [--output FILE]

The same model and scheduler `run.py serve GPT2 onnxrt --use-cache` builds (NNDF/actions/serving.py),
driven by closed-loop clients in threads, as the HTTP benchmark drives the server:

- one at a time: one client sends the first 16 requests of the mix, each after the last ended;
- 16 clients: 64 requests, each client sending its next as soon as its last ended.

Each run times the decoder's prefills, decode steps (by the number of rows in the step) and row moves.
The ceiling packs the 16-client run's work perfectly: every prompt prefilled once at the measured
prefill cost, every other generated token in a full 16-row step at the measured median 16-row step
time. Against the one-at-a-time rate it bounds what any scheduler using these kernels can reach here,
whatever its HTTP layer; the HTTP benchmark's ratio is below it. Beside it, the rate of a lone fp32
MatMul of the LM head's shape at 1, 16 and 256 rows shows whether 16 rows already compute at the
rate large products get on this host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class Timed:
    """Wraps a BatchDecoder's prefill, step and regroup with timers; steps are kept by their rows."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.reset()
        for name in ("prefill", "regroup", "step"):
            setattr(decoder, name, self._wrap(name, getattr(decoder, name)))

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            took = time.perf_counter() - start
            if name == "step":
                self.steps.setdefault(len(args[1]), []).append(took)
            else:
                self.seconds[name] += took
                if name == "prefill":
                    self.prefilled_tokens += sum(len(p) for p in args[0])
            return out
        return timed

    def reset(self) -> None:
        self.seconds = {"prefill": 0.0, "regroup": 0.0}
        self.prefilled_tokens = 0
        self.steps: dict[int, list[float]] = {}


def drive(scheduler, prompts, news, clients: int) -> tuple[float, int]:
    """Seconds and generated tokens for the requests sent by `clients` closed-loop clients."""
    from NNDF.base.config import GenerationSettings
    from NNDF.serving.jobs import Failed, Finished, Job

    lock, done = threading.Lock(), threading.Event()
    state = {"next": 0, "finished": 0, "tokens": 0, "failed": None}

    def send_next() -> None:
        with lock:
            i = state["next"]
            if i >= len(prompts):
                return
            state["next"] += 1

        def emit(event) -> None:
            if isinstance(event, (Finished, Failed)):
                with lock:
                    state["finished"] += 1
                    if isinstance(event, Failed):
                        state["failed"] = event.message
                    else:
                        state["tokens"] += event.completion_tokens
                    if state["finished"] == len(prompts):
                        done.set()
                send_next()

        scheduler.submit([Job(prompts[i], GenerationSettings(max_new_tokens=news[i]), emit)])

    start = time.perf_counter()
    for _ in range(clients):
        send_next()
    done.wait()
    if state["failed"]:
        raise RuntimeError(state["failed"])
    return time.perf_counter() - start, state["tokens"]


def measured(timed: Timed, seconds: float, tokens: int) -> dict:
    steps = {rows: times for rows, times in sorted(timed.steps.items())}
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "prefill_s": timed.seconds["prefill"], "prefilled_tokens": timed.prefilled_tokens,
            "regroup_s": timed.seconds["regroup"], "steps": sum(len(t) for t in steps.values()),
            "step_s": sum(sum(t) for t in steps.values()),
            "median_step_ms_by_rows": {rows: 1e3 * statistics.median(t) for rows, t in steps.items()}}


def matmul_rates(k: int, n: int, rows=(1, 16, 256), threads: int = 2) -> dict[int, float]:
    """GFLOP/s of ONNX Runtime's fp32 MatMul [rows, k] x [k, n] (a constant weight, as the graphs hold
    theirs) with `threads` threads: whether 16 rows already run at the rate large products get."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["rows", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", n])],
                              [numpy_helper.from_array(weight, "w")])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), options, providers=["CPUExecutionProvider"])
    rates = {}
    for m in rows:
        a = np.random.default_rng(m).standard_normal((m, k), dtype=np.float32)
        times = []
        for _ in range(23):
            start = time.perf_counter()
            session.run(None, {"a": a})
            times.append(time.perf_counter() - start)
        rates[m] = 2 * m * k * n / statistics.median(times[3:]) / 1e9
    return rates


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="gpt2")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--sequential", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--working-dir", default=str(ROOT / "temp"))
    p.add_argument("--output", type=Path)
    a = p.parse_args(argv)

    from NNDF.actions.serving import open_text_backend, scheduler_for
    from NNDF.cli import parse_args
    from NNDF.runtime.placement import torch_threads
    from openai_serve_speed import workload

    cfg = parse_args(["serve", "GPT2", "onnxrt", "--variant", a.variant, "--random-weights", "--use-cache",
                      "--working-dir", a.working_dir, "--max-batch-size", str(a.clients),
                      "--max-queue", str(4 * a.clients)])
    family, loaded, backend = open_text_backend(cfg)
    scheduler, decoder = scheduler_for(family, loaded, backend, cfg)
    timed = Timed(decoder)
    jobs = workload(a.clients * a.requests_per_client, a.seed, a.variant)
    prompts = [loaded.tokenizer(text)["input_ids"] for text, _, _ in jobs]
    news = [m for _, _, m in jobs]
    runs: dict[str, list[dict]] = {"one_at_a_time": [], "batched": []}
    scheduler.start()
    try:
        with torch_threads(1):
            drive(scheduler, prompts[: a.clients], news[: a.clients], a.clients)          # warm-up
            for r in range(a.rounds):
                for way, count, clients in (("one_at_a_time", a.sequential, 1), ("batched", len(jobs), a.clients)):
                    timed.reset()
                    runs[way].append(measured(timed, *drive(scheduler, prompts[:count], news[:count], clients)))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:.1f} tok/s" for k, v in runs.items()),
                      flush=True)
    finally:
        scheduler.stop()

    one = statistics.median(x["tokens_per_s"] for x in runs["one_at_a_time"])
    best = min(runs["batched"], key=lambda x: x["seconds"])
    full = best["median_step_ms_by_rows"].get(a.clients)
    ceiling = None
    if full is not None:
        decode_tokens = best["tokens"] - len(jobs)       # each request's first token comes from its prefill
        packed_s = best["prefill_s"] + decode_tokens / a.clients * full / 1e3
        ceiling = best["tokens"] / packed_s
    batched = statistics.median(x["tokens_per_s"] for x in runs["batched"])
    lm_head = loaded.model.get_output_embeddings().weight
    rates = matmul_rates(lm_head.shape[1], lm_head.shape[0])
    result = {"model": f"GPT2 {a.variant} (random weights), onnxrt, KV cache, in process (no HTTP)",
              "cpus": os.cpu_count(), "load_average_after": os.getloadavg(), "requests": len(jobs),
              "clients": a.clients, "rounds": runs, "one_at_a_time_tokens_per_s": one,
              "batched_tokens_per_s": batched, "batched_vs_one_at_a_time": batched / one,
              "lm_head_matmul_gflops_by_rows": rates, "packed_ceiling_tokens_per_s": ceiling,
              "ceiling_vs_one_at_a_time": ceiling / one if ceiling else None}
    steps = best["median_step_ms_by_rows"]
    print(f"one at a time {one:.1f} tok/s; {a.clients} clients {batched:.1f} tok/s ({batched / one:.2f}x)")
    print(f"fastest {a.clients}-client round: {best['seconds']:.1f} s = prefill {best['prefill_s']:.1f} s "
          f"({1e3 * best['prefill_s'] / best['prefilled_tokens']:.2f} ms a prompt token) + {best['steps']} steps "
          f"{best['step_s']:.1f} s + row moves {best['regroup_s']:.2f} s + the rest; step ms by rows: "
          + ", ".join(f"{k}: {v:.1f}" for k, v in steps.items() if k in (1, 2, 4, 8, a.clients)))
    print("ONNX Runtime fp32 MatMul of the LM head's shape, GFLOP/s by rows: "
          + ", ".join(f"{m}: {r:.0f}" for m, r in rates.items()))
    if ceiling:
        print(f"packed ceiling: {ceiling:.1f} tok/s = {ceiling / one:.2f}x one at a time")
    if a.output:
        a.output.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
