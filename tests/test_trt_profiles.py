"""Optimization profiles per phase: cached decoders get a context profile (the prompt on an empty
past) and a generation profile (one token on a growing past), each with its own opt shape; the
runner selects a step's profile with set_optimization_profile_async, and the stand-in enforces
the selected profile's bounds."""

from __future__ import annotations

import numpy as np
import pytest

import trt_standin
from conftest import make_cfg
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.graphs.axes import RunSizes
from NNDF.kinds.decoder_only.graphs import decoder_spec
from NNDF.kinds.encoder_decoder.graphs import Seq2SeqLayout, graph_specs
from NNDF.registry import get_family
from NNDF.runtime.trt_profiles import optimization_profiles, profile_ranges
from GPT2 import trt as gpt2_trt
from GPT2.GPT2ModelConfig import GPT2_LAYOUT
from GPT2.frameworks import make_backend as frameworks_backend


def test_cached_decoders_get_a_context_and_a_generation_profile(workdir, gpt2_tiny):
    cfg = make_cfg(workdir, "--use-cache", "--batch-size", "3", "--num-beams", "2", "--output-seq-len", "20",
                   "--input-seq-len", "10", "--input-profile-max-len", "64", "--output-profile-max-len", "32")
    context, generation = optimization_profiles(decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, True), cfg.trt, RunSizes.of(cfg), 128)
    # context: the prompt on an empty past, tuned for --input-seq-len; scoring may keep every position
    assert context == {"batch": (6, 6, 6), "seq": (1, 10, 64), "kept": (1, 1, 64), "past_len": (0, 0, 0),
                       "total_len": (1, 10, 64)}
    # generation: one token on a past of up to prompt max + output max - 1, tuned halfway through
    assert generation == {"batch": (6, 6, 6), "seq": (1, 1, 1), "kept": (1, 1, 1), "past_len": (1, 19, 95),
                          "total_len": (2, 20, 96)}
    nocache_spec = decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, False)
    assert optimization_profiles(nocache_spec, cfg.trt, RunSizes.of(cfg), 128) == (profile_ranges(nocache_spec, cfg.trt, RunSizes.of(cfg), 128),)


def test_encoder_decoder_decoders_get_two_profiles_and_encoders_one(workdir):
    loaded = get_family("T5").load(parse_args(["run", "T5", "frameworks", "--working-dir", str(workdir.root)]))
    specs = graph_specs(loaded.model, Seq2SeqLayout())
    cfg = make_cfg(workdir, "--use-cache", "--output-seq-len", "12", "--input-profile-max-len", "40",
                   "--output-profile-max-len", "16")
    context, generation = optimization_profiles(specs["decoder"], cfg.trt, RunSizes.of(cfg), 512)
    assert context["past_len"] == (0, 0, 0) and context["seq"] == (1, 1, 16) and context["enc_seq"][2] == 40
    assert generation["past_len"] == (1, 5, 15) and generation["seq"] == (1, 1, 1)
    assert generation["enc_seq"] == context["enc_seq"]
    assert len(optimization_profiles(specs["encoder"], cfg.trt, RunSizes.of(cfg), 512)) == 1
    assert len(optimization_profiles(specs["decoder_nocache"], cfg.trt, RunSizes.of(cfg), 512)) == 1


def test_the_runner_selects_the_profile_of_each_phase(standin, gpt2_tiny, workdir, prompts, monkeypatch):
    """The prompt step runs on a context on the context profile, every decode step on one on the
    generation profile: a context per profile, each switched once, when created, on the session's
    stream; the next generation switches nothing."""
    cfg = make_cfg(workdir, "--use-cache", "--batch-size", "3", "--output-seq-len", "6", backends=("trt",))
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    session = backend.steps.session
    header = trt_standin.plan_header(session.path)
    assert len(header["profiles"]) == 2
    selected, switches = [], []
    context_class = type(session._context_for(0)[0])
    original = context_class.set_optimization_profile_async

    def switching(self, index, stream):
        switches.append((index, stream))
        return original(self, index, stream)

    monkeypatch.setattr(context_class, "set_optimization_profile_async", switching)
    enqueue = session._enqueue
    monkeypatch.setattr(session, "_enqueue", lambda ctx: (selected.append((id(ctx), ctx.active_optimization_profile)),
                                                          enqueue(ctx))[1])
    ids, mask = prompts
    want = frameworks_backend(gpt2_tiny, make_cfg(workdir)).generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(backend.generate(ids, mask, cfg.generation).tokens, want)
    profiles = [p for _, p in selected]
    assert profiles == [0] + [1] * (len(selected) - 1) and len(selected) > 1       # prompt, then decode steps
    assert len({ctx for ctx, _ in selected}) == 2                                  # two contexts, one per profile
    assert switches == [(1, session._stream.handle)]   # the generation context, once, on the session's stream
    backend.generate(ids, mask, cfg.generation)
    assert switches == [(1, session._stream.handle)]   # the next generation switches nothing
    assert standin._errors == [] and standin._warnings == []


@pytest.mark.parametrize("graphs", [False, True], ids=["plain", "cuda-graph"])
def test_profile_switches_and_shape_settings_over_a_generation_are_bounded(standin, gpt2_tiny, workdir, prompts,
                                                                           graphs):
    """Issue 24: one context switching between the phases paid a switch (a cudaMemcpyAsync of profile
    data, all shapes invalidated) at every prompt and every first decode step, and every input shape
    was set at every step. Counted by the stand-in over a 16-token generation after a warm one:
    no switch at all, and set_input_shape only for inputs whose shape changed: at a decode step the
    inputs along the growing past (past_len, total_len); with CUDA graphs (fixed-capacity decoding)
    every step of the third generation replays, and nothing is set."""
    cfg = make_cfg(workdir, "--use-cache", "--batch-size", "3", "--output-seq-len", "16",
                   *(["--use-cuda-graph"] if graphs else []), backends=("trt",))
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    ids, mask = prompts
    for _ in range(2 if graphs else 1):   # warm: contexts made; graphs captured (the prompt's in the second)
        backend.generate(ids, mask, cfg.generation)
    standin._counts.update(profile_switches=0, set_input_shape=0)
    out = backend.generate(ids, mask, cfg.generation)
    steps = out.tokens.shape[1]
    spec = backend.steps.session.spec
    growing = [n for n, axes in spec.inputs.items() if {"past_len", "total_len"} & set(axes.values())]
    assert standin._counts["profile_switches"] == 0
    bound = 0 if graphs else (steps - 1) * len(growing)       # the prompt step's shapes were set last time
    assert standin._counts["set_input_shape"] <= bound, (standin._counts, bound)
    assert standin._errors == [] and standin._warnings == []


def test_standin_enforces_the_selected_profile(standin, gpt2_tiny, workdir):
    session = gpt2_trt.make_backend(gpt2_tiny, make_cfg(workdir, "--use-cache", backends=("trt",)), workdir) \
        .steps.session
    engine = standin.Runtime(standin.Logger()).deserialize_cuda_engine(session.path.read_bytes())
    context = engine.create_execution_context()
    assert context.active_optimization_profile == 0
    past = (1, 4, 5, 16)
    assert not context.set_input_shape("past_key_values.0.key", past)          # context profile: past 0 only
    assert "outside the selected profile 0" in standin._errors[-1]
    assert context.set_optimization_profile_async(1, 1)
    assert context.set_input_shape("past_key_values.0.key", past)
    assert not context.set_input_shape("input_ids", (1, 3))                     # generation: one token
    assert not context.set_optimization_profile_async(2, 1)                     # no such profile
    standin._errors.clear()


def test_an_engine_without_the_generation_phase_is_refused_at_load(standin, gpt2_tiny, workdir):
    """An engine built with only the context profile cannot run decode steps: refused before any step."""
    from pathlib import Path

    from NNDF.export.trt_engines import engine_for
    from NNDF.models.artifacts import artifact_subdir
    from NNDF.runtime.trt_session import TrtSession
    from GPT2.GPT2ModelConfig import GPT2_FAMILY

    cfg = make_cfg(workdir, "--use-cache", backends=("trt",))
    spec = decoder_spec(gpt2_tiny.model, GPT2_LAYOUT, True)
    context, generation = optimization_profiles(spec, cfg.trt, RunSizes.of(cfg), gpt2_tiny.max_positions)
    onnx_path = Path(trt_standin.plan_header(gpt2_trt.make_backend(gpt2_tiny, cfg, workdir).steps.session.path)["source"])
    engine = engine_for(onnx_path, spec, (context,), cfg.trt, False, workdir,
                        artifact_subdir(GPT2_FAMILY, gpt2_tiny))
    with pytest.raises(UsageError, match="past_len"):
        TrtSession(engine, spec, (context, generation), cfg.trt)
