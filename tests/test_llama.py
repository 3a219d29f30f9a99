"""The LLAMA family's own quirks. Graph parity, tokens against HF generate (onnxrt and the trt
stand-in) and `run` are checked with every other decoder family in test_decoder_families.py and
test_trt_decoder_families.py; here: that each tiny model has the quirk it stands for, the KV shape
of grouped-query attention, fp16 graphs keeping RMSNorm/rotary/softmax in fp32, the shipped
configs, and accuracy/compare/chat end to end."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoConfig, DynamicCache

import run as run_py
from conftest import ROOT
from NNDF.actions import chat
from NNDF.cli import parse_args
from NNDF.export.onnx_export import DATA_FILE, MODEL_FILE, export_graph, run_torch
from NNDF.registry import get_family
from NNDF.runtime.ort_session import OrtSession
from test_decoder_families import get_tiny
from NNDF.kinds.makers import make_backends

LLAMA = get_family("LLAMA")


def test_llama_tiny_has_grouped_query_attention_untied_embeddings_and_llama3_rope(workdir):
    model = get_tiny("llama", workdir).loaded.model
    config = model.config
    assert config.num_attention_heads == 4 * config.num_key_value_heads  # 4:1
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert config.rope_parameters["rope_type"] == "llama3"
    scaled = model.model.rotary_emb.inv_freq
    plain = 1.0 / config.rope_parameters["rope_theta"] ** (torch.arange(0, config.head_dim, 2).float() / config.head_dim)
    assert not torch.allclose(scaled, plain)  # the llama3 scaling changed the low frequencies


def test_qwen2_tiny_has_nonzero_qkv_biases_and_tied_embeddings(workdir):
    model = get_tiny("qwen2", workdir).loaded.model
    attn = model.model.layers[0].self_attn
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert proj.bias is not None and proj.bias.abs().max() > 0.1
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_mistral_tiny_sliding_window_is_wider_than_its_positions(workdir):
    """transformers gives Mistral sliding-window cache layers; the tiny model's window (256) exceeds
    its 128 positions, so it never takes effect, and a run is never allowed past a window."""
    loaded = get_tiny("mistral", workdir).loaded
    config = loaded.config
    assert all(layer.is_sliding for layer in DynamicCache(config=config).layers)
    assert config.sliding_window > config.max_position_embeddings == loaded.max_positions == 128


def test_kv_shape_comes_from_the_config(workdir):
    """The cache inputs carry num_key_value_heads heads of head_dim, with no per-family hook."""
    tiny = get_tiny("llama", workdir)
    spec, path = tiny.graph(use_cache=True)
    config = tiny.loaded.config
    session = OrtSession(path)
    assert session.input_shape("past_key_values.0.key")[1:4:2] == [config.num_key_value_heads, config.head_dim]
    assert tuple(spec.make_inputs({"batch": 3, "seq": 1, "past_len": 5})["past_key_values.1.value"].shape) == (3, 2, 5, 8)


def test_fp16_graph_keeps_norm_variance_rotary_and_softmax_in_fp32(workdir, tmp_path):
    tiny = get_tiny("llama", workdir)
    spec, _ = tiny.graph(use_cache=True)
    export_graph(tiny.loaded.model, spec, tmp_path, fp16=True)
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / MODEL_FILE)))
    types = {v.name: v.type.tensor_type.elem_type for v in proto.graph.value_info}
    nodes = {n.name: n for n in proto.graph.node}

    def out_type(name):
        return types.get(nodes[name].output[0])

    fp32, fp16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    norms = [n for n in nodes if n.endswith("layernorm/ReduceMean") or n.endswith("/norm/ReduceMean")]
    assert len(norms) == 2 * 2 + 1  # two per layer and the final norm
    assert all(out_type(n) == fp32 for n in norms)
    assert all(out_type(n) == fp32 for n in nodes if "/rotary_emb/" in n and nodes[n].op_type in ("Cos", "Sin"))
    softmax = [n for n in nodes if nodes[n].op_type == "Softmax"]
    assert softmax and all(out_type(n) == fp32 for n in softmax)
    assert out_type("/model/model/layers.0/self_attn/q_proj/MatMul") == fp16  # the rest is half precision
    # and the fp16 graph still computes the model: logits near fp32 PyTorch at a shape not traced
    feed = spec.make_inputs({"batch": 3, "seq": 2, "past_len": 37})
    got = OrtSession(tmp_path / MODEL_FILE).infer({k: v.numpy().astype(np.float16) if v.is_floating_point() else v.numpy()
                                                  for k, v in feed.items()})
    want = run_torch(spec.make_module(tiny.loaded.model).eval(), spec, feed)["logits"]
    assert np.abs(got["logits"].astype(np.float32) - want).max() <= 2e-2 * max(1.0, np.abs(want).max())
    assert (tmp_path / DATA_FILE).is_file()


PUBLISHED = {  # variant -> (architecture, parameters as published, positions a run may use)
    "Llama-2-7b-hf": ("LlamaForCausalLM", 6.74e9, 4096),
    "Llama-3.2-1B": ("LlamaForCausalLM", 1.24e9, 131072),
    "TinyLlama-1.1B-Chat-v1.0": ("LlamaForCausalLM", 1.10e9, 2048),
    "SmolLM2-135M": ("LlamaForCausalLM", 134.5e6, 8192),
    "SmolLM2-360M": ("LlamaForCausalLM", 361.8e6, 8192),
    "Mistral-7B-v0.1": ("MistralForCausalLM", 7.24e9, 4096),   # its 4096-token sliding window, not 32768
    "Qwen2-0.5B": ("Qwen2ForCausalLM", 494e6, 131072),
    "Qwen2.5-1.5B": ("Qwen2ForCausalLM", 1.54e9, 131072),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_shipped_config_is_the_published_architecture(name):
    variant = LLAMA.variant(name)
    config = AutoConfig.from_pretrained(str(LLAMA.config_dir() / variant.config_file))
    assert LLAMA.arch_of(config) == variant.arch == config.model_type
    with torch.device("meta"):  # shapes only: a 7B model costs no memory
        model = LLAMA.model_class.from_config(config)
    arch, params, positions = PUBLISHED[name]
    assert type(model).__name__ == arch == config.architectures[0]
    assert abs(sum(p.numel() for p in model.parameters()) / params - 1) < 0.01
    assert LLAMA.max_positions(config) == positions


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)


def test_accuracy_is_the_same_on_onnxrt(capsys, wd, tmp_path):
    out_file = tmp_path / "acc.json"
    code = run_py.main(["accuracy", "LLAMA", "frameworks", "onnxrt", "--variant", "qwen2-tiny", "--working-dir", wd,
                        "--use-cache", "--dataset-path", str(ROOT / "NNDF" / "data" / "lambada_sample.jsonl"),
                        "--num-samples", "4", "--save-output-fpath", str(out_file)])
    assert code == 0, capsys.readouterr().err
    fw, ort = (json.loads(out_file.read_text())["results"][b] for b in ("frameworks", "onnxrt"))
    assert fw["top_n"] == ort["top_n"]
    assert abs(fw["token_perplexity"] / ort["token_perplexity"] - 1) < 1e-3


def test_compare_and_chat_agree(capsys, wd, workdir):
    code = run_py.main(["compare", "LLAMA", "frameworks", "onnxrt", "--variant", "mistral-tiny", "--working-dir", wd,
                        "--use-cache", "--num-beams", "2", "--iterations", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "accuracy" in out and "DIFFERS" not in out
    tiny = get_tiny("llama", workdir)
    cfg = parse_args(["chat", "LLAMA", "--compare", "frameworks", "onnxrt", "--variant", "llama-tiny",
                      "--working-dir", wd, "--use-cache", "--output-seq-len", "6"])
    backends = make_backends(LLAMA, tiny.loaded, cfg, workdir)
    turn, = chat.converse(cfg, tiny.loaded, backends, stdin=io.StringIO("The lighthouse\nexit\n"))["turns"]
    assert turn["outputs"]["frameworks"]["output"] == turn["outputs"]["onnxrt"]["output"]


def test_bfloat16_checkpoints_and_configs_load_in_fp32(tmp_path, monkeypatch):
    """Llama-style checkpoints name bfloat16, which transformers 5 would honour; export traces fp32."""
    from NNDF.models.family import Variant
    from LLAMA.LLAMAModelConfig import build_tiny_qwen2

    model, tokenizer = build_tiny_qwen2(0)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = LLAMA.load(parse_args(["run", "LLAMA", "--torch-dir", str(tmp_path / "ckpt"),
                                    "--working-dir", str(tmp_path / "w")]))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    monkeypatch.setattr(type(LLAMA), "config_dir", lambda self: tmp_path / "ckpt")
    random = LLAMA._load_random(Variant("small", "x/small", "config.json"), seed=0)
    assert {p.dtype for p in random.model.parameters()} == {torch.float32}


def test_checkpoints_of_another_family_are_refused_by_model_type(capsys, workdir, tmp_path):
    """A GPT2 folder run as LLAMA, and a Llama folder run as GPT2: one line naming the family that fits."""
    for kind, family, other in (("gpt_neo", "LLAMA", "GPT2"), ("llama", "GPT2", "LLAMA")):
        loaded = get_tiny(kind, workdir).loaded
        saved = tmp_path / kind
        loaded.model.save_pretrained(str(saved))
        loaded.tokenizer.save_pretrained(str(saved))
        code = run_py.main(["run", family, "frameworks", "--torch-dir", str(saved), "--working-dir", str(workdir.root)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert f"not one of the {family} family's types" in errors[0] and f"run it as `{other}`" in errors[0], errors[0]
