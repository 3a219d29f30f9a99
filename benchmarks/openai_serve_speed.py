#!/usr/bin/env python3
"""Does continuous batching pay? The OpenAI server against one request at a time and against the Triton path.

GPT2 at its real size (124M parameters, random weights, onnxrt with the KV cache). A seeded mix of requests,
prompt lengths 16-128 tokens and max_tokens 16-128, is answered three ways, alternating for --rounds on the
same servers so the machine's drift touches all three:

  one at a time   the OpenAI server (run.py serve --api openai), one client sending the first --sequential
                  requests of the mix back to back;
  triton          the Triton path (run.py serve --api triton, dynamic batching, --max-queue-delay-ms), 16
                  clients each sending its share of the mix back to back (tritonclient HTTP, `generate`);
  openai          the OpenAI server with continuous batching, the same 16 clients and mix, streaming (SSE).

Reported per way (medians over rounds): completed tokens/s (generated tokens of finished requests over the
wall time), requests/s, time to first token and time per output token, p50 and p95 over requests. A
streamed answer's first token is its first SSE chunk; Triton's batched `generate` answers whole (its
streaming model does not batch), so its time to first token is its latency and it has no time per token.
Greedy answers do not depend on batching, so every Triton answer is checked equal to the OpenAI server's
for the same prompt, and its token count taken from there. lscpu's model, the load average and the
commit are saved with the figures (--output); ratios only compare within one run on one host.

    python benchmarks/openai_serve_speed.py [--rounds 3] [--clients 16] [--requests-per-client 4]

Targets (issue 23): openai >= 6x one-at-a-time tokens/s, >= 1.5x Triton's, and a lower p95 time to first
token than Triton's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from NNDF.serving.child_server import HOST, OpenAIServer, free_ports  # noqa: E402
from runner import head_commit, lscpu_fields  # noqa: E402
from serve_speed import run_clients, served_tokenizer, texts_of_exactly  # noqa: E402


def workload(count: int, seed: int, variant: str) -> list[tuple[str, int, int]]:
    """(prompt text, its tokens, max_tokens) per request, from a seeded mix."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(16, 129, count)
    news = rng.integers(16, 129, count)
    tokenizer = served_tokenizer(variant)
    texts = [texts_of_exactly(tokenizer, int(n), 1, seed=seed + i)[0] for i, n in enumerate(lengths)]
    return [(text, int(n), int(m)) for text, n, m in zip(texts, lengths, news)]


# --------------------------------------------------------------------------- clients
def stream_openai(port: int, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed completion over a raw HTTP connection (light on the client's CPU, which the server shares)."""
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    connection = http.client.HTTPConnection(HOST, port, timeout=600)
    try:
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {response.read()[:300]!r}")
        first, text, used = None, [], None
        for line in response:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                used = event["usage"]
            for choice in event.get("choices", []):
                if choice["text"] and first is None:
                    first = time.perf_counter()
                text.append(choice["text"])
    finally:
        connection.close()
    end = time.perf_counter()
    tokens = used["completion_tokens"]
    return {"ttft": (first or end) - start, "latency": end - start, "tokens": tokens, "text": "".join(text),
            "tpot": (end - first) / (tokens - 1) if first is not None and tokens > 1 else None}


def triton_generate(url: str, prompt: str, max_tokens: int) -> dict:
    from NNDF.serving.triton_client import generate_http

    start = time.perf_counter()
    text = generate_http(url, prompt, max_tokens)
    latency = time.perf_counter() - start
    return {"ttft": latency, "latency": latency, "tpot": None, "text": text[len(prompt):]}


def summary(seconds: float, results: list[dict], tokens: list[int]) -> dict:
    def pct(values, q):
        values = [v for v in values if v is not None]
        return float(np.percentile(values, q)) if values else None

    return {"seconds": seconds, "requests": len(results), "tokens": int(sum(tokens)),
            "tokens_per_s": sum(tokens) / seconds, "requests_per_s": len(results) / seconds,
            "ttft_p50_s": pct([r["ttft"] for r in results], 50), "ttft_p95_s": pct([r["ttft"] for r in results], 95),
            "tpot_p50_s": pct([r["tpot"] for r in results], 50), "tpot_p95_s": pct([r["tpot"] for r in results], 95)}


def median_of(rounds: list[dict]) -> dict:
    out = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds if r[key] is not None]
        out[key] = float(np.median(values)) if values else None
    return out


# --------------------------------------------------------------------------- the machine
def host() -> dict:
    fields = lscpu_fields()
    return {"cpu_model": fields.get("Model name", ""), "cpus": fields.get("CPU(s)", ""),
            "cpu_flags": fields.get("Flags", ""), "load_average": os.getloadavg(), "commit": head_commit() or ""}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="gpt2")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--sequential", type=int, default=16, help="requests of the mix sent one at a time per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-queue-delay-ms", type=float, default=50.0, help="Triton's batching window")
    p.add_argument("--max-prefill-tokens", type=int, default=None, help="the OpenAI server's (default: its own)")
    p.add_argument("--quantize", choices=["int8", "int4"], default=None,
                   help="serve quantized weights in all three ways (default fp32, the issue's benchmark model)")
    p.add_argument("--skip-triton", action="store_true", help="no Triton server (e.g. where PyTriton is missing)")
    p.add_argument("--working-dir", default=str(ROOT / "temp"))
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results-openai-serve.json")
    a = p.parse_args()

    machine = host()
    jobs = workload(a.clients * a.requests_per_client, a.seed, a.variant)
    model = ("GPT2", "onnxrt", "--variant", a.variant, "--random-weights", "--use-cache",
             *(["--quantize", a.quantize] if a.quantize else []))
    log_dir = Path(a.working_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = ["--max-prefill-tokens", str(a.max_prefill_tokens)] if a.max_prefill_tokens else []
    servers = []
    try:
        openai_server = OpenAIServer(model, a.working_dir, log_dir / "openai_serve_speed.log", "--max-batch-size",
                                     str(a.clients), "--max-queue", str(4 * a.clients), *extra)
        servers.append(openai_server)
        openai_server.wait_healthy(timeout=1200)
        if not a.skip_triton:
            from NNDF.serving.triton_client import ServerProcess, serve_argv

            http_port, grpc_port, metrics_port = free_ports(3)
            triton = ServerProcess(serve_argv(a.working_dir, http_port, grpc_port, metrics_port, "--max-batch-size",
                                              str(a.clients), "--max-queue-delay-ms", str(a.max_queue_delay_ms),
                                              model=model), log_dir / "openai_serve_speed_triton.log", http_port,
                                   grpc_port)
            servers.append(triton)
            triton.wait_ready("generate", timeout=1200)

        def openai_send(job):
            prompt, _, max_tokens = job
            return stream_openai(openai_server.http_port, a.variant, prompt, max_tokens)

        def triton_send(job):
            prompt, _, max_tokens = job
            return triton_generate(triton.http_url, prompt, max_tokens)

        # Warm-up, concurrent as the rounds are: the first batches grow ONNX Runtime's memory arena (page
        # faults), which made a cold first pass run at half the speed of the next in process.
        run_clients(jobs[: a.clients], a.clients, openai_send)
        if not a.skip_triton:
            run_clients(jobs[: a.clients], a.clients, triton_send)
        ways: dict[str, list[dict]] = {"one_at_a_time": [], "triton": [], "openai": []}
        answers: dict[int, dict] = {}
        mismatched = 0
        for r in range(a.rounds):
            seconds, res = run_clients(jobs[: a.sequential], 1, openai_send)
            ways["one_at_a_time"].append(summary(seconds, res, [x["tokens"] for x in res]))
            seconds, res = run_clients(jobs, a.clients, openai_send)
            ways["openai"].append(summary(seconds, res, [x["tokens"] for x in res]))
            answers = dict(enumerate(res))
            if not a.skip_triton:
                seconds, tri = run_clients(jobs, a.clients, triton_send)
                mismatched += sum(t["text"] != answers[i]["text"] for i, t in enumerate(tri))
                ways["triton"].append(summary(seconds, tri, [answers[i]["tokens"] for i in range(len(tri))]))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['tokens_per_s']:.1f} tok/s" for k, v in ways.items() if v),
                  flush=True)
    finally:
        codes = [s.terminate() for s in servers]
    medians = {k: median_of(v) for k, v in ways.items() if v}
    one, mine = medians["one_at_a_time"], medians["openai"]
    result = {"model": f"GPT2 {a.variant} (random weights), onnxrt, KV cache, {a.quantize or 'fp32'}", "host": machine,
              "load_average_after": os.getloadavg(), "clients": a.clients, "requests": len(jobs),
              "workload": "prompt 16-128 tokens, max_tokens 16-128, seeded", "rounds": a.rounds,
              "max_queue_delay_ms": a.max_queue_delay_ms, "medians": medians, "per_round": ways,
              "speedup_vs_one_at_a_time": mine["tokens_per_s"] / one["tokens_per_s"],
              "triton_answers_differing": mismatched, "server_exit_codes": codes}
    if "triton" in medians:
        result["speedup_vs_triton"] = mine["tokens_per_s"] / medians["triton"]["tokens_per_s"]
        result["ttft_p95_vs_triton"] = mine["ttft_p95_s"] / medians["triton"]["ttft_p95_s"]
    a.output.write_text(json.dumps(result, indent=2) + "\n")

    def ms(v):
        return f"{v * 1e3:.0f}" if v is not None else "-"

    print(f"\nhost: {machine['cpu_model']} ({machine['cpus']} CPUs), load average before {machine['load_average']}, "
          f"after {result['load_average_after']}")
    print("| way | clients | requests/s | tokens/s | TTFT p50 / p95 (ms) | TPOT p50 / p95 (ms) |\n|---|---|---|---|---|---|")
    for name, clients in (("one_at_a_time", 1), ("triton", a.clients), ("openai", a.clients)):
        if name in medians:
            m = medians[name]
            print(f"| {name} | {clients} | {m['requests_per_s']:.2f} | {m['tokens_per_s']:.1f} | {ms(m['ttft_p50_s'])} / "
                  f"{ms(m['ttft_p95_s'])} | {ms(m['tpot_p50_s'])} / {ms(m['tpot_p95_s'])} |")
    print(f"openai vs one at a time: {result['speedup_vs_one_at_a_time']:.2f}x (target 6x)")
    if "triton" in medians:
        print(f"openai vs triton: {result['speedup_vs_triton']:.2f}x tokens/s (target 1.5x); TTFT p95 "
              f"{ms(mine['ttft_p95_s'])} vs {ms(medians['triton']['ttft_p95_s'])} ms (target: lower); "
              f"Triton answers differing from the OpenAI server's: {mismatched}")
    print(f"saved {a.output}")
    return 0 if mismatched == 0 and all(c == 0 for c in codes[:1]) else 1


if __name__ == "__main__":
    sys.exit(main())
