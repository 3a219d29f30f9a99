"""What the speed scripts share: one `run.py benchmark` per backend in its own process (so one
runtime's thread pool never slows another's), their common flags, and the host's read bandwidth."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_backend(family: str, variant: str, backend: str, flags: list[str], workdir: str, iterations: int,
                warmup: int = 2, record_failure: bool = False) -> dict:
    """The backend's result from `run.py benchmark` (random weights, 128 prompt + 64 new tokens).
    A failed run raises, or with `record_failure` comes back as {"failed": its error line}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(ROOT / "run.py"), "benchmark", family, backend, "--variant", variant,
               "--random-weights", "--working-dir", workdir, "--input-seq-len", "128", "--output-seq-len", "64",
               "--iterations", str(iterations), "--warmup", str(warmup), "--save-output-fpath", str(out), *flags]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=record_failure, text=True)
        if done.returncode != 0:
            if not record_failure:
                raise subprocess.CalledProcessError(done.returncode, cmd)
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            return {"failed": errors[-1] if errors else done.stderr.strip().splitlines()[-1:]}
        return json.loads(out.read_text())["results"][backend]


def case_parser(doc: str, cases: dict, iterations: int, save: str) -> argparse.ArgumentParser:
    """--cases, --iterations, --working-dir and --save, as every speed script takes them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--working-dir", default=str(ROOT / "temp"))
    parser.add_argument("--save", default=str(ROOT / "benchmarks" / save))
    return parser


def read_bandwidth_gbs(size_gib: float = 1.0, repeats: int = 5) -> float:
    """GB/s of a single-threaded numpy sum over size_gib of memory, the best of `repeats`."""
    data = np.ones(int(size_gib * (1 << 30)) // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9
