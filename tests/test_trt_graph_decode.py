"""CUDA graphs that pay off in real use (--use-cuda-graph on the stand-in): the decode steps of one
generation keep a fixed-capacity KV cache, so they all have one shape and one set of addresses and
replay ONE captured graph; tokens stay those of HF generate for every decoder-only family."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import make_cfg
from NNDF.runtime.cached_decoder import CAPACITY_BUCKET, decode_capacity
from GPT2 import trt as gpt2_trt
from GPT2.frameworks import make_backend as frameworks_backend
from test_decoder_families import TINY, get_tiny

NEW_TOKENS = 64


def graph_cfg(workdir, *flags, backends=("trt",)):
    return make_cfg(workdir, "--use-cache", "--use-cuda-graph", "--output-seq-len", str(NEW_TOKENS), *flags,
                    backends=backends)


def trace_steps(monkeypatch, runner) -> list[str]:
    """'capture' or 'replay' for every step the runner executes, in order."""
    events = []
    execute = runner.execute

    def recording(inputs, outputs):
        before = (runner.captures, runner.replays)
        ok = execute(inputs, outputs)
        events.append("capture" if runner.captures > before[0] else "replay" if runner.replays > before[1] else "plain")
        return ok

    monkeypatch.setattr(runner, "execute", recording)
    return events


def test_capacity_is_bucketed_and_bounded_by_the_profile():
    # the past of the last decode step (prompt + new - 2), rounded up to a bucket of 64 slots ...
    assert decode_capacity(3, 20, None) == CAPACITY_BUCKET == 64
    assert [decode_capacity(100, n, 1000) for n in (28, 30, 31)] == [128, 128, 192]
    # ... but never past what the engine's profile accepts, and never less than the run needs
    assert decode_capacity(10, 64, 127) == 127 and decode_capacity(3, 20, 30) == 30
    assert decode_capacity(3, 20, 21) == 21


def test_a_64_token_generation_replays_one_graph_for_its_decode_steps(standin, gpt2_tiny, workdir, prompts,
                                                                      monkeypatch):
    ids, mask = prompts
    ids, mask = ids[1:2, -3:], mask[1:2, -3:]     # 3 tokens of the unpadded prompt: 3 + 64 fit 128 positions
    cfg = graph_cfg(workdir)
    settings = dataclasses.replace(cfg.generation, min_new_tokens=NEW_TOKENS)      # every step runs
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    runner = backend.steps.session._graphs
    events = trace_steps(monkeypatch, runner)
    want = frameworks_backend(gpt2_tiny, make_cfg(workdir)).generate(ids, mask, settings).tokens

    got = backend.generate(ids, mask, settings).tokens
    np.testing.assert_array_equal(got, want)
    assert got.shape[1] == NEW_TOKENS and len(events) == NEW_TOKENS
    # the prompt, then the first decode step is captured; decode steps 2..63 replay that one graph
    assert events[:2] == ["capture", "capture"] and events[2:] == ["replay"] * (NEW_TOKENS - 2)
    assert len(runner._graphs) == 2                       # two graphs, two execution contexts

    # the next generation replays every decode step; its prompt step is captured once more, because the
    # first generation's decode steps grew the buffers the prompt step had used; from then on it replays too
    for _ in range(2):
        events.clear()
        np.testing.assert_array_equal(backend.generate(ids, mask, settings).tokens, want)
        assert events[1:] == ["replay"] * (NEW_TOKENS - 1)
    assert events[0] == "replay" and len(runner._graphs) == 3

    # another prompt length (as in chat): a graph for the new prompt, the decode graph is reused
    events.clear()
    other_ids, other_mask = prompts[0][1:2, -4:], prompts[1][1:2, -4:]
    assert backend.steps.capacity == decode_capacity(4, NEW_TOKENS, 127) == decode_capacity(3, NEW_TOKENS, 127)
    want_other = frameworks_backend(gpt2_tiny, make_cfg(workdir)).generate(other_ids, other_mask, settings).tokens
    np.testing.assert_array_equal(backend.generate(other_ids, other_mask, settings).tokens, want_other)
    assert events[0] == "capture" and events[1:] == ["replay"] * (NEW_TOKENS - 1)
    assert standin._errors == [] and standin._warnings == []


@pytest.mark.parametrize("arch,num_beams", [("gpt2", 1)] + [(arch, 3) for arch in ("gpt2", *TINY)],
                         ids=lambda v: str(v) if isinstance(v, str) else f"beams{v}")
def test_fixed_capacity_decoding_gives_frameworks_tokens(standin, workdir, gpt2_tiny, prompts, monkeypatch, arch,
                                                         num_beams):
    """Left-padded batch of 3, beams reordered inside the fixed buffers: positions come from the mask."""
    flags = ("--batch-size", "3", "--num-beams", str(num_beams), "--output-seq-len", "12")
    if arch == "gpt2":
        loaded, module, reference = gpt2_tiny, gpt2_trt, frameworks_backend(gpt2_tiny, make_cfg(workdir))
        ids, mask = prompts
        cfg = make_cfg(workdir, "--use-cache", "--use-cuda-graph", *flags, backends=("trt",))
    else:
        import importlib

        tiny = get_tiny(arch, workdir)
        loaded, module, reference = tiny.loaded, importlib.import_module(f"{tiny.family.package}.trt"), \
            tiny.backend("frameworks")
        ids, mask = tiny.prompts([0, 1, 2])
        cfg = tiny.cfg("--use-cache", "--use-cuda-graph", *flags, backends=("trt",))
    assert (mask == 0).any()
    backend = module.make_backend(loaded, cfg, workdir)
    events = trace_steps(monkeypatch, backend.steps.session._graphs)
    settings = dataclasses.replace(cfg.generation, min_new_tokens=cfg.generation.max_new_tokens)
    np.testing.assert_array_equal(backend.generate(ids, mask, settings).tokens,
                                  reference.generate(ids, mask, settings).tokens)
    assert backend.steps.capacity is not None
    assert events.count("capture") == 2 and events.count("replay") == settings.max_new_tokens - 2
    assert standin._errors == [] and standin._warnings == []
