"""`run.py serve` on the real Triton server (PyTriton's), tiny GPT2 on onnxrt, 127.0.0.1 only.

One server for the module (started once, always stopped); the last test stops it
with SIGTERM while requests are in flight.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

import tritonclient.http as http   # the [serve] extra; the [test] extra installs it too

from conftest import ROOT, concurrently
from NNDF.serving.triton_client import HOST, ServerProcess, free_ports, generate_http, serve_argv, stream_grpc, text_inputs

PROMPTS = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben",
           "A storm rolled in over the harbour", "Tom", "In the morning the fishermen", "She opened the letter",
           "Rain again"]
SOAK_REQUESTS, SOAK_WARMUP, SOAK_THREADS = 300, 60, 6
SOAK_RSS_BOUND_MIB = 64   # growth of all server processes over the soak, after a warm-up


@pytest.fixture(scope="module")
def server(workdir, tmp_path_factory):
    http_port, grpc_port, metrics_port = free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # a long queue delay makes the test's bursts batch reliably on a busy machine
    proc = ServerProcess(serve_argv(str(workdir.root), http_port, grpc_port, metrics_port,
                                    "--max-batch-size", "16", "--max-queue-delay-ms", "200"),
                         log, http_port, grpc_port)
    proc.metrics_port = metrics_port
    try:
        proc.wait_ready("generate")
        proc.wait_ready("generate_stream")
        yield proc
    finally:
        proc.terminate()


@pytest.fixture(scope="module")
def alone(server):
    """Each prompt's answer when it is the only request (sent one at a time), by max_new_tokens."""
    return {(p, n): generate_http(server.http_url, p, n) for p in PROMPTS for n in (3, 10)}


def _stats(url: str) -> dict:
    client = http.InferenceServerClient(url)
    try:
        return client.get_inference_statistics("generate")["model_stats"][0]
    finally:
        client.close()


def _burst(url: str, jobs: list[tuple]) -> list:
    """Send all jobs at once from one thread each; results (text or the exception) in job order."""
    return concurrently([lambda job=job: generate_http(url, **job) if isinstance(job, dict) else generate_http(url, *job)
                         for job in jobs])


def test_health_readiness_and_metrics_are_tritons(server, alone):
    client = http.InferenceServerClient(server.http_url)
    try:
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_model_metadata("generate")
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            ("text", "BYTES"), ("max_new_tokens", "INT32"), ("num_beams", "INT32"), ("do_sample", "BOOL"),
            ("temperature", "FP32"), ("top_k", "INT32"), ("top_p", "FP32"), ("repetition_penalty", "FP32"),
            ("seed", "INT64")]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("text", "BYTES")]
    finally:
        client.close()
    with urllib.request.urlopen(f"http://{HOST}:{server.metrics_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert re.search(r'nv_inference_request_success\{model="generate",version="1"\} [1-9]', metrics)


def test_concurrent_requests_are_batched_and_answer_as_alone(server, alone):
    before = _stats(server.http_url)
    jobs = [(p, n) for p in PROMPTS for n in (3, 10)]
    assert _burst(server.http_url, jobs) == [alone[j] for j in jobs]
    after = _stats(server.http_url)
    requests = after["inference_count"] - before["inference_count"]
    batches = after["execution_count"] - before["execution_count"]
    assert requests == len(jobs) and batches < len(jobs) / 2, (requests, batches)


def test_bad_requests_get_errors_and_others_in_their_batch_are_answered(server, alone):
    jobs = [(PROMPTS[0], 10), (PROMPTS[1], -2), ("word " * 300, 3), (PROMPTS[2], 3), ("", 3)]
    results = _burst(server.http_url, jobs)
    assert results[0] == alone[jobs[0]] and results[3] == alone[jobs[3]]
    assert "max_new_tokens must be at least 1, got -2" in str(results[1])
    assert "exceeds the model's 128 positions" in str(results[2])
    assert "'text' is empty" in str(results[4])

    client = http.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(Exception, match="no 'text' input"):   # missing text
            tokens = http.InferInput("max_new_tokens", [1, 1], "INT32")
            tokens.set_data_from_numpy(np.array([[3]], np.int32))
            client.infer("generate", [tokens])
        with pytest.raises(Exception, match="data-type is 'FP32'"):  # wrong type: Triton itself refuses it
            number = http.InferInput("text", [1, 1], "FP32")
            number.set_data_from_numpy(np.array([[1.5]], np.float32))
            client.infer("generate", [number])
        assert client.infer("generate", text_inputs(http, PROMPTS[4], 10)).as_numpy("text")[0, 0].decode() \
            == alone[(PROMPTS[4], 10)]
    finally:
        client.close()


def test_grpc_stream_adds_up_to_the_plain_answer(server, alone):
    for prompt in (PROMPTS[0], PROMPTS[2]):
        pieces = stream_grpc(server.grpc_url, prompt, 10)
        assert len(pieces) > 1
        assert prompt + "".join(pieces) == alone[(prompt, 10)]


def test_sampled_requests_keep_their_seeds_answer_in_a_burst_and_stream(server, alone):
    def sampled(seed: int) -> dict:
        return dict(do_sample=True, temperature=1.5, top_k=0, top_p=0.95, seed=seed)

    first = {s: generate_http(server.http_url, PROMPTS[1], 10, **sampled(s)) for s in (1, 2, 3)}
    assert len(set(first.values())) > 1 and alone[(PROMPTS[1], 10)] not in first.values()   # really sampled
    jobs = [dict(prompt=PROMPTS[1], max_new_tokens=10, **sampled(s)) for s in (1, 2, 3, 1)] + [(PROMPTS[0], 10)]
    assert _burst(server.http_url, jobs) == [first[1], first[2], first[3], first[1], alone[(PROMPTS[0], 10)]]
    pieces = stream_grpc(server.grpc_url, PROMPTS[1], 10, **sampled(2))
    assert len(pieces) > 1 and PROMPTS[1] + "".join(pieces) == first[2]


def _server_rss_mib(pid: int) -> float:
    """Resident memory of the serve process and all its descendants (Triton, the model stubs)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,rss="], capture_output=True, text=True).stdout
    children, rss = {}, {}
    for line in out.splitlines():
        p, pp, r = map(int, line.split())
        children.setdefault(pp, []).append(p)
        rss[p] = r
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 1024


def test_soak_loses_nothing_and_memory_stays_bounded(server, alone):
    jobs = [(PROMPTS[i % len(PROMPTS)], (3, 10)[i % 2]) for i in range(SOAK_WARMUP + SOAK_REQUESTS)]
    answers: list = [None] * len(jobs)

    def worker(k, first, end):
        client = http.InferenceServerClient(server.http_url, network_timeout=120)
        try:
            for i in range(first + k, end, SOAK_THREADS):
                try:
                    out = client.infer("generate", text_inputs(http, *jobs[i]))
                    answers[i] = out.as_numpy("text")[0, 0].decode()
                except Exception as e:  # counted as lost below
                    answers[i] = e
        finally:
            client.close()

    def run_all(first, end):
        threads = [threading.Thread(target=worker, args=(k, first, end)) for k in range(SOAK_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)

    run_all(0, SOAK_WARMUP)   # warm-up: allocator pools and Triton's buffers reach their working size
    rss_before = _server_rss_mib(server.proc.pid)
    run_all(SOAK_WARMUP, len(jobs))
    rss_after = _server_rss_mib(server.proc.pid)
    lost = [(j, a) for j, a in zip(jobs, answers) if a != alone[j]]
    assert not lost, lost[:3]
    print(f"server RSS {rss_before:.0f} MiB -> {rss_after:.0f} MiB over {SOAK_REQUESTS} requests")
    assert rss_after - rss_before < SOAK_RSS_BOUND_MIB, (rss_before, rss_after)


def test_port_in_use_is_one_error_line(workdir):
    taken = socket.socket()
    taken.bind((HOST, 0))
    taken.listen()
    try:
        busy = taken.getsockname()[1]
        grpc_port, metrics_port = free_ports(2)
        proc = subprocess.run(serve_argv(str(workdir.root), busy, grpc_port, metrics_port), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --http-port {busy} on {HOST} is in use"), proc.stderr


def test_sigterm_drains_in_flight_requests_and_exits_0(server, alone, workdir):
    """Last in the module: it stops the shared server."""
    jobs = [(PROMPTS[i % len(PROMPTS)], 100, 4) for i in range(24)]   # beams make these slow enough to catch
    results: list = [None] * len(jobs)

    def send(i, job):
        try:
            results[i] = generate_http(server.http_url, *job)
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=send, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    time.sleep(0.3)   # all sent; the first batches are generating
    in_flight = sum(r is None for r in results)
    code = server.terminate(timeout=90)
    for t in threads:
        t.join(60)
    assert in_flight, "every request was answered before SIGTERM, so this run shows no draining: make them slower"
    assert code == 0, server.output()[-2000:]
    assert all(isinstance(r, str) and r.startswith(p) for r, (p, *_) in zip(results, jobs)), results
    assert server.output().rstrip().endswith("stopped")
    # Triton's own log shows that it waited for the requests under way (their connections or inferences)
    log = (workdir.root / f"triton-serve-{server.http_port}.log").read_text()
    assert re.search(r"Found [1-9]\d* (HTTP service connections|model versions that have in-flight)", log), log[-2000:]
