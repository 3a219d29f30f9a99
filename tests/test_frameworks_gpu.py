"""The PyTorch reference on a real CUDA GPU (issue: the GPU half, point 7).

Skipped, with the reason, where torch sees no CUDA device; the selection logic itself is
tested everywhere with CUDA mocked (tests/test_placement.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_cfg
from NNDF.registry import get_family
from GPT2.frameworks import make_backend as frameworks_backend

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device is visible to PyTorch")


def fresh_tiny(workdir):
    """A model of its own: frameworks moves (and may halve) the model it is given."""
    return get_family("GPT2").load(make_cfg(workdir))


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_cuda_frameworks_gives_the_cpu_reference_tokens(cuda, workdir, prompts, beams):
    ids, mask = prompts
    cfg = make_cfg(workdir, "--use-cache", "--num-beams", str(beams), "--output-seq-len", "16", action="benchmark")
    on_cpu = frameworks_backend(fresh_tiny(workdir), make_cfg(workdir, "--cpu"))
    on_gpu = frameworks_backend(fresh_tiny(workdir), cfg)
    assert on_gpu.device.startswith("cuda:") and on_gpu.precision == "fp32"
    assert next(on_gpu.model.parameters()).is_cuda
    got = on_gpu.generate(ids, mask, cfg.generation)
    np.testing.assert_array_equal(got.tokens, on_cpu.generate(ids, mask, cfg.generation).tokens)
    assert len(got.step_times) == got.tokens.shape[1] and all(t > 0 for t in got.step_times)
    diff = np.abs(on_gpu.logits(ids, mask) - on_cpu.logits(ids, mask)) * mask[..., None]
    assert diff.max() < 1e-3


def test_cuda_fp16_frameworks_halves_the_model_and_agrees_on_most_next_tokens(cuda, workdir, prompts):
    ids, mask = prompts
    half = frameworks_backend(fresh_tiny(workdir), make_cfg(workdir, "--fp16"))
    full = frameworks_backend(fresh_tiny(workdir), make_cfg(workdir, "--cpu"))
    assert half.precision == "fp16" and next(half.model.parameters()).dtype == torch.float16
    got, want = half.logits(ids, mask), full.logits(ids, mask)
    assert np.isfinite(got).all()
    real = mask.astype(bool)
    assert (got.argmax(-1) == want.argmax(-1))[real].mean() > 0.9
