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


GENERATION_LENGTHS = ("--input-seq-len", "128", "--output-seq-len", "64")


def run_backend(family: str, variant: str, backend: str, flags: list[str], workdir: str, iterations: int,
                warmup: int = 2, record_failure: bool = False, lengths: tuple[str, ...] = GENERATION_LENGTHS) -> dict:
    """The backend's result from `run.py benchmark` (random weights; by default 128 prompt + 64 new
    tokens). A failed run raises, or with `record_failure` comes back as {"failed": its error line}."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(ROOT / "run.py"), "benchmark", family, backend, "--variant", variant,
               "--random-weights", "--working-dir", workdir, *lengths,
               "--iterations", str(iterations), "--warmup", str(warmup), "--save-output-fpath", str(out), *flags]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=record_failure, text=True)
        if done.returncode != 0:
            if not record_failure:
                raise subprocess.CalledProcessError(done.returncode, cmd)
            errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
            return {"failed": errors[-1] if errors else done.stderr.strip().splitlines()[-1:]}
        return json.loads(out.read_text())["results"][backend]


def head_commit() -> str | None:
    """The checkout's short commit hash, saved beside a script's figures (None outside a git checkout)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or None


def lscpu_fields() -> dict[str, str]:
    """lscpu's fields ("Model name", "CPU(s)", "Flags", ...), saved beside a script's figures ({} where
    lscpu cannot run)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in out.splitlines())}


def peak_megabytes(result: dict) -> str:
    """A result's measured peak host memory, and its GPU's where it ran on one, for a table ("-" where
    the run did not measure it, e.g. a result saved before the field existed)."""
    from NNDF.actions.reporting import megabytes

    return f"{megabytes(result.get('peak_host_memory_mb'))} | {megabytes(result.get('peak_gpu_memory_mb'))}"


def case_parser(doc: str, cases: dict, iterations: int, save: str) -> argparse.ArgumentParser:
    """--cases, --iterations, --working-dir and --save, as every speed script takes them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(cases), choices=list(cases))
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--working-dir", default=str(ROOT / "temp"))
    parser.add_argument("--save", default=str(ROOT / "benchmarks" / save))
    return parser


def newest_graph(onnx_dir: Path, pattern: str, plain: bool = False) -> Path | None:
    """The model.onnx of the newest finished artifact in onnx_dir whose folder matches `pattern`
    (a working dir keeps the graphs of earlier code versions too); `plain`: only plain exports,
    named <graph>-<precision>-<key>, not their fused or quantized forms. None if there is none."""
    found = [p for p in onnx_dir.glob(pattern) if (p / "manifest.json").is_file() and (not plain or p.name.count("-") == 2)]
    return max(found, key=lambda p: p.stat().st_mtime) / "model.onnx" if found else None


def graph_bytes(path: Path) -> int:
    """Bytes of a graph's files (ONNX + weights), from its artifact's manifest."""
    from NNDF.models.artifacts import artifact_bytes

    return artifact_bytes(json.loads((path.parent / "manifest.json").read_text())["files"])


def read_bandwidth_gbs(size_gib: float = 1.0, repeats: int = 5) -> float:
    """GB/s of a single-threaded numpy sum over size_gib of memory, the best of `repeats`."""
    data = np.ones(int(size_gib * (1 << 30)) // 8, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9
