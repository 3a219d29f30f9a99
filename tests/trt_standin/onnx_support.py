"""TensorRT 10's ONNX parser support matrix, enforced on a graph (test-only, used by the stand-in's OnnxParser).

`parser_problems(model)` lists every reason TensorRT's ONNX parser would refuse
the graph, each naming the node and its operator. It checks what the matrix
(`tensorrt10-onnx-operators.tsv` beside this file, the onnx-tensorrt 10.x support
matrix) states:
- the operator is supported (default ONNX domain only: no contrib ops);
- the node's data input (input 0, the tensor the matrix's types describe; for
  Cast also its output) has one of the listed types;
- restrictions: inputs the matrix wants as initializers are initializers (an
  Unsqueeze of a Constant is not one), DequantizeLinear/QuantizeLinear
  zero-points are zero, LayerNormalization uses only its first output, Dropout is
  not training. A node whose operator has a restriction this module cannot check
  is refused as such, so a new operator in an export cannot pass unexamined;
- the opset is at most `max_opset` (20, the matrix's range), except opset 21 when
  the graph needs 21 only for blocked DequantizeLinear (INT4 weight-only QDQ, which
  TensorRT 10 parses): see `opset_problem`;
- the graph is valid ONNX: its types pass ONNX's strict type inference (fp32 scales on
  fp16 QuantizeLinear at opset 17 do not, and ONNX Runtime refuses such a graph);
- TensorRT's rules for quantized tensors (`quantization_problems`, each citing its source):
  positive scales; INT4 only as blocked weight-only DQ of an initializer, blocks of 64 or
  128 along one of the last two axes, whole, an even last dimension, fp16/bf16 scales
  (W4A16); INT8 weights only beside quantized activations (no weight-only INT8 GEMM).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MATRIX_FILE = Path(__file__).with_name("tensorrt10-onnx-operators.tsv")
MAX_OPSET = 20           # the matrix covers opsets 9-20
BLOCKED_DQ_OPSET = 21    # DequantizeLinear's block_size (INT4 weight-only) arrived in opset 21

_TYPE_NAMES = {"FP32": onnx.TensorProto.FLOAT, "FP16": onnx.TensorProto.FLOAT16, "BF16": onnx.TensorProto.BFLOAT16,
               "INT32": onnx.TensorProto.INT32, "INT64": onnx.TensorProto.INT64, "BOOL": onnx.TensorProto.BOOL,
               "UINT8": onnx.TensorProto.UINT8, "INT8": onnx.TensorProto.INT8, "INT4": onnx.TensorProto.INT4,
               "FP8": onnx.TensorProto.FLOAT8E4M3FN}
# The matrix spells one input name wrongly; the schema's name is what nodes are checked against.
_INPUT_ALIASES = {"is_traning": "training_mode"}
_INITIALIZER_RULE = re.compile(r"`(\w+)` must be (?:an initializer|a constant tensor)")
_ZERO_RULE = re.compile(r"`(\w+)` must be (?:zero|0)")


@dataclass(frozen=True)
class Problem:
    """One reason the parser refuses a graph; `node`/`operator` are empty for graph-wide ones (opset)."""

    node: str
    operator: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class OperatorSupport:
    supported: bool
    types: frozenset[int]          # onnx.TensorProto element types
    restrictions: str


@functools.cache
def load_matrix(path: Path = MATRIX_FILE) -> dict[str, OperatorSupport]:
    """operator -> what TensorRT 10's parser accepts for it."""
    matrix = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("operator\t"):
            continue
        op, supported, types, restrictions = (line.split("\t") + ["", "", ""])[:4]
        names = [t.strip() for t in types.split(",") if t.strip()]
        matrix[op] = OperatorSupport(supported == "Y", frozenset(_TYPE_NAMES[t] for t in names), restrictions.strip())
    return matrix


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type)


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name or '(unnamed)'} ({node.op_type})"


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _blocked_dequantize(node: onnx.NodeProto) -> bool:
    return node.op_type == "DequantizeLinear" and any(a.name == "block_size" and a.i > 0 for a in node.attribute)


def opset_problem(model: onnx.ModelProto, max_opset: int = MAX_OPSET) -> str | None:
    """Why the model's opset is refused, or None.

    Above `max_opset` only opset 21 is accepted, and only when the graph needs it for
    DequantizeLinear with a block_size (blocked INT4 weights), the one opset-21 feature
    TensorRT 10 parses; every other node must then use nothing newer than `max_opset`
    offers: no INT4/UINT4 tensors outside Q/DQ, no blocked QuantizeLinear.
    """
    opset = _opset(model)
    if opset <= max_opset:
        return None
    if opset != BLOCKED_DQ_OPSET or not any(_blocked_dequantize(n) for n in model.graph.node):
        return f"opset {opset} is above {max_opset}, the newest TensorRT 10's ONNX parser supports"
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and any(a.name == "block_size" and a.i > 0 for a in node.attribute):
            return f"{_where(node)} uses opset 21's blocked QuantizeLinear; only blocked DequantizeLinear may need 21"
    return None


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the graph names, from ONNX shape inference on the graph alone."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=False)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _input_named(node: onnx.NodeProto, name: str, opset: int) -> str | None:
    """The tensor wired to the schema input `name`, or None (absent, or an attribute at this opset)."""
    schema = onnx.defs.get_schema(node.op_type, opset)
    names = [i.name for i in schema.inputs]
    name = _INPUT_ALIASES.get(name, name)
    if name not in names:
        return None
    index = names.index(name)
    return node.input[index] if index < len(node.input) and node.input[index] else None


def _restriction_problems(node, support: OperatorSupport, opset: int, initializers: dict, consumers: dict) -> list[str]:
    text, where, problems = support.restrictions, _where(node), []
    if not text:
        return problems
    checked = False
    for name in _INITIALIZER_RULE.findall(text):
        checked = True
        tensor = _input_named(node, name, opset)
        if tensor is not None and tensor not in initializers:
            problems.append(f"{where}: `{name}` ({tensor}) must be an initializer, but it is computed in the graph "
                            "(fold constants at export)")
    for name in _ZERO_RULE.findall(text):
        checked = True
        tensor = _input_named(node, name, opset)
        if tensor is None:
            continue
        if tensor not in initializers:
            problems.append(f"{where}: `{name}` ({tensor}) must be a zero initializer, but it is computed")
        elif np.any(numpy_helper.to_array(initializers[tensor]).astype(np.float64) != 0):
            problems.append(f"{where}: `{name}` ({tensor}) must be zero")
    if node.op_type == "Dropout":
        checked = True   # the initializer rule above found training_mode; an initializer must also be False
        tensor = _input_named(node, "training_mode", opset)
        if tensor in initializers and bool(numpy_helper.to_array(initializers[tensor])):
            problems.append(f"{where}: training_mode must be False")
    if node.op_type == "LayerNormalization":
        checked = True
        used = [o for o in node.output[1:] if o and consumers.get(o)]
        if used:
            problems.append(f"{where}: only its first output is supported, but {used} are used")
    if node.op_type == "Constant":
        checked = True
        bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
        if bad:
            problems.append(f"{where}: attribute {bad[0]} is unsupported")
    if not checked:
        problems.append(f"{where}: the matrix restricts this operator ({text}) and the stand-in does not check "
                        "that restriction; teach tests/trt_standin/onnx_support.py to check it")
    return problems


def _validity_problem(model: onnx.ModelProto) -> str | None:
    """Why ONNX's strict type inference refuses the graph, or None. TensorRT's parser reads types
    loosely, but a graph that is not valid ONNX is refused by ONNX Runtime and the other tools the
    working dir's files are handed to, so the stand-in refuses it too."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=False)
    except Exception as e:  # onnx raises InferenceError and others; all mean "not valid"
        return f"the graph is not valid ONNX: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return None


TRT_INT4_BLOCK_SIZES = (64, 128)
_HALF_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def quantization_problems(model: onnx.ModelProto, types: dict[str, int], initializers: dict) -> list[Problem]:
    """TensorRT's rules for DequantizeLinear that the support matrix does not state.

    - Scales are positive: onnx-tensorrt onnxOpImporters.cpp, QuantDequantLinearHelper, "Scale
      coefficients must all be positive".
    - INT4 is weight-only, with per-block scales of 64 or 128 along one of the last two dimensions:
      TensorRT developer guide, Quantization Schemes ("INT4 quantization requires per-block scales.
      The supported block sizes are {64, 128}. The block dimension should be one of the last two
      dimensions. TensorRT only supports INT4 for weight quantization"). So its input is an initializer.
    - Blocks are whole: QuantDequantLinearHelper, "Inferred block size is not an integer".
    - An INT4 tensor's last dimension is even: QuantDequantLinearHelper (10.1), "Quantization to INT4 is
      not supported for tensors with an odd last dimension".
    - INT4 weights meet fp16/bf16 activations (W4A16, TensorRT Model Optimizer's support matrix: "Block-wise
      INT4 Weights, F16 Activations"); a strongly typed DequantizeLinear gives its scale's type, so the
      scale is fp16 or bf16.
    - INT8 quantizes weights and activations together: "TensorRT quantizes activations and weights for
      INT8, FP8, and FP4. Weight-only quantization is supported for INT4" (developer guide 10.11). An INT8
      weight DequantizeLinear feeding a MatMul/Gemm whose other operand is not dequantized is refused.
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    problems = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        where, data = _where(node), node.input[0]
        scale = initializers.get(node.input[1]) if len(node.input) > 1 else None
        if scale is not None and np.any(numpy_helper.to_array(scale).astype(np.float64) <= 0):
            problems.append(Problem(node.name, node.op_type, f"{where}: scale coefficients must all be positive"))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if types.get(data) == onnx.TensorProto.INT4:
            problems += [Problem(node.name, node.op_type, f"{where}: {text}")
                         for text in _int4_problems(data, attrs, initializers, types.get(node.input[1]))]
        elif types.get(data) == onnx.TensorProto.INT8 and data in initializers:
            for reader in readers.get(node.output[0], []):
                if reader.op_type not in ("MatMul", "Gemm"):
                    continue
                other = next((i for i in reader.input[:2] if i != node.output[0]), None)
                if other is None or producer.get(other) is None or producer[other].op_type != "DequantizeLinear":
                    problems.append(Problem(node.name, node.op_type,
                                            f"{where}: INT8 weights feed {_where(reader)}, whose other input is not "
                                            "quantized; TensorRT's INT8 is weights and activations, its weight-only "
                                            "quantization INT4 only"))
    return problems


def _int4_problems(data: str, attrs: dict, initializers: dict, scale_type: int | None) -> list[str]:
    if data not in initializers:
        return [f"INT4 input {data} is computed; TensorRT's INT4 is weight-only (an initializer)"]
    dims = list(initializers[data].dims)
    problems = []
    if not dims or dims[-1] % 2:
        problems.append(f"INT4 weight {data} has the odd last dimension {dims[-1] if dims else 'of a scalar'}")
    block = attrs.get("block_size", 0)
    if block <= 0:
        problems.append(f"INT4 weight {data} is not block-quantized; TensorRT's INT4 needs per-block scales")
    else:
        axis = attrs.get("axis", 1) % max(len(dims), 1)
        if block not in TRT_INT4_BLOCK_SIZES:
            problems.append(f"INT4 block size {block} is not one of TensorRT's {TRT_INT4_BLOCK_SIZES}")
        if axis < len(dims) - 2:
            problems.append(f"INT4 blocks run along axis {axis}, not one of the last two dimensions")
        elif dims[axis] % block:
            problems.append(f"INT4 dimension {dims[axis]} of {data} is not a whole number of {block}-blocks")
    if scale_type not in _HALF_TYPES:
        name = _type_name(scale_type) if scale_type else "unknown"
        problems.append(f"INT4 weight {data} is dequantized to {name}; TensorRT's INT4 weights meet FLOAT16/BFLOAT16 "
                        "activations (W4A16)")
    return problems


def parser_problems(model: onnx.ModelProto | str | Path, max_opset: int = MAX_OPSET,
                    matrix: dict[str, OperatorSupport] | None = None) -> list[Problem]:
    """Every reason TensorRT 10's ONNX parser would refuse `model` (a proto, or a path whose external
    weights are not loaded: only zero-point initializers' values are read, and those are small and inline).

    Each problem names the node and operator. `max_opset` is the newest opset accepted outright;
    opset 21 is also accepted for blocked DequantizeLinear (see `opset_problem`). An empty list means
    the graph passes.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    matrix = matrix if matrix is not None else load_matrix()
    opset = _opset(model)
    problems = [Problem("", "", p) for p in [opset_problem(model, max_opset)] if p]
    types = _value_types(model)
    # The parser takes a Constant node's value as weights, as it takes an initializer.
    initializers = {t.name: t for t in model.graph.initializer}
    initializers.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant"
                         for a in n.attribute if a.name == "value"})
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    for output in model.graph.output:
        consumers.setdefault(output.name, []).append("graph output")
    for node in model.graph.node:
        problems += [Problem(node.name, node.op_type, text) for text in _node_problems(node, matrix, types, opset,
                                                                                    initializers, consumers)]
    invalid = _validity_problem(model)
    if invalid:
        problems.append(Problem("", "", invalid))
    return problems + quantization_problems(model, types, initializers)


def _node_problems(node, matrix, types, opset, initializers, consumers) -> list[str]:
    """What the matrix says against one node: operator, data type, restrictions."""
    where, problems = _where(node), []
    if node.domain not in ("", "ai.onnx"):
        return [f"{where}: operator domain {node.domain!r} is not ONNX's; TensorRT has no such operator"]
    support = matrix.get(node.op_type)
    if support is None or not support.supported:
        return [f"{where}: operator {node.op_type} is not supported by TensorRT 10's ONNX parser"]
    checked_types = [("input", node.input[0])] if node.input and node.input[0] else []
    if node.op_type in ("Cast", "CastLike"):
        checked_types.append(("output", node.output[0]))
    for what, tensor in checked_types:
        elem = types.get(tensor)
        if elem is None:
            problems.append(f"{where}: the type of {what} {tensor} is unknown, so it cannot be checked")
        elif elem not in support.types:
            allowed = ", ".join(sorted(_type_name(t) for t in support.types))
            problems.append(f"{where}: {what} {tensor} is {_type_name(elem)}; TensorRT takes {allowed}")
    problems += _restriction_problems(node, support, opset, initializers, consumers)
    return problems
