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

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from NNDF.base.config import QuantSettings
from NNDF.base.hashing import stable_hash
from NNDF.base.progress import progress
from NNDF.export.onnx_rotary import rotary_tables
from NNDF.export.workdir import DATA_FILE, MODEL_FILE, WorkingDir
from NNDF.graphs.inplace_io import LOGIT_POSITIONS, QUERY_LENGTHS, TOTAL_LENGTHS, inplace_axes

BUILDER_VERSION = 1          # bump when this file changes what a graph contains
OPSET, MS_OPSET, IR_VERSION = 21, 1, 10
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


# --------------------------------------------------------------------------- MatMulNBits weights
def quantize_blocks(weight: np.ndarray, bits: int, block: int, rows_per_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric blocks along K of a [N, K] weight, as MatMulNBits stores them: bytes [N, K/block,
    block * bits / 8] (4 bits: two values a byte, the first in the low nibble) holding value + 2^(bits-1)
    (its default zero point), and fp32 scales [N, K/block]. Each block's scale is its largest-magnitude
    weight / -2^(bits-1), so that weight lands exactly on the lowest level and all levels are used, as
    ONNX Runtime's own quantizer does. K is padded with zeros to whole blocks; rows go in chunks so
    temporaries stay small."""
    n, k = weight.shape
    blocks, low = -(-k // block), 2 ** (bits - 1)
    packed = np.empty((n, blocks, block * bits // 8), np.uint8)
    scales = np.empty((n, blocks), np.float32)
    for r in range(0, n, rows_per_chunk):
        w = weight[r:r + rows_per_chunk].astype(np.float32)
        if k % block:
            w = np.pad(w, ((0, 0), (0, blocks * block - k)))
        w = w.reshape(-1, blocks, block)
        largest = np.take_along_axis(w, np.abs(w).argmax(-1)[..., None], -1)[..., 0]
        scale = largest / -low
        inverse = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale != 0)
        q = np.clip(np.floor(w * inverse[..., None] + low + 0.5), 0, 2 * low - 1).astype(np.uint8)
        packed[r:r + rows_per_chunk] = q[..., 0::2] | (q[..., 1::2] << 4) if bits == 4 else q
        scales[r:r + rows_per_chunk] = scale
    return packed, scales


def dequantize_blocks(packed: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The [N, K] fp32 weight that quantize_blocks' output stands for (tests and accuracy checks)."""
    q = np.stack([packed & 0x0F, packed >> 4], -1).reshape(*packed.shape[:2], -1) if bits == 4 else packed
    w = (q.astype(np.float32) - 2 ** (bits - 1)) * scales[..., None]
    return w.reshape(packed.shape[0], -1)[:, :k]


# --------------------------------------------------------------------------- graph writing
class GraphWriter:
    """Nodes and initializers; an initializer's bytes go straight to the external data file (64-byte
    aligned, so ONNX Runtime may map them in place), so the graph in memory holds only names and shapes."""

    INLINE_BYTES = 256            # smaller constants stay in the graph

    def __init__(self, data_path: Path):
        self.nodes, self.inits = [], []
        self._data, self._offset = open(data_path, "wb"), 0
        self._consts: set[str] = set()
        self.weight_bytes = 0

    def close(self) -> None:
        self._data.close()

    def weight(self, name: str, array: np.ndarray) -> str:
        array = np.ascontiguousarray(array)
        if array.nbytes < self.INLINE_BYTES:
            self.inits.append(onnx.numpy_helper.from_array(array, name))
            return name
        pad = -self._offset % 64
        self._data.write(b"\0" * pad)
        self._offset += pad
        array.tofile(self._data)
        tensor = TensorProto(name=name, dims=list(array.shape), data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", self._offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        self.inits.append(tensor)
        self._offset += array.nbytes
        self.weight_bytes += array.nbytes
        return name

    def const(self, name: str, value, dtype=np.int64) -> str:
        """A small named constant, made once however often it is asked for."""
        if name not in self._consts:
            self._consts.add(name)
            self.inits.append(onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, name: str = "", domain: str = "",
             **attrs) -> list[str]:
        name = name or f"{op}_{len(self.nodes)}"
        outs = [f"{name}/out{i}" for i in range(outputs)] if isinstance(outputs, int) else outputs
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs


class _Builder:
    """One graph: the model's weights in, nodes out (see the module docstring)."""

    def __init__(self, model, writer: GraphWriter, quant: QuantSettings | None):
        self.config, self.g, self.quant = model.config, writer, quant
        self.state = model.state_dict()
        self.eps = self.config.rms_norm_eps
        self.quantized = 0

    def tensor(self, name: str) -> np.ndarray | None:
        t = self.state.get(name)
        return None if t is None else t.detach().float().numpy()

    def linear(self, x: str, weight: np.ndarray, name: str, bias: np.ndarray | None = None, out: str | None = None) -> str:
        """x @ weight.T (+ bias) for a HF [N, K] weight: MatMulNBits under --quantize, else MatMul."""
        n, k = weight.shape
        outputs = [out] if out else 1
        if self.quant is not None:
            q = self.quant
            packed, scales = quantize_blocks(weight, q.bits, q.block_size)
            inputs = [x, self.g.weight(f"{name}.qweight", packed), self.g.weight(f"{name}.scales", scales.reshape(-1))]
            if bias is not None:
                inputs += ["", "", self.g.weight(f"{name}.bias", bias)]
            self.quantized += 1
            return self.g.node("MatMulNBits", inputs, outputs, name=name, domain="com.microsoft", K=k, N=n,
                               bits=q.bits, block_size=q.block_size, accuracy_level=q.accuracy_level)[0]
        y = self.g.node("MatMul", [x, self.g.weight(f"{name}.weight_t", weight.T)], 1 if bias is not None else outputs,
                        name=name)[0]
        if bias is not None:
            y = self.g.node("Add", [y, self.g.weight(f"{name}.bias", bias)], outputs, name=f"{name}/bias")[0]
        return y

    def norm(self, x: str, residual: str | None, weight: str, name: str) -> tuple[str, str]:
        """RMSNorm(x + residual) and the sum (the next residual); the first one has no residual."""
        gamma = self.g.weight(f"{name}.weight", self.tensor(weight))
        if residual is None:
            return self.g.node("SimplifiedLayerNormalization", [x, gamma], name=name, axis=-1, epsilon=self.eps,
                               stash_type=1)[0], x
        out = self.g.node("SkipSimplifiedLayerNormalization", [x, residual, gamma], [f"{name}/out", "", "", f"{name}/sum"],
                          name=name, domain="com.microsoft", epsilon=self.eps)
        return out[0], out[3]

    def lengths(self) -> tuple[str, str]:
        """GroupQueryAttention's per-row seqlens_k (total - 1) and its scalar bound on the totals."""
        g = self.g
        seqlens_k = g.node("Sub", [TOTAL_LENGTHS, g.const("one_i32", [1], np.int32)], name="seqlens_k")[0]
        bound = g.node("ReduceMax", [TOTAL_LENGTHS], name="total_sequence_length", keepdims=0)[0]
        return seqlens_k, bound

    def attention(self, i: int, h: str, seqlens_k: str, bound: str, rotary: tuple[str, str], window: int | None) -> str:
        p = f"model.layers.{i}.self_attn."
        heads, kv_heads, head_dim = head_sizes(self.config)
        weights = [self.tensor(f"{p}{n}_proj.weight") for n in "qkv"]
        biases = [self.tensor(f"{p}{n}_proj.bias") for n in "qkv"]
        qkv = self.linear(h, np.concatenate(weights), f"layers.{i}.qkv_proj",
                          np.concatenate(biases) if biases[0] is not None else None)
        del weights
        inputs = [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, bound, *rotary,
                  "", "", "", "", "", "", "", QUERY_LENGTHS]
        # a window of W tokens, the query's own included, in HF and in local_window_size alike (a test holds
        # the graph to HF past the window)
        attn = self.g.node("GroupQueryAttention", inputs, [f"layers.{i}.attn", f"present.{i}.key", f"present.{i}.value"],
                           name=f"layers.{i}.attn", domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads,
                           do_rotary=1, rotary_interleaved=0, scale=float(head_dim ** -0.5),
                           local_window_size=window or -1)[0]
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
        for i in progress(range(config.num_hidden_layers), what):
            p = f"model.layers.{i}."
            h, residual = self.norm(pending, residual, p + "input_layernorm.weight", f"layers.{i}.input_norm")
            attn = self.attention(i, h, seqlens_k, bound, rotary, windows[i])
            h, residual = self.norm(attn, residual, p + "post_attention_layernorm.weight", f"layers.{i}.post_attn_norm")
            pending = self.mlp(i, h)
        h, _ = self.norm(pending, residual, "model.norm.weight", "final_norm")
        index = g.node("Unsqueeze", [LOGIT_POSITIONS, g.const("last_axis", [-1])], name="logit_positions_3d")[0]
        h = g.node("GatherND", [h, index], name="keep_positions", batch_dims=1)[0]
        self.linear(h, lm_head if lm_head is not None else self.tensor("lm_head.weight"), "lm_head", out="logits")


def write_graph(model, out_dir: Path, quant: QuantSettings | None, positions: int) -> dict:
    """out_dir/model.onnx and model.onnx.data for `model`'s decoder; the manifest's description."""
    config = model.config
    why = unsupported(config)
    if why is not None:
        raise ValueError(f"llama_graph cannot write this model: {why}")
    _, kv_heads, head_dim = head_sizes(config)
    inputs, outputs = inplace_axes(config.num_hidden_layers)
    precision = quant.scheme if quant is not None else "fp32"
    writer = GraphWriter(out_dir / DATA_FILE)
    started = time.perf_counter()
    builder = _Builder(model, writer, quant)
    try:
        builder.build(model, positions, f"writing the {precision} decoder from the weights")
    finally:
        writer.close()
    f32, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    cache = ["batch", kv_heads, "capacity", head_dim]
    types = {"input_ids": (i64, ["batch", "seq"]), QUERY_LENGTHS: (i32, ["batch"]), TOTAL_LENGTHS: (i32, ["batch"]),
             LOGIT_POSITIONS: (i64, ["batch", "kept"]), "logits": (f32, ["batch", "kept", config.vocab_size])}
    io = lambda names: [helper.make_tensor_value_info(n, *types.get(n, (f32, cache))) for n in names]
    graph = helper.make_graph(writer.nodes, "decoder", io(inputs), io(outputs), writer.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)],
                              ir_version=IR_VERSION, producer_name="hf-trt-toolkit llama_graph")
    onnx.save_model(proto, str(out_dir / MODEL_FILE))
    ops = [n.op_type for n in writer.nodes]
    return {"graph": f"decoder ({precision}, in-place cache)", "inputs": list(inputs), "outputs": list(outputs),
            "nodes": {op: ops.count(op) for op in sorted(set(ops))}, "quantized_weights": builder.quantized,
            "weight_bytes": writer.weight_bytes, "seconds": round(time.perf_counter() - started, 1)}


def llama_graph(workdir: WorkingDir, onnx_dir: Path, model, source_key: dict, quant: QuantSettings | None,
                positions: int) -> Path:
    """The cached graph of `model` (a loaded Llama, Mistral or Qwen2 causal LM) for onnxrt, written if absent;
    keyed by the weights (source_key), the rotary table's length, the quantization and ONNX Runtime's version."""
    import onnxruntime as ort

    quantized = None if quant is None else {"scheme": quant.scheme, "block_size": quant.block_size,
                                            "accuracy_level": quant.accuracy_level}
    key = {"graph": "decoder-inplace", "source": source_key, "positions": positions, "quantize": quantized,
           "onnxruntime": ort.__version__, "builder": BUILDER_VERSION}
    form = "fp32" if quant is None else f"{quant.scheme}-b{quant.block_size}-a{quant.accuracy_level}"
    path = onnx_dir / f"decoder-inplace-{form}-{stable_hash(key)}"
    return workdir.build(path, key, (MODEL_FILE,), lambda tmp: write_graph(model, tmp, quant, positions)).file(MODEL_FILE)
