"""Memory: peaks measured during a benchmark (never estimated), and runs that cannot fit refused
before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import call
from NNDF.runtime.peak_memory import PeakMemory, resident_bytes


def test_the_peak_of_a_block_is_measured_even_when_it_is_freed_before_the_block_ends():
    with PeakMemory() as quiet:
        sum(range(1000))
    with PeakMemory() as busy:
        block = np.ones(300 << 20 >> 3)   # 300 MB, touched, then freed inside the block
        del block
    assert quiet.host_mb is not None and busy.host_mb is not None
    assert busy.host_mb - quiet.host_mb > 250, (quiet.host_mb, busy.host_mb)
    assert resident_bytes() / (1 << 20) < busy.host_mb          # freed: the resident set fell back
    assert busy.result("cpu") == {"peak_host_memory_mb": busy.host_mb, "peak_gpu_memory_mb": None}


@pytest.mark.parametrize("family", ["GPT2", "BERT"])
def test_benchmark_reports_each_backends_measured_peaks(capsys, tmp_path, family):
    out = tmp_path / "bench.json"
    code, stdout, _ = call(capsys, "benchmark", family, "frameworks", "onnxrt", "--input-seq-len", "8",
                           "--output-seq-len", "4", "--iterations", "2", "--warmup", "0", "--working-dir",
                           tmp_path / "w", "--save-output-fpath", out)
    assert code == 0 and "peak host (MB)" in stdout
    for name, r in json.loads(out.read_text())["results"].items():
        assert r["peak_host_memory_mb"] > 50, (name, r)        # a process holding torch and a model
        assert r["peak_gpu_memory_mb"] is None                  # the CPU: nothing on a GPU to measure
