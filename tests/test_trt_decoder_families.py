"""The trt path for OPT, BLOOM, GPT-Neo, GPT-J, GPT-NeoX, Llama, Qwen2 and Mistral tiny models against the CPU
stand-in for TensorRT: the same tokens as HF generate, greedy and beam, padded batch."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from test_decoder_families import TINY, get_tiny


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("use_cache,num_beams", [(True, 1), (True, 3), (False, 1)],
                         ids=["cache-greedy", "cache-beam3", "nocache-greedy"])
def test_trt_tokens_equal_frameworks(standin, workdir, arch, use_cache, num_beams):
    tiny = get_tiny(arch, workdir)
    ids, mask = tiny.prompts([0, 1, 2])
    flags = ["--batch-size", "3", "--num-beams", str(num_beams), "--output-seq-len", "12"]
    cfg = tiny.cfg(*flags, *(["--use-cache"] if use_cache else []), backends=("trt",))
    trt = importlib.import_module(f"{tiny.family.package}.trt").make_backend(tiny.loaded, cfg, workdir)
    want = tiny.backend("frameworks").generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(trt.generate(ids, mask, cfg.generation).tokens, want)
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either
