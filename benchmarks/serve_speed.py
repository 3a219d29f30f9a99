#!/usr/bin/env python3
"""Does Triton's dynamic batching pay? The README's serving table, measured.

GPT2 at its real size (124M parameters, random weights, onnxrt with the KV cache) served by
`run.py serve`; every request is a 32-token prompt answered with exactly 32 new tokens.
The same requests are sent one at a time by one client, then by 16 concurrent clients
(tritonclient over HTTP, 127.0.0.1), alternating for --repeats rounds on the same server so
that the machine's drift (runs here have moved by 15% from one minute to the next) touches
both; the medians give requests per second of each. Also checked: every request got the same
text both ways (greedy answers do not depend on the batch).

    python benchmarks/serve_speed.py [--clients 16] [--rounds 4] [--max-queue-delay-ms 50]

The queue delay is 50 ms by default: a client that gets its answer sends its next request
some milliseconds later, and with a 5 ms window a batch closes before all of them are
back, so the clients split into groups that take turns (two batches of 8 in the runs here):
one group's requests queue while the other's batch runs and are dispatched the moment it
ends. The mean batch size is reported so this shows. The one-at-a-time requests go to the
same server, so with a long window each waits it out: compare windows with that in mind.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from NNDF.serving.triton_client import ServerProcess, free_ports, generate_http, serve_argv  # noqa: E402

PROMPT_TOKENS = NEW_TOKENS = 32


def prompts_of_exactly(n_tokens: int, count: int, variant: str) -> list[str]:
    """Texts the served model's tokenizer reads as exactly n_tokens tokens (seeded, distinct)."""
    return texts_of_exactly(served_tokenizer(variant), n_tokens, count)


def served_tokenizer(variant: str):
    """The tokenizer `run.py serve GPT2 ... --variant V --random-weights` uses."""
    from NNDF.cli import parse_args
    from NNDF.registry import get_family

    return get_family("GPT2").load(parse_args(["run", "GPT2", "--variant", variant, "--random-weights"])).tokenizer


def texts_of_exactly(tokenizer, n_tokens: int, count: int, seed: int = 0) -> list[str]:
    """Texts `tokenizer` reads as exactly n_tokens tokens (seeded, distinct), made of the shipped corpus' words."""
    import numpy as np

    words = (ROOT / "NNDF" / "data" / "tokenizer_corpus.txt").read_text().split()
    rng = np.random.default_rng(seed)
    found: list[str] = []
    while len(found) < count:
        ids = tokenizer(" ".join(rng.choice(words, 3 * n_tokens)))["input_ids"][:n_tokens]
        text = tokenizer.decode(ids)
        if len(tokenizer(text)["input_ids"]) == n_tokens and text not in found:
            found.append(text)
    return found


def timed(jobs: list[str], url: str, clients: int) -> tuple[float, list[str]]:
    """Seconds to answer all jobs with `clients` threads each sending its share one request at a time."""
    return run_clients(jobs, clients, lambda prompt: generate_http(url, prompt))


def run_clients(jobs: list, clients: int, send) -> tuple[float, list]:
    """Wall seconds for `clients` threads to answer all jobs (send(job) each), each thread taking its share back
    to back, and the answers in job order."""
    answers: list = [None] * len(jobs)

    def client(k):
        for i in range(k, len(jobs), clients):
            answers[i] = send(jobs[i])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, answers


def batch_stats(url: str) -> tuple[int, int]:
    """(requests, batches) the generate model has run so far, from Triton's statistics."""
    import tritonclient.http as http

    client = http.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("generate")["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]
    finally:
        client.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="gpt2")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4, help="requests per client in the concurrent run")
    p.add_argument("--sequential", type=int, default=16, help="requests sent one at a time")
    p.add_argument("--max-queue-delay-ms", type=float, default=50.0)
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of both runs; medians are reported")
    p.add_argument("--working-dir", default=str(ROOT / "temp"))
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results-serve.json")
    a = p.parse_args()

    prompts = prompts_of_exactly(PROMPT_TOKENS, a.clients, a.variant)
    http_port, grpc_port, metrics_port = free_ports(3)
    log = Path(a.working_dir) / "serve_speed.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(serve_argv(a.working_dir, http_port, grpc_port, metrics_port,
                                      "--max-batch-size", str(a.clients), "--max-queue-delay-ms", str(a.max_queue_delay_ms),
                                      "--output-seq-len", str(NEW_TOKENS), "--min-output-len", str(NEW_TOKENS),
                                      model=("GPT2", "onnxrt", "--variant", a.variant, "--random-weights", "--use-cache")),
                           log, http_port, grpc_port)
    try:
        server.wait_ready("generate", timeout=900)
        timed(prompts[:2], server.http_url, 1)                       # warm-up: first runs allocate
        jobs = [prompts[i % len(prompts)] for i in range(a.clients * a.rounds)]
        ones, manys, counts = [], [], []
        for _ in range(a.repeats):
            one_s, one = timed(prompts[: a.sequential], server.http_url, 1)
            before = batch_stats(server.http_url)
            many_s, many = timed(jobs, server.http_url, a.clients)
            after = batch_stats(server.http_url)
            ones.append(one_s)
            manys.append(many_s)
            counts.append((after[0] - before[0], after[1] - before[1]))
        one_s, many_s = sorted(ones)[len(ones) // 2], sorted(manys)[len(manys) // 2]
    finally:
        code = server.terminate()
    alone = dict(zip(prompts[: a.sequential], one))
    same = sum(alone[j] == answer for j, answer in zip(jobs, many) if j in alone)
    compared = sum(j in alone for j in jobs)
    result = {
        "model": f"GPT2 {a.variant} (random weights), onnxrt, KV cache", "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS, "max_queue_delay_ms": a.max_queue_delay_ms,
        "one_at_a_time": {"requests": a.sequential, "seconds": one_s, "requests_per_s": a.sequential / one_s},
        "concurrent": {"clients": a.clients, "requests": len(jobs), "seconds": many_s,
                       "requests_per_s": len(jobs) / many_s},
        "mean_batch_in_concurrent_run": sum(c[0] for c in counts) / max(1, sum(c[1] for c in counts)),
        "repeats": a.repeats, "one_at_a_time_seconds_each": ones, "concurrent_seconds_each": manys,
        "same_answers": f"{same}/{compared}", "server_exit_code": code,
    }
    result["speedup"] = result["concurrent"]["requests_per_s"] / result["one_at_a_time"]["requests_per_s"]
    a.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| clients | requests | seconds | requests/s | speed-up |\n|---|---|---|---|---|\n"
          f"| 1 (one at a time) | {a.sequential} | {one_s:.2f} | {a.sequential / one_s:.2f} | 1.00x |\n"
          f"| {a.clients} concurrent | {len(jobs)} | {many_s:.2f} | {len(jobs) / many_s:.2f} | {result['speedup']:.2f}x |")
    print(f"mean batch in the concurrent run: {result['mean_batch_in_concurrent_run']:.1f}; "
          f"same answers as one at a time: {same}/{compared}; saved {a.output}")
    return 0 if result["speedup"] >= 4 and same == compared else 1


if __name__ == "__main__":
    sys.exit(main())
