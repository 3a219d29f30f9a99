"""The OpenAI server's Prometheus metrics (GET /metrics, Prometheus' text format), in a registry of its own.

    hf_trt_requests_total{outcome}                 requests by how they ended: stop, length (finished),
                                                   cancelled (the client went away), error, rejected (503:
                                                   queue full), invalid (4xx)
    hf_trt_requests_running / _waiting             rows decoding now / jobs waiting for a row
    hf_trt_prompt_tokens_total                     prompt tokens of finished jobs
    hf_trt_generation_tokens_total                 tokens generated
    hf_trt_time_to_first_token_seconds             arrival -> first generated token
    hf_trt_time_per_output_token_seconds           first -> last token, per later token
    hf_trt_e2e_request_latency_seconds             arrival -> the last event of a request
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("stop", "length", "cancelled", "error", "rejected", "invalid")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0,
                   40.0, 80.0)
STEP_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, running: Callable[[], int], waiting: Callable[[], int]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("hf_trt_requests", "Requests by outcome", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)     # every series exists from the start, at 0
        Gauge("hf_trt_requests_running", "Rows decoding now", registry=r).set_function(running)
        Gauge("hf_trt_requests_waiting", "Jobs waiting for a row", registry=r).set_function(waiting)
        self.prompt_tokens = Counter("hf_trt_prompt_tokens", "Prompt tokens of finished jobs", registry=r)
        self.generation_tokens = Counter("hf_trt_generation_tokens", "Generated tokens", registry=r)
        self.ttft = Histogram("hf_trt_time_to_first_token_seconds", "Arrival to first generated token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("hf_trt_time_per_output_token_seconds", "First to last token, per later token",
                              buckets=STEP_BUCKETS, registry=r)
        self.e2e = Histogram("hf_trt_e2e_request_latency_seconds", "Arrival to the last event of a request",
                             buckets=LATENCY_BUCKETS, registry=r)

    def outcome(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def job_done(self, prompt_tokens: int, completion_tokens: int, first_s: float | None, last_s: float | None) -> None:
        """One job ended: its token counts, and its first/last token times after arrival (None: it made none)."""
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(completion_tokens)
        if first_s is not None:
            self.ttft.observe(first_s)
            if completion_tokens > 1 and last_s is not None:
                self.tpot.observe((last_s - first_s) / (completion_tokens - 1))

    def text(self) -> bytes:
        return generate_latest(self.registry)
