"""Weight-only int8 / int4 quantization of exported graphs, cached like any other artifact.

Two graph forms of one export:

    export (fp32/fp16) --matmul_form--> every weight a MatMul initializer
        --ONNX Runtime's MatMulNBitsQuantizer--> onnxrt graph (MatMulNBits, symmetric, per block)
        --blocked_int4 + qdq_graph--> trt graph (fp16 only): INT4 initializer -> DequantizeLinear -> MatMul

The trt form quantizes the weights itself: ONNX Runtime's symmetric quantizer signs each block's
scale so that the block's largest weight lands on -8 (about half its scales are negative), and
TensorRT refuses a scale that is not positive.

Weights are quantized symmetrically (no zero points, which TensorRT requires) in blocks of
`block_size` along the input dimension, with one scale per block and output column. Embedding
tables and norms are not MatMul weights and keep their export precision; the LM head, which
GPT2-style models tie to the embedding table, gets a quantized copy of its own.

The trt form keeps to TensorRT's rules for quantized graphs (see "What TensorRT takes" below):
INT4 weights only, for fp16 graphs, in blocks of 64 or 128; INT8 only with quantized activations
too (the encoders' calibrated QDQ). A combination outside them is refused in one line before any
export (check_trt_quantization).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from NNDF.base.config import TRT_INT4_BLOCK_SIZES, QuantSettings
from NNDF.base.errors import UsageError
from NNDF.base.progress import progress
from NNDF.export.onnx_shapes import drop_dead_nodes
from NNDF.export.onnx_weights import WeightFile, open_graph, read, save_graph, store_inline, transposed
from NNDF.export.workdir import DATA_FILE, MANIFEST, MODEL_FILE, WorkingDir, source_description, source_identity

QDQ_OPSET = 21                 # blocked DequantizeLinear and the INT4 type arrive in opset 21
FP16_QDQ_OPSET = 19            # QuantizeLinear takes, and DequantizeLinear gives, fp16 from opset 19
QUANTIZER_VERSION = 2          # bump when this file changes what a quantized graph contains


def check_block_size(block_size: int) -> None:
    if block_size < 16 or block_size & (block_size - 1):
        raise UsageError(f"--quant-block-size {block_size} is not a power of two >= 16",
                         "use 16, 32, 64, 128, ...")


# --------------------------------------------------------------------------- inspecting graphs
def _initializers(proto: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in proto.graph.initializer}


def quantized_ops(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes that already hold quantized weights (empty for a float graph)."""
    return [n.name or n.op_type for n in proto.graph.node
            if n.op_type in ("MatMulNBits", "DequantizeLinear", "QuantizeLinear", "MatMulInteger", "QLinearMatMul")]


def check_not_quantized(path: Path) -> None:
    """--quantize on a graph that is already quantized would quantize twice: refuse it."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX at all: the IO check that follows names that problem
        return
    found = quantized_ops(proto)
    if found:
        raise UsageError(f"{path} is already quantized ({len(found)} quantized ops, e.g. {found[0]})",
                         "drop --quantize, or pass the float graph it came from")


def weight_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Weight initializer name -> (input dim, output dim) of every MatMul that matmul_form prepared."""
    inits = _initializers(proto)
    return {n.input[1]: tuple(inits[n.input[1]].dims) for n in proto.graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2}


def check_block_fits(shapes: dict[str, tuple[int, ...]], block_size: int, graph: str, whole_blocks: bool = False) -> None:
    """Every weight's input dimension holds a block (ONNX Runtime pads the last one); with
    `whole_blocks` (TensorRT's blocked DequantizeLinear) it must be cut into whole blocks."""
    for name, (k, _) in shapes.items():
        if block_size > k:
            fix = (f"use a block size of at most {k}" if not whole_blocks or k >= TRT_INT4_BLOCK_SIZES[0] else
                   f"TensorRT's INT4 blocks ({' or '.join(map(str, TRT_INT4_BLOCK_SIZES))}) do not fit it: use onnxrt "
                   "alone for this model's int4")
            raise UsageError(f"--quant-block-size {block_size} is larger than the input dimension {k} of "
                             f"{graph} weight {name}", fix)
        if whole_blocks and k % block_size:
            raise UsageError(f"--quant-block-size {block_size} does not divide the input dimension {k} of {graph} "
                             f"weight {name}, and TensorRT's INT4 blocks must be whole",
                             "use --quant-block-size 64" if k % 64 == 0 else "use onnxrt for this model's int4")


# --------------------------------------------------------------------------- what TensorRT takes
# The trt form of a quantized graph keeps to TensorRT's rules, and the stand-in's parser
# (tests/trt_standin/onnx_support.py, quantization_problems) refuses a graph that breaks one:
# - INT4 is weight-only, in blocks of 64 or 128 weights along one of the last two axes: "INT4
#   quantization requires per-block scales. The supported block sizes are {64, 128}. The block
#   dimension should be one of the last two dimensions. TensorRT only supports INT4 for weight
#   quantization" (TensorRT developer guide, Working with Quantized Types > Quantization Schemes).
# - The activations an INT4 weight is multiplied with are fp16/bf16: NVIDIA's Model Optimizer lists
#   TensorRT's INT4 as W4A16 ("Block-wise INT4 Weights, F16 Activations"); the fp32 form was never a
#   documented combination. A strongly typed DequantizeLinear gives its scale's type (onnx-tensorrt
#   onnxOpImporters.cpp, QuantDequantLinearHelper: addDequantize(..., scaleType)), so fp16 scales.
#   Hence trt int4 only for --fp16 graphs; a weight the fp16 export keeps in fp32 (T5's feed-forward
#   output projections) stays float in the trt graph.
# - An INT4 tensor's last dimension is even: "Quantization to INT4 is not supported for tensors with
#   an odd last dimension" (onnx-tensorrt 10.1, QuantDequantLinearHelper; later releases: "4-bit
#   quantization requires an even number of elements"). A weight [K, N] with odd N (GPT2's LM head,
#   N = 50257; BART's, 50265) gets a zero column of scale 1, and a Slice drops the extra output.
# - Blocks are whole: "Inferred block size is not an integer" (same function) when the blocked
#   dimension is not a multiple of the block, which ONNX itself allows.
# - INT8 is weights *and* activations: "TensorRT quantizes activations and weights for INT8, FP8, and
#   FP4. Weight-only quantization is supported for INT4" (developer guide 10.11, Working with Quantized
#   Types). An INT8 weight DequantizeLinear before a MatMul on float activations is no quantized GEMM
#   TensorRT documents: it may be refused, or dequantized and run in float, which loses the point. So
#   generating models' trt int8 (weight-only) is refused; encoders' int8 is calibrated W8A8 QDQ below.
def check_trt_quantization(q: QuantSettings, fp16: bool) -> None:
    """One UsageError line when the trt backend cannot take the weight-only quantization `q`."""
    if q.scheme == "int8":
        raise UsageError("--quantize int8 with trt: TensorRT quantizes INT8 as weights and activations together, "
                         "and its weight-only quantization is INT4 only",
                         "use --quantize int4 --fp16 for trt, or --quantize int8 with onnxrt alone")
    if not fp16:
        raise UsageError("--quantize int4 with trt needs --fp16: TensorRT multiplies INT4 weights with fp16/bf16 "
                         "activations (W4A16)", "add --fp16")
    if q.block_size not in TRT_INT4_BLOCK_SIZES:
        raise UsageError(f"--quant-block-size {q.block_size} with trt: TensorRT's INT4 blocks are "
                         f"{' or '.join(map(str, TRT_INT4_BLOCK_SIZES))} weights",
                         f"use --quant-block-size {TRT_INT4_BLOCK_SIZES[0]} (the default when trt runs) or "
                         f"{TRT_INT4_BLOCK_SIZES[1]}")


# --------------------------------------------------------------------------- MatMul form
def matmul_form(proto: onnx.ModelProto) -> int:
    """Rewrite `proto` in place so every weight multiply is MatMul(activation, initializer [K, N]).

    Both quantizers only see MatMuls with a constant 2-D B. The TorchScript export gives
    nn.Linear as MatMul(x, Transpose(W)) and GPT2's Conv1D as Gemm(x, W, b): fold the
    transpose into a transposed initializer, and split Gemm into MatMul + Add. A weight
    the embedding also reads (a tied LM head) gets a transposed copy, so the table stays
    as exported. A weight left on disk (NNDF/export/onnx_weights.py) is not read: its copy is one that
    will be read transposed. Returns the number of rewritten nodes.
    """
    graph = proto.graph
    inits = _initializers(proto)
    producer = {o: n for n in graph.node for o in n.output}
    new_nodes, new_inits, rewritten = [], {}, 0

    def transposed_copy(name: str) -> str:
        t_name = f"{name}.T"
        if t_name not in new_inits:
            new_inits[t_name] = transposed(inits[name], t_name)
        return t_name

    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in producer:
            t = producer[node.input[1]]
            perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), [1, 0])
            if t.op_type == "Transpose" and t.input[0] in inits and perm == [1, 0] and len(inits[t.input[0]].dims) == 2:
                new_nodes.append(helper.make_node("MatMul", [node.input[0], transposed_copy(t.input[0])], list(node.output),
                                                  name=node.name))
                rewritten += 1
                continue
        if node.op_type == "Gemm" and node.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
                weight = transposed_copy(node.input[1]) if attrs.get("transB", 0) else node.input[1]
                has_bias = len(node.input) > 2 and node.input[2]
                out = node.output[0] + "_matmul" if has_bias else node.output[0]
                new_nodes.append(helper.make_node("MatMul", [node.input[0], weight], [out], name=f"{node.name}_MatMul"))
                if has_bias:
                    new_nodes.append(helper.make_node("Add", [out, node.input[2]], [node.output[0]],
                                                      name=f"{node.name}_Add"))
                rewritten += 1
                continue
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits.values())
    drop_dead_nodes(graph)      # the Transposes no MatMul reads any more, and the weights only they read
    return rewritten


# --------------------------------------------------------------------------- onnxrt: MatMulNBits
def _load_with_weights(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def _save(proto: onnx.ModelProto, out_dir: Path) -> None:
    onnx.save_model(proto, str(out_dir / MODEL_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)


def _artifact_base(source: Path, identity: str) -> str:
    """The name artifacts made from `source` start with: its cached export's, or its file's."""
    return source.parent.name if (source.parent / MANIFEST).is_file() else f"{source.stem}-given-{identity[:10]}"


def _quiet_import(module: str):
    """A module of ONNX Runtime's quantization package, which calls logging.basicConfig(INFO) on
    import and would print every library's INFO lines from then on: the root logger is kept as it was."""
    import importlib
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    imported = importlib.import_module(module)
    root.setLevel(level)
    root.handlers[:] = handlers
    return imported


def nbits_blocks(weight: np.ndarray, q: QuantSettings) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' packed weight [N, K / block, block * bits / 8] and scales [N, K / block] of a weight
    [K, N], symmetric, by ONNX Runtime's own C++ kernel, called as its MatMulNBitsQuantizer calls it
    (the last block padded with zeros)."""
    from onnxruntime.capi import _pybind_state as kernels

    rows, cols = weight.shape
    kpack = 8 // q.bits
    k_blocks = (rows + q.block_size - 1) // q.block_size
    pad = k_blocks * q.block_size - rows
    weight = np.ascontiguousarray(np.pad(weight, ((0, pad), (0, 0))) if pad else weight)
    packed = np.zeros((cols, k_blocks, (q.block_size + kpack - 1) // kpack), dtype=np.uint8)
    zero_points = np.zeros((cols, (k_blocks + kpack - 1) // kpack), dtype=np.uint8)    # unused: symmetric
    scales = np.zeros((cols, k_blocks), dtype=weight.dtype)
    quantize = kernels.quantize_matmul_8bits if q.bits == 8 else kernels.quantize_matmul_4bits
    quantize(packed, weight, scales, zero_points, q.block_size, cols, rows, True)
    return packed, scales


def quantize_with_ort(proto: onnx.ModelProto, q: QuantSettings, graph: str, weights: WeightFile | None = None
                      ) -> onnx.ModelProto:
    """`proto` (in MatMul form) with every MatMul weight as ONNX Runtime's MatMulNBits: the nodes, names
    and bytes its MatMulNBitsQuantizer writes (tests/test_quantize.py compares them), but one weight at
    a time: each is read, quantized and stored (in `weights`, or the graph itself) before the next,
    where ONNX Runtime's quantizer holds every weight and its quantized copy at once. A progress bar
    counts the weights."""
    inits = _initializers(proto)
    shapes = weight_shapes(proto)
    put = weights.put if weights is not None else lambda name, values: numpy_helper.from_array(values, name)
    targets = [n for n in proto.graph.node if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in shapes]
    level = {"accuracy_level": q.accuracy_level} if q.accuracy_level else {}
    replaced, added = {}, []
    for node in progress(targets, f"quantizing {graph} to {q.scheme}"):
        weight = node.input[1]
        packed, scales = nbits_blocks(read(inits[weight]), q)
        added += [put(f"{weight}_Q{q.bits}", packed), put(f"{weight}_scales", scales)]
        k, n = shapes[weight]
        replaced[id(node)] = helper.make_node(
            "MatMulNBits", [node.input[0], added[-2].name, added[-1].name], list(node.output),
            name=f"{node.name}_Q{q.bits}" if node.name else "", domain="com.microsoft",
            K=k, N=n, bits=q.bits, block_size=q.block_size, **level)
    nodes = [replaced.get(id(n), n) for n in proto.graph.node]
    read_by_nodes = {i for n in nodes for i in n.input}
    proto = _rebuilt(proto, nodes, {t.name for t in proto.graph.initializer if t.name not in read_by_nodes}, added)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return proto


def _artifact(source: Path, q: QuantSettings, form: str, onnx_dir: Path) -> tuple[Path, dict]:
    """Where the `form` ("onnxrt" or "trt") of `source` quantized by `q` lives, and its key."""
    import onnxruntime as ort

    identity = source_identity(source)
    key = {"source": identity, "form": form, "scheme": q.scheme, "block_size": q.block_size,
           "accuracy_level": q.accuracy_level, "onnxruntime": ort.__version__, "quantizer": QUANTIZER_VERSION}
    base = _artifact_base(source, identity)
    return onnx_dir / f"{base}-{q.scheme}-b{q.block_size}-a{q.accuracy_level}-{form}", key


def ort_quantized(source: Path, q: QuantSettings, workdir: WorkingDir, onnx_dir: Path) -> Path:
    """The cached MatMulNBits graph of `source` for onnxrt, quantizing it if absent."""
    source = Path(source)
    target, key = _artifact(source, q, "onnxrt", onnx_dir)

    def produce(tmp: Path) -> dict:
        proto = open_graph(source)       # the weights stay on disk, each read when it is quantized
        matmul_form(proto)
        shapes = weight_shapes(proto)
        described = source_description(source)
        check_block_fits(shapes, q.block_size, described["graph"])
        with WeightFile(tmp / DATA_FILE) as weights:
            quantized = quantize_with_ort(proto, q, described["graph"], weights)
            save_graph(quantized, tmp / MODEL_FILE, weights)
        return {**described, "graph": f"{described['graph']} ({q.scheme}, MatMulNBits)",
                "quantized_weights": sum(n.op_type == "MatMulNBits" for n in quantized.graph.node),
                "weights": len(shapes)}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)


# --------------------------------------------------------------------------- trt: QDQ
def blocked_int4(weight: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed INT4 of a weight [K, N] in blocks of `block_size` along K (K a multiple of it), as
    TensorRT's INT4 scheme quantizes (x_q = round(clip(x / s, -8, 7))): one positive scale per block
    and output column, s = the block's largest |x| / 7, in the weight's own type. Returns the values
    [K, N] and the scales [K / block_size, N]."""
    k, n = weight.shape
    w = weight.astype(np.float32).reshape(k // block_size, block_size, n)
    scales = np.maximum((largest_magnitude(w, axis=1) / 7.0).astype(weight.dtype), np.finfo(weight.dtype).tiny)
    return _rounded_in_place(w, scales.astype(np.float32)[:, None, :], -8, 7).reshape(k, n), scales


def largest_magnitude(w: np.ndarray, axis: int) -> np.ndarray:
    """max |w| along axis, without the |w| copy (a weight-sized temporary: 1 GB for a 7B LM head)."""
    return np.maximum(w.max(axis=axis), -w.min(axis=axis))


def _rounded_in_place(w: np.ndarray, scale: np.ndarray, low: int, high: int) -> np.ndarray:
    """clip(round(w / scale), low, high) as int8, computed in w's own buffer (w is a float32 copy
    made for this): one weight-sized float array at a time, where chained operations made three."""
    np.divide(w, scale, out=w)
    np.round(w, out=w)
    np.clip(w, low, high, out=w)
    return w.astype(np.int8)


def int4_tensor(values: np.ndarray, name: str) -> TensorProto:
    """An ONNX INT4 initializer: row-major, two values per byte, the first in the low nibble."""
    flat = values.astype(np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    packed = ((flat[0::2] & 0x0F) | ((flat[1::2] & 0x0F) << 4)).astype(np.uint8)
    return helper.make_tensor(name, TensorProto.INT4, list(values.shape), packed.tobytes(), raw=True)


def per_channel_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per output column, in the weight's own type, every scale positive
    (onnx-tensorrt refuses others: "Scale coefficients must all be positive")."""
    w = weight.astype(np.float32)
    scale = np.maximum((largest_magnitude(w, axis=0) / 127.0).astype(weight.dtype), np.finfo(weight.dtype).tiny)
    return _rounded_in_place(w, scale.astype(np.float32), -127, 127), scale


def _without_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    light = onnx.ModelProto()
    light.ir_version, light.producer_name = proto.ir_version, proto.producer_name
    light.opset_import.extend(proto.opset_import)
    graph = onnx.GraphProto(name=proto.graph.name)
    graph.node.extend(proto.graph.node)
    graph.input.extend(proto.graph.input)
    graph.output.extend(proto.graph.output)
    graph.value_info.extend(proto.graph.value_info)
    light.graph.CopyFrom(graph)
    return light


def _to_opset(proto: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Convert the graph's operators to `version` without handing the converter the weights."""
    from onnx import version_converter

    weights = {t.name: t for t in proto.graph.initializer}
    stubs = []
    for t in weights.values():   # the converter needs each weight's name, type and shape, not its bytes
        stub = TensorProto(name=t.name, dims=t.dims, data_type=t.data_type, data_location=TensorProto.EXTERNAL)
        stub.external_data.add(key="location", value="not-read")
        stubs.append(stub)
    light = _without_initializers(proto)
    light.graph.initializer.extend(stubs)
    converted = version_converter.convert_version(light, version)
    for i, t in enumerate(converted.graph.initializer):
        if t.name in weights:
            converted.graph.initializer[i].CopyFrom(weights[t.name])
    converted.ir_version = max(converted.ir_version, 10)      # INT4 needs IR 10
    return converted


def qdq_graph(float_proto: onnx.ModelProto, q: QuantSettings, graph: str = "graph",
              weights_file: WeightFile | None = None) -> onnx.ModelProto:
    """The TensorRT form of the fp16 `float_proto` (already in MatMul form): each fp16 weight an INT4
    initializer -> blocked DequantizeLinear (positive fp16 scales, no zero point) -> MatMul. Within
    TensorRT's rules (above): a weight the export keeps in fp32 stays float, and an odd output
    dimension gets a zero column that a Slice drops again. Weights are quantized one at a time, each
    stored (in `weights`, or the graph itself) before the next is read."""
    if q.bits != 4:
        raise ValueError("the trt form is INT4 only: check_trt_quantization refuses weight-only int8")
    inits = _initializers(float_proto)
    weights = {w: shape for w, shape in weight_shapes(float_proto).items()
               if inits[w].data_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)}   # W4A16 only
    store = weights_file.store if weights_file is not None else store_inline
    dq_nodes, new_inits, padded = [], [], {}
    for weight in progress(list(weights), f"quantizing {graph} to int4 for TensorRT"):
        values, scales = blocked_int4(read(inits[weight]), q.block_size)
        n = values.shape[1]
        if n % 2:   # TensorRT: an INT4 tensor's last dimension is even; the extra column is zeros
            values = np.pad(values, ((0, 0), (0, 1)))
            scales = np.pad(scales, ((0, 0), (0, 1)), constant_values=1)
            padded[weight] = n
        quantized = store(int4_tensor(values, f"{weight}_int4"))
        scale = store(numpy_helper.from_array(scales, f"{weight}_scale"))
        new_inits += [quantized, scale]
        dq_nodes.append(helper.make_node("DequantizeLinear", [quantized.name, scale.name], [f"{weight}_dq"],
                                         name=f"{weight}_DequantizeLinear", axis=0, block_size=q.block_size))
    for n in sorted(set(padded.values())):
        new_inits += [numpy_helper.from_array(np.array([v], np.int64), f"int4_pad_{what}_{n}")
                      for what, v in (("start", 0), ("end", n), ("axis", -1))]
    proto = _to_opset(float_proto, QDQ_OPSET)
    nodes = list(dq_nodes)
    for node in proto.graph.node:
        nodes.append(node)
        weight = node.input[1] if node.op_type == "MatMul" and len(node.input) > 1 else None
        if weight not in weights:
            continue
        node.input[1] = f"{weight}_dq"
        if weight in padded:       # the MatMul gives N + 1 columns; the graph goes on with the first N
            n, out = padded[weight], node.output[0]
            node.output[0] = f"{out}_padded"
            nodes.append(helper.make_node("Slice", [node.output[0], f"int4_pad_start_{n}", f"int4_pad_end_{n}",
                                                    f"int4_pad_axis_{n}"], [out], name=f"{weight}_unpad"))
    return _rebuilt(proto, nodes, weights, new_inits)


def _rebuilt(proto: onnx.ModelProto, nodes: list, replaced: set | dict, added: list) -> onnx.ModelProto:
    """`proto` with `nodes` as its nodes, and the initializers named in `replaced` swapped for `added`."""
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [t for t in proto.graph.initializer if t.name not in replaced]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept + added)
    return proto


def trt_quantized(source: Path, q: QuantSettings, workdir: WorkingDir, onnx_dir: Path) -> Path:
    """The cached INT4 QDQ graph of the fp16 `source` for TensorRT."""
    source = Path(source)
    target, key = _artifact(source, q, "trt", onnx_dir)

    def produce(tmp: Path) -> dict:
        described = source_description(source)
        proto = open_graph(source)       # the weights stay on disk, each read when it is quantized
        matmul_form(proto)
        check_block_fits(weight_shapes(proto), q.block_size, described["graph"], whole_blocks=True)
        from NNDF.base.progress import status

        with WeightFile(tmp / DATA_FILE) as weights:
            qdq = qdq_graph(proto, q, described["graph"], weights)
            with status(f"writing the TensorRT QDQ form of {described['graph']} ({q.scheme})"):
                save_graph(qdq, tmp / MODEL_FILE, weights)
        return {**described, "graph": f"{described['graph']} ({q.scheme}, QDQ)",
                "quantized_weights": sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node)}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)


def quantized_graph(source: Path, q: QuantSettings | None, form: str, workdir: WorkingDir, onnx_dir: Path) -> Path:
    """`source` as the onnxrt or trt backend runs it under --quantize (unchanged without it)."""
    if q is None:
        return source
    check_not_quantized(source)
    return (ort_quantized if form == "onnxrt" else trt_quantized)(source, q, workdir, onnx_dir)


# --------------------------------------------------------------------------- encoders: int8 with activations
# Encoders run one big pass per batch, so their int8 is activations as well as weights:
# onnxrt uses ONNX Runtime's dynamic quantization (int8 weights, activations quantized per batch
# at run time, QAttention over the fused Attention), trt a static QDQ graph whose activation scales
# come from a calibration pass over shipped data, as TensorRT's explicit quantization wants.
ENCODER_INT8_VERSION = 2
ACTIVATION_QMAX = 127.0


def ort_dynamic_int8(source: Path, workdir: WorkingDir, onnx_dir: Path) -> Path:
    """The cached dynamic-int8 form of `source` (usually ONNX Runtime's fused graph) for onnxrt:
    per-channel signed int8 weights, uint8 activations quantized per batch at run time."""
    import onnxruntime as ort

    source = Path(source)
    identity = source_identity(source)
    key = {"source": identity, "form": "onnxrt-dynamic", "scheme": "int8", "onnxruntime": ort.__version__,
           "version": ENCODER_INT8_VERSION}
    base = _artifact_base(source, identity)
    target = onnx_dir / f"{base}-int8-dynamic"

    def produce(tmp: Path) -> dict:
        from NNDF.base.progress import status

        quantization = _quiet_import("onnxruntime.quantization")
        with status(f"quantizing {source.parent.name} to int8 (ONNX Runtime dynamic quantization)"):
            quantization.quantize_dynamic(
                source, tmp / MODEL_FILE, per_channel=True, weight_type=quantization.QuantType.QInt8,
                use_external_data_format=True,
                extra_options={"MatMulConstBOnly": True,
                               # the fused graph's contrib ops defeat shape inference: its floats are fp32
                               "DefaultTensorType": onnx.TensorProto.FLOAT})
        proto = onnx.load(str(tmp / MODEL_FILE), load_external_data=False)
        ops = [n.op_type for n in proto.graph.node]
        described = source_description(source)
        return {**described, "graph": f"{described['graph']} (int8, dynamic)",
                "quantized_ops": {op: ops.count(op) for op in sorted(set(ops)) if op.startswith(("Q", "Dynamic", "MatMulInteger"))}}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)


def activation_ranges(proto: onnx.ModelProto, names: list[str], feeds: list[dict]) -> tuple[dict[str, float], dict]:
    """The largest |value| each named tensor takes over the calibration feeds, and its numpy dtype, by
    running the float graph in ONNX Runtime with those tensors added as outputs."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    known = {o.name for o in probe.graph.output}
    for name in names:
        if name not in known:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # keep every tensor
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    # the feeds as the graph takes them (an fp16 graph's pixels are fp16)
    wanted = {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in proto.graph.input}
    amax, dtypes = dict.fromkeys(names, 0.0), {}
    for feed in feeds:
        values = session.run(names, {k: np.asarray(v, wanted[k]) for k, v in feed.items() if k in wanted})
        for name, value in zip(names, values):
            amax[name] = max(amax[name], float(np.max(np.abs(value), initial=0.0)))
            dtypes[name] = value.dtype
    return amax, dtypes


def calibrated_qdq(proto: onnx.ModelProto, feeds: list[dict]) -> onnx.ModelProto:
    """`proto` (in MatMul form) with every weight MatMul in int8 QDQ form for TensorRT: the weight
    an int8 initializer with one scale per output channel -> DequantizeLinear, the activation
    QuantizeLinear -> DequantizeLinear with the scale calibrated on `feeds`; all zero-points 0.

    Each scale has the type of the tensor it scales. Opset 17's QuantizeLinear takes only fp32 and its
    DequantizeLinear gives only fp32, so an fp16 graph moves to opset 19, where both take the scale's
    type (fp32 scales on fp16 activations at opset 17 were an invalid graph that ONNX Runtime refused;
    TensorRT, strongly typed, gives a DequantizeLinear its scale's type, onnx-tensorrt
    QuantDequantLinearHelper)."""
    inits = _initializers(proto)
    weights = weight_shapes(proto)
    matmuls = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    activations = list(dict.fromkeys(n.input[0] for n in matmuls))
    amax, dtypes = activation_ranges(proto, activations, feeds)
    if any(d != np.float32 for d in dtypes.values()) or any(inits[w].data_type != TensorProto.FLOAT for w in weights):
        proto = _to_opset(proto, FP16_QDQ_OPSET)
        inits = _initializers(proto)
        matmuls = [n for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    zero = numpy_helper.from_array(np.zeros((), np.int8), "int8_zero_point")
    new_inits, act_pairs, weight_dq = [zero], [], []
    for name in activations:
        scale = numpy_helper.from_array(np.asarray(max(amax[name], 1e-8) / ACTIVATION_QMAX, dtypes.get(name, np.float32)),
                                        f"{name}_act_scale")
        new_inits.append(scale)
        act_pairs.append([helper.make_node("QuantizeLinear", [name, scale.name, zero.name], [f"{name}_q"],
                                           name=f"{name}_QuantizeLinear"),
                          helper.make_node("DequantizeLinear", [f"{name}_q", scale.name, zero.name], [f"{name}_qdq"],
                                           name=f"{name}_act_DequantizeLinear")])
    for weight in weights:
        values, scales = per_channel_int8(numpy_helper.to_array(inits[weight]))
        q = numpy_helper.from_array(values, f"{weight}_int8")
        new_inits += [q, numpy_helper.from_array(scales, f"{weight}_scale")]   # the weight's own type
        weight_dq.append(helper.make_node("DequantizeLinear", [q.name, f"{weight}_scale"], [f"{weight}_dq"],
                                          name=f"{weight}_DequantizeLinear", axis=1))
    # the activation's QDQ pair goes right after the node that makes it (or first, for a graph input)
    made_by = {o: i for i, n in enumerate(proto.graph.node) for o in n.output}
    placed: dict[int, list] = {}
    for pair in act_pairs:
        placed.setdefault(made_by.get(pair[0].input[0], -1), []).extend(pair)
    for node in matmuls:
        node.input[0] = f"{node.input[0]}_qdq"
        node.input[1] = f"{node.input[1]}_dq"
    ordered = weight_dq + placed.get(-1, [])
    for i, node in enumerate(proto.graph.node):
        ordered.append(node)
        ordered += placed.get(i, [])
    return _rebuilt(proto, ordered, weights, new_inits)


def trt_calibrated_int8(source: Path, feeds: list[dict], workdir: WorkingDir, onnx_dir: Path) -> Path:
    """The cached calibrated QDQ graph of `source` for TensorRT, keyed by the source and the
    calibration data."""
    source = Path(source)
    identity = source_identity(source)
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    key = {"source": identity, "form": "trt-calibrated", "scheme": "int8", "calibration": digest.hexdigest()[:16],
           "version": ENCODER_INT8_VERSION}
    base = _artifact_base(source, identity)
    target = onnx_dir / f"{base}-int8-calibrated-trt"

    def produce(tmp: Path) -> dict:
        from NNDF.base.progress import status

        described = source_description(source)
        with status(f"calibrating and writing the TensorRT int8 QDQ form of {described['graph']}"):
            proto = _load_with_weights(source)
            matmul_form(proto)
            qdq = calibrated_qdq(proto, feeds)
            _save(qdq, tmp)
        return {**described, "graph": f"{described['graph']} (int8, calibrated QDQ)",
                "quantized_weights": sum(n.name.endswith("_DequantizeLinear") and n.input[0].endswith("_int8")
                                         for n in qdq.graph.node),
                "calibration_batches": len(feeds)}

    return workdir.build(target, key, (MODEL_FILE,), produce).file(MODEL_FILE)
