"""GPT2 decoders (HF model type gpt2: GPT2 and Cerebras-GPT) as ONNX Runtime graphs written straight from
the weights, in the in-place KV-cache contract LLAMA's graph keeps (NNDF/export/llama_graph.py says why,
NNDF/export/weights_graph.py holds what the two share, NNDF/graphs/inplace_io.py is the contract).

Why not the traced graph for onnxrt: its cache is past -> present, so each decode step copies every row's
whole past, which is what a 16-row step of the OpenAI server's continuous batching spent its time on.
Here GroupQueryAttention (kv heads = heads, no rotary) appends each new key and value to the buffer it
reads the past from. The rest of a GPT2 block as HF computes it:
- a token's learned position embedding is wpe's row at its position, which the contract makes its slot:
  total_lengths - query_lengths + its index among the row's new tokens (a pad past a row's real tokens is
  clamped to the table, computed like a token and never read);
- LayerNorm with a bias, fused with the residual add after the first (SkipLayerNormalization);
- c_attn (a Conv1D: weight [in, out]) gives Q, K and V packed, as GroupQueryAttention takes them;
- the MLP's activation from the config's activation_function: gelu_new / gelu_pytorch_tanh (the tanh
  form) as FastGelu, exact gelu (Cerebras-GPT) as Gelu;
- the LM head is the (tied) lm_head weight, only on the positions whose logits are asked for;
- under --quantize every Conv1D and the LM head a MatMulNBits (blocks as llama_graph's).
Models scaling attention by the layer index or reordering it for fp32 upcasting keep the traced graph
(`unsupported`), as do GPT-Neo, GPT-J and GPT-NeoX (other model types).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from NNDF.base.config import QuantSettings
from NNDF.export.weights_graph import FromWeights, WeightsBuilder
from NNDF.graphs.inplace_io import QUERY_LENGTHS, TOTAL_LENGTHS

BUILDER_VERSION = 1          # bump when this file changes what a graph contains
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")


def head_sizes(config) -> tuple[int, int, int]:
    """(heads, kv heads, head_dim): every head has its own keys and values."""
    return config.n_head, config.n_head, config.n_embd // config.n_head


def unsupported(config) -> str | None:
    """Why this builder cannot write `config`'s model (then the traced graph serves it), or None."""
    if config.model_type != "gpt2":
        return f"model type {config.model_type}"
    if config.activation_function not in (*TANH_GELU, "gelu"):
        return f"activation {config.activation_function}"
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        return "attention scaled by the inverse layer index"
    if getattr(config, "reorder_and_upcast_attn", False):
        return "reordered, upcast attention"
    if config.n_embd % config.n_head:
        return f"width {config.n_embd} over {config.n_head} heads"
    if head_sizes(config)[2] % 16:
        return f"head size {head_sizes(config)[2]} (GroupQueryAttention takes multiples of 16)"
    return None


class _Builder(WeightsBuilder):
    """One GPT2 graph: the model's weights in, nodes out (see the module docstring)."""

    def __init__(self, model, writer, quant: QuantSettings | None):
        super().__init__(model, writer, quant, model.config.layer_norm_epsilon)

    def conv1d(self, x: str, prefix: str, name: str) -> str:
        """A HF Conv1D (x @ weight + bias, weight [in, out]) as a linear layer."""
        return self.linear(x, self.tensor(prefix + ".weight").T, name, self.tensor(prefix + ".bias"))

    def positions(self) -> str:
        """Each new token's position, [batch, seq] int64: the row's past length plus its index, clamped to
        the position table (only pads past a row's real tokens reach the clamp)."""
        g = self.g
        past = g.node("Sub", [TOTAL_LENGTHS, QUERY_LENGTHS], name="past_lengths")[0]
        past = g.node("Cast", [past], name="past_lengths_i64", to=TensorProto.INT64)[0]
        past = g.node("Unsqueeze", [past, g.const("last_axis", [-1])], name="past_lengths_2d")[0]
        shape = g.node("Shape", ["input_ids"], name="ids_shape", start=1, end=2)[0]
        seq = g.node("Squeeze", [shape], name="seq_length")[0]
        index = g.node("Range", [g.const("zero_i64", 0), seq, g.const("one_i64", 1)], name="new_index")[0]
        positions = g.node("Add", [past, index], name="positions")[0]
        last = g.const("last_position", self.config.n_positions - 1)
        return g.node("Min", [positions, last], name="positions_in_table")[0]

    def attention(self, i: int, h: str, seqlens_k: str, bound: str) -> str:
        p = f"transformer.h.{i}.attn."
        heads, kv_heads, head_dim = head_sizes(self.config)
        qkv = self.conv1d(h, p + "c_attn", f"layers.{i}.c_attn")
        scale = head_dim ** -0.5 if getattr(self.config, "scale_attn_weights", True) else 1.0
        attn = self.attention_in_place(i, qkv, seqlens_k, bound, heads, kv_heads, scale)
        return self.conv1d(attn, p + "c_proj", f"layers.{i}.c_proj")

    def mlp(self, i: int, h: str) -> str:
        p = f"transformer.h.{i}.mlp."
        up = self.conv1d(h, p + "c_fc", f"layers.{i}.c_fc")
        if self.config.activation_function in TANH_GELU:
            act = self.g.node("FastGelu", [up], name=f"layers.{i}.gelu", domain="com.microsoft")[0]
        else:
            act = self.g.node("Gelu", [up], name=f"layers.{i}.gelu", approximate="none")[0]
        return self.conv1d(act, p + "c_proj", f"layers.{i}.mlp_c_proj")

    def build(self, model, positions: int, what: str) -> None:
        g = self.g
        seqlens_k, bound = self.lengths()
        embedding = self.tensor("transformer.wte.weight")
        tokens = g.node("Gather", [g.weight("wte.weight", embedding), "input_ids"], name="wte")[0]
        lm_head = embedding if "lm_head.weight" not in self.state else None
        del embedding
        table = g.weight("wpe.weight", self.tensor("transformer.wpe.weight"))
        places = g.node("Gather", [table, self.positions()], name="wpe")[0]
        x = g.node("Add", [tokens, places], name="embeddings")[0]
        residual, pending = None, x
        for i in self.layers(what):
            p = f"transformer.h.{i}."
            h, residual = self.norm(pending, residual, p + "ln_1.weight", f"layers.{i}.ln_1", p + "ln_1.bias")
            attn = self.attention(i, h, seqlens_k, bound)
            h, residual = self.norm(attn, residual, p + "ln_2.weight", f"layers.{i}.ln_2", p + "ln_2.bias")
            pending = self.mlp(i, h)
        h, _ = self.norm(pending, residual, "transformer.ln_f.weight", "ln_f", "transformer.ln_f.bias")
        self.logits(h, lm_head if lm_head is not None else self.tensor("lm_head.weight"))


WRITER = FromWeights("gpt2_graph", unsupported, head_sizes, _Builder, "decoder-inplace-gpt2", BUILDER_VERSION)
