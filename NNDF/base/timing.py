"""Repeat-and-measure with the demo's flags: warmup, iterations, number, duration, percentile."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import numpy as np

from NNDF.base.config import TimingSettings

T = TypeVar("T")


def measure(fn: Callable[[], T], timing: TimingSettings) -> tuple[list[float], list[T]]:
    """Seconds per call of `fn` (each sample averages `number` calls) and every call's result."""
    results: list[T] = []
    for _ in range(timing.warmup):
        fn()
    latencies: list[float] = []
    began = time.perf_counter()
    while len(latencies) < timing.iterations or time.perf_counter() - began < timing.duration:
        start = time.perf_counter()
        for _ in range(timing.number):
            results.append(fn())
        latencies.append((time.perf_counter() - start) / timing.number)
    return latencies, results


def percentile(values: list[float], pct: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), pct)) if values else float("nan")
