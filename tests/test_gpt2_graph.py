"""GPT2's onnxrt decoder written from the weights (NNDF/export/gpt2_graph.py) and its in-place KV cache
(NNDF/runtime/inplace_cache.py): logits against PyTorch away from any fixed shape (batch 1-3, left-padded
and right-padded rows, past 0/5/37, 1-9 new tokens per call) for gpt2 and for a Cerebras-like GPT2 (exact
gelu, untied head, unscaled attention, head size 32); MatMulNBits against PyTorch with the same quantized
weights; tokens equal HF generate for gpt2-tiny (greedy, beam, sampling seeded); continuous batching with
staggered arrivals; the cached artifact; which graph onnxrt runs when and what the writer refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig

from NNDF.base.config import GenerationSettings, QuantSettings
from NNDF.cli import parse_args
from NNDF.export import gpt2_graph
from inplace_graphs import (assert_computes_with_stored_weights, assert_tokens_equal_hf_generate, batch, greedy_steps,
                            hf_logits, logits_by_calls)
from NNDF.kinds.decoder_only.graphs import inplace_spec
from NNDF.kinds.makers import make_backends
from NNDF.registry import get_family
from NNDF.runtime.continuous import batch_decoder
from NNDF.runtime.inplace_cache import InPlaceCacheDecoder
from NNDF.runtime.ort_session import OrtSession

GPT2 = get_family("GPT2")
SMALL = dict(vocab_size=512, n_embd=64, n_layer=2, n_positions=128, initializer_range=0.2)


def seeded(config):
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def gpt2_small():
    """gpt2-tiny's shape: 4 heads of 16, gelu_new, the LM head tied to the token embedding."""
    return seeded(GPT2Config(n_head=4, **SMALL))


def cerebras_like():
    """Cerebras-GPT's exact gelu, an untied LM head, attention without the 1/sqrt(d) scale, 2 heads of 32."""
    return seeded(GPT2Config(n_head=2, activation_function="gelu", tie_word_embeddings=False, scale_attn_weights=False,
                             **SMALL))


def steps_for(model, workdir, name: str, quant: QuantSettings | None = None) -> InPlaceCacheDecoder:
    path = gpt2_graph.WRITER.graph(workdir, workdir.artifact_dir("gpt2-graph-tests", name), model, {"test": name},
                                   quant, model.config.n_positions)
    return InPlaceCacheDecoder(OrtSession(path, allow_cuda=False), inplace_spec(model.config.num_hidden_layers))


# (rows, past, new tokens per call): past 0 is the prefill, then calls of `new` tokens until the end
CASES = [(1, 0, 1), (1, 5, 1), (3, 37, 1), (3, 5, 4), (2, 37, 6), (3, 0, 9), (2, 5, 9)]


@pytest.mark.parametrize("build", [gpt2_small, cerebras_like], ids=["gpt2", "cerebras-like"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_fp32_graph_matches_torch_away_from_fixed_shapes(workdir, build, side):
    model = build()
    steps = steps_for(model, workdir, build.__name__)
    for rows, past, new in CASES:
        ids, mask = batch(rows, past + 12 if past else 12, side, seed=rows + past + new)
        if side == "right":       # right padding as the accuracy action gives it: nothing real after a pad
            want = hf_logits(model, ids, np.ones_like(mask))
        else:
            want = hf_logits(model, ids, mask)
        got = logits_by_calls(steps, ids, mask, past, new)
        real = mask[:, past:] == 1
        assert got.shape == want[:, past:].shape
        assert np.abs(got - want[:, past:])[real].max() <= 1e-4 * (want.max() - want.min()), (rows, past, new)


def test_the_models_checked_differ_where_the_graph_must_follow_them():
    """The Cerebras-like model's activation, scale and head are its own: with gpt2's they give other logits."""
    model = cerebras_like()
    ids, mask = batch(1, 12, "left")
    want = hf_logits(model, ids, mask)
    for change in ({"activation_function": "gelu_new"}, {"scale_attn_weights": True}):
        other = seeded(GPT2Config(**{**model.config.to_dict(), **change}))
        other.load_state_dict(model.state_dict())
        assert np.abs(hf_logits(other, ids, mask) - want).max() > 1e-3, change


@pytest.mark.parametrize("scheme,block", [("int4", 32), ("int8", 32)])
def test_quantized_graph_computes_with_the_weights_it_stores(workdir, scheme, block):
    """MatMulNBits at accuracy level 1 (fp32 activations) against PyTorch holding the same quantized weights
    (an untied head, so quantizing it leaves the embedding as the graph keeps it)."""
    model = cerebras_like()
    q = QuantSettings(scheme, block, accuracy_level=1)
    steps = steps_for(model, workdir, f"{scheme}-b{block}", q)
    assert_computes_with_stored_weights(model, steps, q.bits, block, CASES[2:4])


# --------------------------------------------------------------------------- through run.py's path
def backends_for(workdir, *flags, names=("frameworks", "onnxrt"), variant="gpt2-tiny"):
    cfg = parse_args(["run", "GPT2", *names, "--variant", variant, "--use-cache", "--working-dir", str(workdir.root),
                      *flags])
    loaded = GPT2.load(cfg)
    return loaded, {b.name: b for b in make_backends(GPT2, loaded, cfg, workdir)}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_tokens_equal_hf_generate(workdir, num_beams):
    loaded, backends = backends_for(workdir)
    assert_tokens_equal_hf_generate(loaded, backends, num_beams)


def test_continuous_batching_with_staggered_arrivals(workdir):
    """Rows of different lengths keep their slots through regroups (a newcomer, a reorder, a finished row
    dropped), and a step past the buffers' capacity grows them: each row's tokens equal its generation alone."""
    _, backends = backends_for(workdir, names=("onnxrt",))
    backend = backends["onnxrt"]
    decoder = batch_decoder(backend.steps)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, 500, n).tolist() for n in (60, 3, 17, 9)]
    first = decoder.prefill(prompts[:2])
    assert first.cache.capacity == 64 and first.cache.slots == 60
    cache = first.cache
    tokens = [[int(np.argmax(row))] for row in first.logits]

    cache = greedy_steps(decoder, cache, tokens, 5)
    assert cache.capacity == 128 and cache.slots == 65            # grew past 64 slots at the fifth step
    late = decoder.prefill(prompts[2:3])
    grown = cache.pool
    cache = decoder.regroup([(cache, [1, 0]), (late.cache, [0])])   # reordered, and a newcomer
    assert cache.pool is not grown                                  # rows that trade places go to a fresh pool
    tokens = [tokens[1], tokens[0], [int(np.argmax(late.logits[0]))]]
    assert cache.slots == 65 and cache.mask.sum(axis=1).tolist() == [8, 65, 17]
    cache = greedy_steps(decoder, cache, tokens, 3)
    pool = cache.pool
    pooled = [buffer.numpy() for buffer in pool.buffers]
    before = [b[2, :, :20].copy() for b in pooled]                  # the third row (17 + 3 slots) as it was
    later = decoder.prefill(prompts[3:])
    cache = decoder.regroup([(cache, [0, 2]), (later.cache, [0])])   # row 1 (prompt 0) finished; another comes
    # in the same pool: row 0 stayed, row 2 filled the hole row 1 left, the newcomer came behind them, and
    # the step's buffers are views of the pool's
    assert cache.pool is pool and all(np.array_equal(b[1, :, :20], x) for b, x in zip(pooled, before))
    assert all(np.shares_memory(view.numpy(), b) for view, b in zip(cache.past, pooled))
    done, tokens = tokens[1], [tokens[0], tokens[2], [int(np.argmax(later.logits[0]))]]
    cache = greedy_steps(decoder, cache, tokens, 4)
    settings = GenerationSettings(max_new_tokens=14)
    for prompt, got in zip([prompts[1], prompts[2], prompts[3], prompts[0]], tokens + [done]):
        alone = backend.generate(np.array([prompt]), np.ones((1, len(prompt)), np.int64), settings).tokens[0]
        assert got == alone[:len(got)].tolist()


def test_graph_is_cached_keyed_and_described(workdir):
    _, backends = backends_for(workdir, "--quantize", "int4", names=("onnxrt",))
    path = backends["onnxrt"].steps.session.path
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert path.parent.name.startswith("decoder-inplace-int4-b64-a4-")         # the default block for this graph
    assert manifest["key"]["graph"] == "decoder-inplace-gpt2"
    assert manifest["key"]["quantize"] == {"scheme": "int4", "block_size": 64, "accuracy_level": 4}
    assert manifest["quantized_weights"] == 4 * 2 + 1                          # c_attn, c_proj, c_fc, mlp c_proj; head
    assert manifest["nodes"]["GroupQueryAttention"] == 2 and "MatMul" not in manifest["nodes"]
    assert manifest["nodes"]["FastGelu"] == 2 and manifest["nodes"]["SkipLayerNormalization"] == 4
    mtime = path.stat().st_mtime_ns
    _, again = backends_for(workdir, "--quantize", "int4", names=("onnxrt",))
    assert again["onnxrt"].steps.session.path == path and path.stat().st_mtime_ns == mtime   # reused
    _, fp32 = backends_for(workdir, names=("onnxrt",))
    assert fp32["onnxrt"].steps.session.path.parent.name.startswith("decoder-inplace-fp32-")
    _, given = backends_for(workdir, "--quantize", "int4", "--quant-block-size", "32", names=("onnxrt",))
    assert given["onnxrt"].steps.session.path.parent.name.startswith("decoder-inplace-int4-b32-a4-")


def test_which_graph_onnxrt_runs(workdir):
    """The graph written from the weights serves gpt2 with the cache on the CPU; without the cache, with
    fp16, or for GPT-Neo (its layout names no writer) the traced graph does."""
    kinds = {}
    for flags in ([], ["--fp16"]):
        _, backends = backends_for(workdir, *flags, names=("onnxrt",))
        kinds[" ".join(flags)] = type(backends["onnxrt"].steps).__name__
    _, backends = backends_for(workdir, names=("onnxrt",), variant="gpt-neo-tiny")
    kinds["gpt-neo"] = type(backends["onnxrt"].steps).__name__
    cfg = parse_args(["run", "GPT2", "onnxrt", "--working-dir", str(workdir.root)])
    kinds["no cache"] = type(make_backends(GPT2, GPT2.load(cfg), cfg, workdir)[0].steps).__name__
    assert kinds == {"": "InPlaceCacheDecoder", "--fp16": "DecoderOnlySteps", "gpt-neo": "DecoderOnlySteps",
                     "no cache": "DecoderOnlySteps"}


def test_what_the_writer_refuses():
    ok = GPT2Config(n_head=4, **SMALL)
    assert gpt2_graph.unsupported(ok) is None
    refused = {
        "scale_attn_by_inverse_layer_idx": "attention scaled by the inverse layer index",
        "reorder_and_upcast_attn": "reordered, upcast attention",
    }
    for flag, why in refused.items():
        assert gpt2_graph.unsupported(GPT2Config(n_head=4, **{flag: True}, **SMALL)) == why
    assert gpt2_graph.unsupported(GPT2Config(n_head=4, activation_function="relu", **SMALL)) == "activation relu"
    assert gpt2_graph.unsupported(GPT2Config(n_head=8, **SMALL)) == \
        "head size 8 (GroupQueryAttention takes multiples of 16)"
    assert gpt2_graph.unsupported(GPTNeoConfig()) == "model type gpt_neo"
