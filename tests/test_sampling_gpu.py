"""Sampling and streaming in the PyTorch reference on a real CUDA GPU: seeded, with both the
CPU and CUDA generators left as they were, and the streamer delivering the final tokens.

Skipped, with the reason, where torch sees no CUDA device (tests/test_sampling.py covers the CPU)."""

from __future__ import annotations

import dataclasses

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


def test_cuda_sampling_is_seeded_streams_and_leaves_generators_alone(cuda, workdir, prompts):
    ids, mask = prompts
    cfg = make_cfg(workdir, "--use-cache", "--output-seq-len", "12", "--do-sample", "--top-p", "0.9",
                   "--temperature", "0.8", "--repetition-penalty", "1.2")
    backend = frameworks_backend(get_family("GPT2").load(make_cfg(workdir)), cfg)   # a model of its own
    assert backend.device.startswith("cuda:")
    cpu_state, cuda_state = torch.get_rng_state(), torch.cuda.get_rng_state()
    steps = []
    first = backend.generate(ids, mask, cfg.generation, on_step=lambda t: steps.append(np.array(t)))
    assert torch.equal(torch.get_rng_state(), cpu_state) and torch.equal(torch.cuda.get_rng_state(), cuda_state)
    np.testing.assert_array_equal(np.stack(steps, axis=1), first.tokens)
    np.testing.assert_array_equal(backend.generate(ids, mask, cfg.generation).tokens, first.tokens)
    other = backend.generate(ids, mask, dataclasses.replace(cfg.generation, seed=9)).tokens
    assert not np.array_equal(other, first.tokens)
