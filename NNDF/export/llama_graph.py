"""Llama-style decoders (model types llama, mistral, qwen2) as ONNX Runtime graphs written straight from
the weights, one tensor at a time: no tracing, no fusion pass, no second copy of the model.

Why not the traced graph (NNDF/export/onnx_export.py) for onnxrt: on TinyLlama-1.1B its int4 form
decoded at 31.7 ms a step (52.4 ms at 512 tokens of context) against llama.cpp q4_0's 21.3 (25.3), and
making it peaked at 19.2 GB (quantizing a loaded fp32 graph); fp32 onnxrt was killed at 24 GB in the
fusion pass. What this graph does instead, each measured on that model (README, Quantization):
- GroupQueryAttention (ONNX Runtime contrib op) with the KV cache shared between past and present:
  the new keys and values are appended in place, so the cache is never copied (the traced graph
  concatenates the whole past every step, which is what grew with context), kv heads are not
  repeated, and its rotary embedding is applied inside it. The IO contract and the step model that
  drives it are NNDF/runtime/inplace_cache.py: each row's tokens in slots 0.., so slot = position.
- Under --quantize, every linear layer a MatMulNBits (int4 or int8, symmetric blocks along the input
  dimension, the LM head included; a tied LM head gets a quantized copy of the embedding table).
  A decode step reads every weight once, so bytes decide its time; ONNX Runtime's packed int8-compute
  layout holds an fp32 scale and block sum beside each block's 4-bit data (0.5 + 8/block bytes a
  weight), which is why the block size is the largest lever.
- Q, K and V in one product; RMSNorm fused with the residual add (SkipSimplifiedLayerNormalization);
  the last norm and LM head only on the positions whose logits are asked for.
The embedding table stays fp32 (a Gather reads one row per token).

Memory: the weights are read from the loaded model's state dict (the same tensors for a hub model,
--torch-dir and --random-weights) and each one is written to model.onnx.data as soon as it is
converted, so building holds the model plus one weight's temporaries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from NNDF.base.config import QuantSettings
from NNDF.export.onnx_rotary import rotary_tables
from NNDF.export.weights_graph import FromWeights, WeightsBuilder, dequantize_blocks, quantize_blocks  # noqa: F401
from NNDF.export.workdir import WorkingDir

BUILDER_VERSION = 1          # bump when this file changes what a graph contains
STATIC_ROPE = ("default", "linear", "llama3", "yarn")   # cos/sin depend on the position alone: one table


# --------------------------------------------------------------------------- what it serves
def rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return params.get("rope_type", params.get("type", "default"))


def unsupported(config) -> str | None:
    """Why this builder cannot write `config`'s model (then the traced graph serves it), or None."""
    if config.model_type not in ("llama", "mistral", "qwen2"):
        return f"model type {config.model_type}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    if rope_type(config) not in STATIC_ROPE:
        return f"rope type {rope_type(config)} (its angles depend on the sequence length)"
    if head_sizes(config)[2] % 16:
        return f"head size {head_sizes(config)[2]} (GroupQueryAttention takes multiples of 16)"
    params = getattr(config, "rope_parameters", None) or {}
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        return "rotary embedding on part of each head"
    return None


def sliding_windows(config) -> list[int | None]:
    """Per layer, the tokens a query attends to (itself included) where the layer has a sliding window."""
    from transformers import DynamicCache

    layers = DynamicCache(config=config).layers
    return [config.sliding_window if getattr(layer, "is_sliding", False) else None for layer in layers]


def head_sizes(config) -> tuple[int, int, int]:
    """(heads, kv heads, head_dim) from the config (head_dim may be set apart from hidden / heads)."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return heads, kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


# --------------------------------------------------------------------------- graph writing
class _Builder(WeightsBuilder):
    """One Llama-style graph: the model's weights in, nodes out (see the module docstring)."""

    def __init__(self, model, writer, quant: QuantSettings | None):
        super().__init__(model, writer, quant, model.config.rms_norm_eps)

    def attention(self, i: int, h: str, seqlens_k: str, bound: str, rotary: tuple[str, str], window: int | None) -> str:
        p = f"model.layers.{i}.self_attn."
        heads, kv_heads, head_dim = head_sizes(self.config)
        weights = [self.tensor(f"{p}{n}_proj.weight") for n in "qkv"]
        biases = [self.tensor(f"{p}{n}_proj.bias") for n in "qkv"]
        qkv = self.linear(h, np.concatenate(weights), f"layers.{i}.qkv_proj",
                          np.concatenate(biases) if biases[0] is not None else None)
        del weights
        # a window of W tokens, the query's own included, in HF and in local_window_size alike (a test holds
        # the graph to HF past the window)
        attn = self.attention_in_place(i, qkv, seqlens_k, bound, heads, kv_heads, head_dim ** -0.5, rotary, window)
        return self.linear(attn, self.tensor(f"{p}o_proj.weight"), f"layers.{i}.o_proj", self.tensor(f"{p}o_proj.bias"))

    def mlp(self, i: int, h: str) -> str:
        p = f"model.layers.{i}.mlp."
        gate = self.linear(h, self.tensor(p + "gate_proj.weight"), f"layers.{i}.gate_proj", self.tensor(p + "gate_proj.bias"))
        up = self.linear(h, self.tensor(p + "up_proj.weight"), f"layers.{i}.up_proj", self.tensor(p + "up_proj.bias"))
        sigmoid = self.g.node("Sigmoid", [gate], name=f"layers.{i}.silu_sigmoid")[0]
        silu = self.g.node("Mul", [gate, sigmoid], name=f"layers.{i}.silu")[0]
        act = self.g.node("Mul", [silu, up], name=f"layers.{i}.swiglu")[0]
        return self.linear(act, self.tensor(p + "down_proj.weight"), f"layers.{i}.down_proj", self.tensor(p + "down_proj.bias"))

    def build(self, model, positions: int, what: str) -> None:
        g, config = self.g, self.config
        seqlens_k, bound = self.lengths()
        cos, sin = rotary_tables(model, positions)
        rotary = (g.weight("rotary_cos_cache", cos), g.weight("rotary_sin_cache", sin))
        embedding = self.tensor("model.embed_tokens.weight")
        x = g.node("Gather", [g.weight("embed_tokens.weight", embedding), "input_ids"], name="embed_tokens")[0]
        lm_head = embedding if config.tie_word_embeddings or "lm_head.weight" not in self.state else None
        del embedding
        windows = sliding_windows(config)
        residual, pending = None, x
        for i in self.layers(what):
            p = f"model.layers.{i}."
            h, residual = self.norm(pending, residual, p + "input_layernorm.weight", f"layers.{i}.input_norm")
            attn = self.attention(i, h, seqlens_k, bound, rotary, windows[i])
            h, residual = self.norm(attn, residual, p + "post_attention_layernorm.weight", f"layers.{i}.post_attn_norm")
            pending = self.mlp(i, h)
        h, _ = self.norm(pending, residual, "model.norm.weight", "final_norm")
        self.logits(h, lm_head if lm_head is not None else self.tensor("lm_head.weight"))


WRITER = FromWeights("llama_graph", unsupported, head_sizes, _Builder, "decoder-inplace", BUILDER_VERSION)


def write_graph(model, out_dir: Path, quant: QuantSettings | None, positions: int) -> dict:
    """out_dir/model.onnx and model.onnx.data for `model`'s decoder; the manifest's description."""
    return WRITER.write(model, out_dir, quant, positions)


def llama_graph(workdir: WorkingDir, onnx_dir: Path, model, source_key: dict, quant: QuantSettings | None,
                positions: int) -> Path:
    """The cached graph of `model` (a loaded Llama, Mistral or Qwen2 causal LM) for onnxrt, written if absent;
    keyed by the weights (source_key), the rotary table's length, the quantization and ONNX Runtime's version."""
    return WRITER.graph(workdir, onnx_dir, model, source_key, quant, positions)
