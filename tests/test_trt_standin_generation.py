"""The whole trt path for tiny GPT2 (export, engine build, TrtSession, generation loop)
against the CPU stand-in for TensorRT: it must produce the frameworks backend's tokens.

The stand-in enforces TensorRT's runtime rules, so these tests also show that the
production session sets every shape and address TensorRT needs; the last tests
show that the stand-in does catch sessions that do not.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_cfg
from NNDF.base.errors import UsageError
from GPT2 import trt as gpt2_trt
from GPT2.frameworks import make_backend as frameworks_backend

NEW_TOKENS = "12"
SIDE_STREAM = 1      # any handle but 0, the legacy default stream


@pytest.fixture(scope="module")
def reference(gpt2_tiny, workdir):
    return frameworks_backend(gpt2_tiny, make_cfg(workdir))


def trt_cfg(workdir, use_cache: bool, batch: int, beams: int, *extra: str):
    flags = ["--batch-size", str(batch), "--num-beams", str(beams), "--output-seq-len", NEW_TOKENS, *extra]
    return make_cfg(workdir, *(["--use-cache"] if use_cache else []), *flags, backends=("trt",))


def batch_of(prompts, batch: int):
    ids, mask = prompts
    if batch == 1:   # the unpadded prompt alone
        row = int(mask.sum(axis=1).argmax())
        return ids[row:row + 1], mask[row:row + 1]
    return ids, mask


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("batch", [1, 3], ids=["batch1", "batch3"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_trt_tokens_equal_frameworks(standin, reference, gpt2_tiny, workdir, prompts, use_cache, batch, beams):
    cfg = trt_cfg(workdir, use_cache, batch, beams)
    ids, mask = batch_of(prompts, batch)
    assert batch == 1 or (mask == 0).any()          # batch 3 really is left-padded
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    expected = reference.generate(ids, mask, cfg.generation).tokens
    got = backend.generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(got, expected)
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_trt_teacher_forced_logits_match(standin, reference, gpt2_tiny, workdir, prompts, use_cache):
    ids, mask = prompts
    backend = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, use_cache, 3, 1), workdir)
    diff = np.abs(backend.logits(ids, mask) - reference.logits(ids, mask)) * mask[..., None]
    assert diff.max() < 1e-4


def test_one_dynamic_batch_engine_serves_several_batch_sizes(standin, reference, gpt2_tiny, workdir, prompts):
    cfg = trt_cfg(workdir, True, 3, 1, "--dynamic-batch", "--min-dynamic-batch", "1", "--max-dynamic-batch", "3")
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    for batch in (1, 3):
        ids, mask = batch_of(prompts, batch)
        np.testing.assert_array_equal(backend.generate(ids, mask, cfg.generation).tokens,
                                      reference.generate(ids, mask, cfg.generation).tokens)


def test_fixed_batch_engine_refuses_another_batch_size(standin, gpt2_tiny, workdir, prompts):
    cfg = trt_cfg(workdir, True, 3, 1)
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    ids, mask = batch_of(prompts, 1)
    with pytest.raises(UsageError, match="batch=1 but the TensorRT profile covers 3..3"):
        backend.generate(ids, mask, cfg.generation)


def test_second_run_reuses_the_engine(standin, gpt2_tiny, workdir):
    cfg = trt_cfg(workdir, True, 1, 1, "--engine-postfix", "reuse")
    first = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir).steps.session.path
    builds = len(standin._builds)
    second = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir).steps.session.path
    assert second == first and len(standin._builds) == builds
    assert "reuse" in first.parent.name


def test_prebuilt_engine_flag_is_used_and_checked(standin, gpt2_tiny, workdir):
    cached = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 1, 1), workdir).steps.session.path
    nocache = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, False, 1, 1), workdir).steps.session.path
    reused = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 1, 1, "--decoder-engine", str(cached)), workdir)
    assert reused.steps.session.path == cached
    with pytest.raises(UsageError, match="does not fit the decoder graph"):
        gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 1, 1, "--decoder-engine", str(nocache)), workdir)


# --------------------------------------------------------------------------- --use-cuda-graph
def graph_counts(backend) -> tuple[int, int]:
    graphs = backend.steps.session._graphs
    return graphs.captures, graphs.replays


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_cuda_graphs_give_frameworks_tokens_and_are_replayed(standin, reference, gpt2_tiny, workdir, prompts,
                                                             use_cache, beams):
    cfg = trt_cfg(workdir, use_cache, 3, beams, "--use-cuda-graph")
    settings = dataclasses.replace(cfg.generation, min_new_tokens=cfg.generation.max_new_tokens)  # same steps each time
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    ids, mask = prompts
    # Same shapes, other content: a replayed graph must read this generation's prompt, not the one it was captured on.
    batches = [(ids, mask), (ids[::-1].copy(), mask[::-1].copy()), (ids, mask)]
    counts = []
    for batch_ids, batch_mask in batches:
        got = backend.generate(batch_ids, batch_mask, settings).tokens
        np.testing.assert_array_equal(got, reference.generate(batch_ids, batch_mask, settings).tokens)
        counts.append(graph_counts(backend))
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either
    # Buffers settle during the first generation; from then on every step's addresses come again.
    (_, _), (captures_2, replays_2), (captures_3, replays_3) = counts
    assert captures_3 == captures_2 and replays_3 - replays_2 == settings.max_new_tokens


def test_an_engine_that_cannot_be_captured_runs_without_graphs(standin, reference, gpt2_tiny, workdir, prompts,
                                                               monkeypatch, caplog):
    monkeypatch.setattr(standin, "_capturable", False)
    cfg = trt_cfg(workdir, True, 3, 1, "--use-cuda-graph")
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    np.testing.assert_array_equal(backend.generate(*prompts, cfg.generation).tokens,
                                  reference.generate(*prompts, cfg.generation).tokens)
    assert backend.steps.session._graphs is None
    assert "cannot be captured into a CUDA graph" in caplog.text
    standin._errors.clear()


def _toy_runner(standin, gpt2_tiny, workdir, **overrides):
    """A GraphRunner on a real stand-in session, with some of its collaborators replaced."""
    from NNDF.runtime.cuda_graphs import GraphRunner

    session = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, False, 1, 1, "--use-cuda-graph"), workdir).steps.session
    parts = {"new_context": session._new_context, "bind": session._bind, "enqueue": session._enqueue, **overrides}
    return session, GraphRunner(session.device, session._stream, **parts)


def _toy_step(session, runner, length: int):
    ids = np.arange(length, dtype=np.int64)[None] + 5
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(length)[None],
            "logits_index": np.array([length - 1])}
    inputs = {n: runner.input(n, feed[n], session._dtypes[n]) for n in session.input_names}
    context, shapes_set = session._context_for(0)    # the no-cache graph has one profile
    session._set_shapes(context, inputs, shapes_set)
    outputs = {n: runner.output(n, tuple(context.get_tensor_shape(n)), session._dtypes[n], inputs)
               for n in session.output_names}
    runner.execute(inputs, outputs)
    return outputs["logits"].clone()


def test_standin_refuses_a_graph_whose_context_changed_shape(standin, gpt2_tiny, workdir):
    """Why each graph has its own context: one shared context moves on to other shapes."""
    shared = []
    session, runner = _toy_runner(standin, gpt2_tiny, workdir,
                                  new_context=lambda: shared[0] if shared else shared.append(session._new_context())
                                  or shared[0])
    _toy_step(session, runner, 6)      # longest first, so the buffers (and addresses) never change
    _toy_step(session, runner, 4)
    with pytest.raises(RuntimeError, match="changed input shapes since capture"):
        _toy_step(session, runner, 6)
    standin._errors.clear()


def test_standin_refuses_to_capture_the_first_enqueue_after_a_shape_change(standin, gpt2_tiny, workdir, caplog):
    session, runner = _toy_runner(standin, gpt2_tiny, workdir, enqueue=lambda context: None)
    _toy_step(session, runner, 4)
    assert runner.captures == 0 and "enqueue once outside the capture first" in standin._errors[-1]
    standin._errors.clear()


def test_replayed_graph_equals_a_plain_run(standin, gpt2_tiny, workdir):
    session, runner = _toy_runner(standin, gpt2_tiny, workdir)
    first = _toy_step(session, runner, 5)
    again = _toy_step(session, runner, 5)
    assert (runner.captures, runner.replays) == (1, 1)
    ids = np.arange(5, dtype=np.int64)[None] + 5
    plain = session.infer({"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(5)[None],
                           "logits_index": np.array([4])})["logits"]
    np.testing.assert_array_equal(first.numpy(), plain)
    np.testing.assert_array_equal(again.numpy(), plain)


# --------------------------------------------------------------------------- the profile is checked up front
def record_step_sizes(monkeypatch, session) -> tuple[list[dict], list[dict]]:
    """(sizes planned before generating, sizes of every step the session ran)."""
    planned, stepped = [], []
    original = session.check_fits

    def recording(sizes, what):
        (stepped if what.startswith("this ") else planned).append(dict(sizes))
        original(sizes, what)

    monkeypatch.setattr(session, "check_fits", recording)
    return planned, stepped


def assert_plan_is_the_largest_step(planned: list[dict], stepped: list[dict]) -> None:
    """One plan, and on every axis the engine takes it is exactly the largest size a step fed."""
    largest = {axis: max(s[axis] for s in stepped) for axis in stepped[0]}
    assert len(planned) == 1 and {axis: planned[0].get(axis) for axis in largest} == largest


@pytest.mark.parametrize("beams", [1, 2], ids=["greedy", "beam2"])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_planned_sizes_are_the_largest_the_steps_reach(standin, gpt2_tiny, workdir, prompts, monkeypatch,
                                                       use_cache, beams):
    cfg = trt_cfg(workdir, use_cache, 3, beams)
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    planned, stepped = record_step_sizes(monkeypatch, backend.steps.session)
    settings = dataclasses.replace(cfg.generation, min_new_tokens=cfg.generation.max_new_tokens)  # all steps run
    backend.generate(*prompts, settings)
    assert len(stepped) == settings.max_new_tokens
    assert_plan_is_the_largest_step(planned, stepped)


def test_a_run_that_would_leave_the_profile_fails_before_its_first_step(standin, gpt2_tiny, workdir, prompts,
                                                                         monkeypatch):
    ids, mask = prompts
    cfg = trt_cfg(workdir, True, 3, 1, "--input-profile-max-len", str(ids.shape[1]), "--output-profile-max-len", "4")
    backend = gpt2_trt.make_backend(gpt2_tiny, cfg, workdir)
    calls = []
    monkeypatch.setattr(backend.steps.session, "run", lambda *a, **k: calls.append(a))
    n = ids.shape[1]   # the profile allows an n-token prompt and 4 more tokens; the last step would feed n + 11
    with pytest.raises(UsageError, match=rf"3 row\(s\) with a {n}-token prompt and 12 new tokens needs "
                                         rf"past_len={n + 10} but the TensorRT profile covers 0..{n + 3}; "
                                         "generate fewer tokens or raise --output-profile-max-len"):
        backend.generate(ids, mask, cfg.generation)
    assert calls == []


# --------------------------------------------------------------------------- the stand-in is strict
@pytest.fixture
def toy_context(standin, gpt2_tiny, workdir):
    """A raw stand-in execution context for the cached decoder, as the session would drive it."""
    path = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 1, 1), workdir).steps.session.path
    logger = standin.Logger(standin.Logger.ERROR)
    engine = standin.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    return engine, engine.create_execution_context()


def _set_all(engine, context, batch=1, seq=2, past=0, skip=()):
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name).name == "INPUT":
            shape = {"input_ids": (batch, seq), "position_ids": (batch, seq), "logits_index": (1,),
                     "attention_mask": (batch, past + seq)}.get(name, (batch, 4, past, 16))
            assert context.set_input_shape(name, shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = torch.float32 if engine.get_tensor_dtype(name).name == "FLOAT" else torch.int64
        buffers[name] = torch.ones(tuple(context.get_tensor_shape(name)) or (1,), dtype=dtype).reshape(-1)
        if buffers[name].numel() == 0:
            buffers[name] = torch.zeros(1, dtype=dtype)
        if name not in skip:
            context.set_tensor_address(name, buffers[name].data_ptr())
    return buffers


def test_standin_runs_a_correctly_driven_context(toy_context):
    engine, context = toy_context
    buffers = _set_all(*toy_context)
    assert context.execute_async_v3(SIDE_STREAM)
    assert torch.isfinite(buffers["logits"]).all() and buffers["logits"].abs().sum() > 0


def test_sessions_enqueue_on_a_dedicated_stream_and_the_standin_flags_the_default_one(standin, gpt2_tiny, workdir,
                                                                                      prompts, toy_context):
    backend = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 3, 1), workdir)
    graphs = gpt2_trt.make_backend(gpt2_tiny, trt_cfg(workdir, True, 3, 1, "--use-cuda-graph"), workdir)
    assert backend.steps.session._stream.handle != 0
    assert graphs.steps.session._stream is backend.steps.session._stream      # one stream per device
    backend.generate(*prompts, trt_cfg(workdir, True, 3, 1).generation)
    assert standin._warnings == []
    engine, context = toy_context
    buffers = _set_all(engine, context)
    assert context.execute_async_v3(0)                 # runs, as TensorRT does, but with its warning
    assert standin._warnings == [standin._DEFAULT_STREAM_WARNING] and buffers
    standin._warnings.clear()


def test_standin_refuses_a_missing_address(standin, toy_context):
    buffers = _set_all(*toy_context, skip=("present.1.value",))
    assert not toy_context[1].execute_async_v3(SIDE_STREAM)
    assert "neither address nor allocator" in standin._errors[-1] and buffers


def test_standin_refuses_a_too_small_output_buffer(standin, toy_context):
    engine, context = toy_context
    buffers = _set_all(engine, context)
    small = torch.zeros(4, dtype=torch.float32)
    context.set_tensor_address("logits", small.data_ptr())
    assert not context.execute_async_v3(SIDE_STREAM)
    assert "not inside a live device buffer" in standin._errors[-1] and buffers


def test_standin_refuses_shapes_outside_the_profile(standin, toy_context):
    engine, context = toy_context
    assert not context.set_input_shape("input_ids", (2, 3))          # fixed batch 1
    assert not context.set_input_shape("past_key_values.0.key", (1, 4, 500, 16))
    assert not context.set_input_shape("input_ids", (1, 3, 1))


def test_standin_has_no_removed_or_unknown_api(standin, toy_context):
    engine, context = toy_context
    for name in ("execute_async_v2", "execute_v2", "set_binding_shape"):
        assert not hasattr(context, name)
    for name in ("num_bindings", "get_binding_index", "binding_is_input"):
        assert not hasattr(engine, name)
    assert not hasattr(standin.Builder, "build_engine")
    with pytest.raises(AttributeError):
        context.some_setting = 1
