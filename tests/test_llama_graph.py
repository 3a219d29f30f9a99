"""LLAMA's onnxrt decoder written from the weights (NNDF/export/llama_graph.py) and its in-place KV cache
(NNDF/runtime/inplace_cache.py): logits against PyTorch away from any fixed shape (batch 1-3, left-padded
and right-padded rows, past 0/5/37, several new tokens per call), a sliding window that is active, a head
size apart from hidden / heads, biases and llama3 rope; int4 arithmetic against PyTorch with the same
quantized weights; the accuracy gate on a tiny Llama trained on shipped text (and a planted bug it
catches); tokens equal HF generate through --torch-dir; continuous batching growing its buffers; the
cached artifact; which graph onnxrt runs when. qwen2-tiny and mistral-tiny run this graph in every test
of test_decoder_families.py and test_continuous_batching.py too."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from conftest import ROOT, call
from NNDF.actions.accuracy import evaluate, load_texts
from NNDF.actions.quant_gate import delta_to_fp32, passes
from NNDF.base.config import GenerationSettings, QuantSettings
from NNDF.cli import parse_args
from NNDF.export import llama_graph
from inplace_graphs import (assert_computes_with_stored_weights, assert_tokens_equal_hf_generate, batch, greedy_steps,
                            hf_logits, logits_by_calls)
from NNDF.kinds.decoder_only.graphs import inplace_spec
from NNDF.kinds.makers import make_backends
from NNDF.models.tokenizers import DATA_DIR, gpt2_style_tokenizer
from NNDF.registry import get_family
from NNDF.runtime.continuous import batch_decoder
from NNDF.runtime.inplace_cache import InPlaceCacheDecoder
from NNDF.runtime.ort_session import OrtSession

LLAMA = get_family("LLAMA")
SAMPLE = ROOT / "NNDF" / "data" / "lambada_sample.jsonl"
SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=128,
             initializer_range=0.2)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


def seeded(model_class, config):
    torch.manual_seed(0)
    return model_class(config).eval()


def llama_head_dim_16():
    """8 heads of 16 (head_dim set apart from hidden / heads, 128 != 64), 4:1 grouped-query attention,
    biases on attention and MLP, llama3 rope scaling, untied embeddings."""
    return seeded(LlamaForCausalLM, LlamaConfig(num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                                attention_bias=True, mlp_bias=True, rope_parameters=LLAMA3_ROPE,
                                                tie_word_embeddings=False, **SMALL))


def mistral_window_8():
    """A sliding window of 8 tokens, active well inside the sequences checked."""
    return seeded(MistralForCausalLM, MistralConfig(num_attention_heads=4, num_key_value_heads=2, sliding_window=8, **SMALL))


def steps_for(model, workdir, name: str, quant: QuantSettings | None = None) -> InPlaceCacheDecoder:
    path = llama_graph.llama_graph(workdir, workdir.artifact_dir("llama-graph-tests", name), model, {"test": name},
                                   quant, model.config.max_position_embeddings)
    return InPlaceCacheDecoder(OrtSession(path, allow_cuda=False), inplace_spec(model.config.num_hidden_layers))


# (rows, past, new tokens per call): past 0 is the prefill, then calls of `new` tokens until the end
CASES = [(1, 0, 1), (1, 5, 1), (3, 37, 1), (3, 5, 4), (2, 37, 6), (3, 0, 9)]


@pytest.mark.parametrize("build", [llama_head_dim_16, mistral_window_8], ids=["llama-head-dim-16", "mistral-window-8"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_fp32_graph_matches_torch_away_from_fixed_shapes(workdir, build, side):
    model = build()
    steps = steps_for(model, workdir, build.__name__)
    for rows, past, new in CASES:
        ids, mask = batch(rows, past + 12 if past else 12, side, seed=rows + past)
        if side == "right":       # right padding as the accuracy action gives it: nothing real after a pad
            want = hf_logits(model, ids, np.ones_like(mask))
        else:
            want = hf_logits(model, ids, mask)
        got = logits_by_calls(steps, ids, mask, past, new)
        real = mask[:, past:] == 1
        assert got.shape == want[:, past:].shape
        assert np.abs(got - want[:, past:])[real].max() <= 1e-4 * max(1.0, np.abs(want).max()), (rows, past, new)


def test_the_window_is_active_where_it_is_checked():
    """Past 8 tokens the windowed model's logits are not the windowless one's, so the test above tests it."""
    model = mistral_window_8()
    windowless = seeded(MistralForCausalLM, MistralConfig(num_attention_heads=4, num_key_value_heads=2,
                                                          sliding_window=None, **SMALL))
    windowless.load_state_dict(model.state_dict())
    ids, mask = batch(1, 20, "left")
    diff = np.abs(hf_logits(model, ids, mask) - hf_logits(windowless, ids, mask)).max(axis=-1)[0]
    assert (diff[:8] < 1e-5).all() and (diff[8:] > 1e-2).all()
    assert llama_graph.sliding_windows(model.config) == [8, 8]


@pytest.mark.parametrize("scheme,block", [("int4", 32), ("int4", 64), ("int8", 32)])
def test_quantized_graph_computes_with_the_weights_it_stores(workdir, scheme, block):
    """MatMulNBits at accuracy level 1 (fp32 activations) against PyTorch holding the same quantized
    weights: the graph's quantized arithmetic, apart from quantization itself, is exact."""
    model = llama_head_dim_16()
    q = QuantSettings(scheme, block, accuracy_level=1)
    steps = steps_for(model, workdir, f"{scheme}-b{block}", q)
    assert_computes_with_stored_weights(model, steps, q.bits, block, CASES[2:4])


def test_quantize_blocks_round_trip():
    """Each block's largest |w| lands on the lowest level exactly, every weight within half a step (and
    K padded to whole blocks); int4 pairs go low nibble first, as MatMulNBits reads them."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((5, 80)) * rng.uniform(0.01, 3, (5, 1))).astype(np.float32)
    for bits in (4, 8):
        packed, scales = llama_graph.quantize_blocks(w, bits, 32)
        assert packed.shape == (5, 3, 32 * bits // 8) and scales.shape == (5, 3)
        back = llama_graph.dequantize_blocks(packed, scales, bits, 80)
        step = np.abs(np.repeat(scales, 32, axis=1)[:, :80])
        assert (np.abs(back - w) <= step / 2 + 1e-6).all()
    row = np.zeros((1, 32), np.float32)
    row[0, :2] = -8, 1                        # scale 1: levels 0 and 9 (zero point 8)
    packed, scales = llama_graph.quantize_blocks(row, 4, 32)
    assert scales[0, 0] == 1 and packed[0, 0, 0] == 0x90 and (packed[0, 0, 1:] == 0x88).all()


# --------------------------------------------------------------------------- through run.py's path
@pytest.fixture(scope="module")
def head_dim_16_dir(tmp_path_factory):
    """A saved HF folder (--torch-dir) of a Llama that the graph takes (llama-tiny's head size 8 it does not)."""
    folder = tmp_path_factory.mktemp("llama-hd16") / "llama-hd16"
    tokenizer = gpt2_style_tokenizer(512)
    model = seeded(LlamaForCausalLM, LlamaConfig(num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                                 rope_parameters=LLAMA3_ROPE, bos_token_id=tokenizer.bos_token_id,
                                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                                 **SMALL))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def backends_for(workdir, folder, *flags, names=("frameworks", "onnxrt")):
    cfg = parse_args(["run", "LLAMA", *names, "--torch-dir", str(folder), "--use-cache", "--working-dir",
                      str(workdir.root), *flags])
    loaded = LLAMA.load(cfg)
    return loaded, {b.name: b for b in make_backends(LLAMA, loaded, cfg, workdir)}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_tokens_equal_hf_generate_through_torch_dir(workdir, head_dim_16_dir, num_beams):
    loaded, backends = backends_for(workdir, head_dim_16_dir)
    assert_tokens_equal_hf_generate(loaded, backends, num_beams)


def test_continuous_batching_grows_buffers_without_moving_rows(workdir, head_dim_16_dir):
    """Rows of different lengths keep their slots through regroups, and a step past the buffers' capacity
    grows them by a bucket: each row's tokens equal its generation alone."""
    loaded, backends = backends_for(workdir, head_dim_16_dir, names=("onnxrt",))
    backend = backends["onnxrt"]
    decoder = batch_decoder(backend.steps)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(3, 500, n).tolist() for n in (60, 3, 17)]
    first = decoder.prefill(prompts[:2])
    assert first.cache.capacity == 64 and first.cache.slots == 60
    cache = first.cache
    tokens = [[int(np.argmax(row))] for row in first.logits]
    cache = greedy_steps(decoder, cache, tokens, 5)
    assert cache.capacity == 128 and cache.slots == 65            # grew past 64 slots at the fifth step
    late = decoder.prefill(prompts[2:])
    cache = decoder.regroup([(cache, [1, 0]), (late.cache, [0])])   # reordered, and a newcomer
    tokens = [tokens[1], tokens[0], [int(np.argmax(late.logits[0]))]]
    assert cache.slots == 65 and cache.mask.sum(axis=1).tolist() == [8, 65, 17]
    cache = greedy_steps(decoder, cache, tokens, 6)
    settings = GenerationSettings(max_new_tokens=12)
    for prompt, got in zip([prompts[1], prompts[0], prompts[2]], tokens):
        alone = backend.generate(np.array([prompt]), np.ones((1, len(prompt)), np.int64), settings).tokens[0]
        assert got == alone[:len(got)].tolist()


def test_graph_is_cached_keyed_and_described(workdir, head_dim_16_dir):
    _, backends = backends_for(workdir, head_dim_16_dir, "--quantize", "int4", names=("onnxrt",))
    path = backends["onnxrt"].steps.session.path
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert path.parent.name.startswith("decoder-inplace-int4-b64-a4-")         # the default block for this graph
    assert manifest["key"]["quantize"] == {"scheme": "int4", "block_size": 64, "accuracy_level": 4}
    assert manifest["quantized_weights"] == 5 * 2 + 1                          # qkv, o, gate, up, down; LM head
    assert manifest["nodes"]["GroupQueryAttention"] == 2 and "MatMul" not in manifest["nodes"]
    mtime = path.stat().st_mtime_ns
    _, again = backends_for(workdir, head_dim_16_dir, "--quantize", "int4", names=("onnxrt",))
    assert again["onnxrt"].steps.session.path == path and path.stat().st_mtime_ns == mtime   # reused
    _, given = backends_for(workdir, head_dim_16_dir, "--quantize", "int4", "--quant-block-size", "32", names=("onnxrt",))
    assert given["onnxrt"].steps.session.path.parent.name.startswith("decoder-inplace-int4-b32-a4-")


def test_which_graph_onnxrt_runs(workdir, head_dim_16_dir, capsys):
    """The graph written from the weights serves LLAMA with the cache on the CPU; without the cache, with
    fp16 or for a head size GroupQueryAttention does not take (llama-tiny's 8) the traced graph does, the
    last with a note saying why."""
    kinds = {}
    for flags in ([], ["--fp16"]):
        _, backends = backends_for(workdir, head_dim_16_dir, *flags, names=("onnxrt",))
        kinds[" ".join(flags)] = type(backends["onnxrt"].steps).__name__
    cfg = parse_args(["run", "LLAMA", "onnxrt", "--working-dir", str(workdir.root)])
    loaded = LLAMA.load(cfg)
    kinds["no cache"] = type(make_backends(LLAMA, loaded, cfg, workdir)[0].steps).__name__
    assert kinds == {"": "InPlaceCacheDecoder", "--fp16": "DecoderOnlySteps", "no cache": "DecoderOnlySteps"}
    assert llama_graph.unsupported(loaded.config) == "head size 8 (GroupQueryAttention takes multiples of 16)"


def test_a_block_larger_than_a_layer_is_one_line(capsys, workdir):
    code, out, err = call(capsys, "run", "LLAMA", "onnxrt", "--variant", "qwen2-tiny", "--use-cache", "--quantize",
                          "int4", "--quant-block-size", "256", "--working-dir", workdir.root)
    assert code == 2 and err.count("error:") == 1 and "larger than the input dimension 64" in err


# --------------------------------------------------------------------------- the accuracy gate
def trained_llama(folder):
    """A tiny Llama (128 wide, head size 32) trained on the shipped tokenizer corpus (never the scored
    LAMBADA sample) for a few seconds, once per machine (the tiny-model cache), saved as a HF folder."""
    from NNDF.models.tiny_training import cached_training

    tokenizer = gpt2_style_tokenizer(512)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    model = seeded(LlamaForCausalLM, config)
    corpus = DATA_DIR / "tokenizer_corpus.txt"
    recipe = {"steps": 200, "lr": 3e-3, "max_length": 64}

    def train():
        lines = [line for line in corpus.read_text().splitlines() if line.strip()]
        enc = tokenizer(lines, return_tensors="pt", padding=True, truncation=True, max_length=recipe["max_length"])
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
        for _ in range(recipe["steps"]):
            loss = model(**enc, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    cached_training("llama-gate-tiny", 0, model, train, (corpus,), recipe)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gate(workdir, tmp_path_factory):
    """(folder, fp32 LAMBADA-sample result, accuracy of a quantized onnxrt backend made with flags)."""
    folder = trained_llama(tmp_path_factory.mktemp("llama-trained") / "llama-gate-tiny")
    texts = load_texts(SAMPLE, 40)
    loaded, backends = backends_for(workdir, folder, names=("frameworks",))

    def accuracy(fresh=workdir, *flags):
        _, made = backends_for(fresh, folder, *flags, names=("onnxrt",))
        assert isinstance(made["onnxrt"].steps, InPlaceCacheDecoder)
        return evaluate(made["onnxrt"], loaded, texts, 5, [1, 10])

    return folder, evaluate(backends["frameworks"], loaded, texts, 5, [1, 10]), accuracy


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_graph_passes_the_gate(gate, workdir, scheme):
    _, fp32, accuracy = gate
    delta = delta_to_fp32(fp32, accuracy(workdir, "--quantize", scheme))
    assert passes(scheme, delta), delta


def test_gate_catches_int4_nibbles_packed_in_the_wrong_order(gate, monkeypatch, tmp_path):
    from NNDF.export import weights_graph
    from NNDF.export.workdir import WorkingDir

    correct = weights_graph.quantize_blocks

    def swapped(weight, bits, block, rows_per_chunk=1024):
        packed, scales = correct(weight, bits, block, rows_per_chunk)
        return (packed >> 4) | (packed << 4) if bits == 4 else packed, scales

    monkeypatch.setattr(weights_graph, "quantize_blocks", swapped)     # the builders' linear layers call it there
    _, fp32, accuracy = gate
    assert not passes("int4", delta_to_fp32(fp32, accuracy(WorkingDir(tmp_path), "--quantize", "int4")))


def test_a_bf16_checkpoint_quantized_from_its_weights_loads_in_bf16(workdir, head_dim_16_dir, tmp_path):
    """--quantize on onnxrt alone, written from the weights: a bf16 checkpoint loads in bf16 (half the bytes
    of widening it), and its int4 graph is byte for byte the one written from the same checkpoint widened to
    fp32 (each weight is widened exactly as it is quantized; the rotary tables are computed in fp32 either way).
    Any other run loads it in fp32."""
    import filecmp

    import torch
    from transformers import AutoModelForCausalLM

    from NNDF.export.llama_graph import llama_graph
    from NNDF.export.workdir import DATA_FILE, WorkingDir

    folder = tmp_path / "llama-hd16-bf16"
    AutoModelForCausalLM.from_pretrained(head_dim_16_dir, dtype=torch.bfloat16).save_pretrained(folder)
    for f in head_dim_16_dir.glob("tokenizer*"):
        (folder / f.name).write_bytes(f.read_bytes())

    def load(*flags):
        cfg = parse_args(["run", "LLAMA", "--torch-dir", str(folder), "--use-cache", "--cpu", "--working-dir",
                          str(workdir.root), *flags])
        return cfg, LLAMA.load(cfg)

    cfg, native = load("onnxrt", "--quantize", "int4")
    assert native.model.dtype == torch.bfloat16
    assert LLAMA.meta_model(cfg)[0].dtype == torch.bfloat16          # the memory check counts bf16 bytes too
    for flags in (("onnxrt",), ("frameworks", "onnxrt", "--quantize", "int4"), ("trt", "--quantize", "int4")):
        assert load(*flags)[1].model.dtype == torch.float32, flags
    widened = load("onnxrt")[1]
    q = cfg.quantize
    paths = []
    for name, loaded in (("native", native), ("widened", widened)):
        work = WorkingDir(tmp_path / name)
        paths.append(llama_graph(work, work.root / "onnx", loaded.model, {"same": "key"}, q, 64))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    data = [p.parent / DATA_FILE for p in paths]
    assert data[0].is_file() and filecmp.cmp(*data, shallow=False)
