"""What the decoders written straight from the weights share (NNDF/export/llama_graph.py, gpt2_graph.py):
the in-place KV-cache contract (NNDF/graphs/inplace_io.py) around GroupQueryAttention, the graph writer
that streams each weight to external data as soon as it is converted, MatMulNBits blocks under
--quantize, the norms, the logits head, and the cached, keyed artifact.

A family's writer is a FromWeights: the reason it refuses a config (then the traced graph serves the
model), its head sizes and its builder (a WeightsBuilder that adds the family's layers). A layout names
its writer (DecoderOnlyLayout.onnxrt_from_weights), and the decoder-only backends ask it alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from NNDF.base.config import QuantSettings
from NNDF.base.hashing import stable_hash
from NNDF.base.progress import progress
from NNDF.export.workdir import DATA_FILE, MODEL_FILE, WorkingDir
from NNDF.graphs.inplace_io import LOGIT_POSITIONS, QUERY_LENGTHS, TOTAL_LENGTHS, inplace_axes

OPSET, MS_OPSET, IR_VERSION = 21, 1, 10


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


class WeightsBuilder:
    """One graph: the model's weights in, nodes out. A family's builder adds its layers in `build`."""

    def __init__(self, model, writer: GraphWriter, quant: QuantSettings | None, eps: float):
        self.config, self.g, self.quant, self.eps = model.config, writer, quant, eps
        self.state = model.state_dict()
        self.quantized = 0

    def build(self, model, positions: int, what: str) -> None:
        raise NotImplementedError

    def layers(self, what: str):
        return progress(range(self.config.num_hidden_layers), what)

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

    def norm(self, x: str, residual: str | None, weight: str, name: str, bias: str | None = None) -> tuple[str, str]:
        """Norm(x + residual) and the sum (the next residual); the first one has no residual. RMSNorm, or
        with a `bias` (beta) LayerNorm, each fused with the residual add."""
        gamma = self.g.weight(f"{name}.weight", self.tensor(weight))
        beta = [] if bias is None else [self.g.weight(f"{name}.bias", self.tensor(bias))]
        simplified = "Simplified" if bias is None else ""
        if residual is None:
            return self.g.node(f"{simplified}LayerNormalization", [x, gamma, *beta], name=name, axis=-1,
                               epsilon=self.eps, stash_type=1)[0], x
        out = self.g.node(f"Skip{simplified}LayerNormalization", [x, residual, gamma, *beta],
                          [f"{name}/out", "", "", f"{name}/sum"], name=name, domain="com.microsoft", epsilon=self.eps)
        return out[0], out[3]

    def lengths(self) -> tuple[str, str]:
        """GroupQueryAttention's per-row seqlens_k (total - 1) and its scalar bound on the totals."""
        g = self.g
        seqlens_k = g.node("Sub", [TOTAL_LENGTHS, g.const("one_i32", [1], np.int32)], name="seqlens_k")[0]
        bound = g.node("ReduceMax", [TOTAL_LENGTHS], name="total_sequence_length", keepdims=0)[0]
        return seqlens_k, bound

    def attention_in_place(self, i: int, qkv: str, seqlens_k: str, bound: str, heads: int, kv_heads: int, scale: float,
                           rotary: tuple[str, str] | None = None, window: int | None = None) -> str:
        """GroupQueryAttention of layer i on packed Q, K and V, its keys and values appended to the layer's
        cache buffers in place (present.* are past_key_values.*); rotary (cos, sin tables) inside it if given,
        a sliding window of `window` tokens if given."""
        cos_sin = list(rotary) if rotary is not None else ["", ""]
        inputs = [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, bound, *cos_sin,
                  "", "", "", "", "", "", "", QUERY_LENGTHS]
        return self.g.node("GroupQueryAttention", inputs, [f"layers.{i}.attn", f"present.{i}.key", f"present.{i}.value"],
                           name=f"layers.{i}.attn", domain="com.microsoft", num_heads=heads, kv_num_heads=kv_heads,
                           do_rotary=int(rotary is not None), rotary_interleaved=0, scale=float(scale),
                           local_window_size=window or -1)[0]

    def logits(self, h: str, lm_head: np.ndarray) -> None:
        """The `logits` output: the rows' kept positions of the final hidden states, onto the vocabulary."""
        g = self.g
        index = g.node("Unsqueeze", [LOGIT_POSITIONS, g.const("last_axis", [-1])], name="logit_positions_3d")[0]
        h = g.node("GatherND", [h, index], name="keep_positions", batch_dims=1)[0]
        self.linear(h, lm_head, "lm_head", out="logits")


@dataclass(frozen=True)
class FromWeights:
    """A family's decoder written from the weights: `unsupported(config)` says why it cannot write a
    model (None when it can), `head_sizes(config)` gives (heads, kv heads, head_dim), `builder` makes
    the nodes; `graph_key` and `version` key its cached artifacts (bump the version when the builder
    changes what a graph contains)."""

    name: str
    unsupported: Callable[[object], str | None]
    head_sizes: Callable[[object], tuple[int, int, int]]
    builder: type
    graph_key: str
    version: int

    def write(self, model, out_dir: Path, quant: QuantSettings | None, positions: int) -> dict:
        """out_dir/model.onnx and model.onnx.data for `model`'s decoder; the manifest's description."""
        config = model.config
        why = self.unsupported(config)
        if why is not None:
            raise ValueError(f"{self.name} cannot write this model: {why}")
        _, kv_heads, head_dim = self.head_sizes(config)
        inputs, outputs = inplace_axes(config.num_hidden_layers)
        precision = quant.scheme if quant is not None else "fp32"
        writer = GraphWriter(out_dir / DATA_FILE)
        started = time.perf_counter()
        builder = self.builder(model, writer, quant)
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
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)]
        proto = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION,
                                  producer_name=f"hf-trt-toolkit {self.name}")
        onnx.save_model(proto, str(out_dir / MODEL_FILE))
        ops = [n.op_type for n in writer.nodes]
        return {"graph": f"decoder ({precision}, in-place cache)", "inputs": list(inputs), "outputs": list(outputs),
                "nodes": {op: ops.count(op) for op in sorted(set(ops))}, "quantized_weights": builder.quantized,
                "weight_bytes": writer.weight_bytes, "seconds": round(time.perf_counter() - started, 1)}

    def graph(self, workdir: WorkingDir, onnx_dir: Path, model, source_key: dict, quant: QuantSettings | None,
              positions: int) -> Path:
        """The cached graph of `model` for onnxrt, written if absent; keyed by the weights (source_key), the
        positions' table length, the quantization, ONNX Runtime's version and the builder's."""
        import onnxruntime as ort

        quantized = None if quant is None else {"scheme": quant.scheme, "block_size": quant.block_size,
                                                "accuracy_level": quant.accuracy_level}
        key = {"graph": self.graph_key, "source": source_key, "positions": positions, "quantize": quantized,
               "onnxruntime": ort.__version__, "builder": self.version}
        form = "fp32" if quant is None else f"{quant.scheme}-b{quant.block_size}-a{quant.accuracy_level}"
        path = onnx_dir / f"decoder-inplace-{form}-{stable_hash(key)}"
        return workdir.build(path, key, (MODEL_FILE,), lambda tmp: self.write(model, tmp, quant, positions)).file(MODEL_FILE)
