"""Make an exported graph one that TensorRT's ONNX parser accepts as it is.

The TorchScript exporter runs with `do_constant_folding=False` (its folding
needs every weight's value at once), so its graphs compute small constants at
run time: a Slice's axes as the Unsqueeze of a Constant, scales in double
precision. ONNX Runtime folds those when it loads a graph, but TensorRT's parser
reads the graph as written and refuses, for example, a Slice whose axes are not
an initializer. So the graph file in the working dir is cleaned here, and is
then the one a user can hand to trtexec or polygraphy:

- `fold_constants` evaluates every node whose inputs are all known constants
  (Constant nodes and small inline initializers, never the weights: the data
  file is not read, so folding costs no memory however large the model) and
  replaces it by an initializer holding its result; Constant nodes that remain
  needed become initializers too. Polygraphy's fold-constants loader would need
  onnx-graphsurgeon and every weight in memory, ONNX Runtime's offline
  optimisation a session over all the weights; this needs neither.
- `float_integer_cumsum` runs integer CumSums in float32: TensorRT's CumSum takes
  FP32/FP16/BF16 only. It is exact while every partial sum is below 2**24; the
  CumSums these graphs contain sum 0/1 attention masks (BLOOM's ALiBi positions),
  so their sums are bounded by the sequence length.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

FOLD_MAX_BYTES = 1 << 16     # a folded value larger than this stays computed: it would only bloat the file
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
FLOAT_EXACT_INTEGERS = 1 << 24   # float32 represents every integer up to this


def _opset(model: onnx.ModelProto) -> dict[str, int]:
    return {o.domain or "": o.version for o in model.opset_import}


def _inline_value(tensor: onnx.TensorProto) -> np.ndarray | None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None      # a weight in the data file: never read here
    if tensor.data_type != onnx.TensorProto.STRING:   # too large to fold: not decoded (an fp16 export's weights are inline)
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        if int(np.prod(tensor.dims, dtype=np.int64)) * itemsize > FOLD_MAX_BYTES:
            return None
    value = numpy_helper.to_array(tensor)
    return value if value.nbytes <= FOLD_MAX_BYTES else None


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.array(onnx.helper.get_attribute_value(attr),
                            dtype=np.float32 if "float" in attr.name else np.int64)
    return None    # sparse or string constants are left as they are


def _foldable(node: onnx.NodeProto, known: dict) -> bool:
    return (node.domain in ("", "ai.onnx") and node.op_type not in _NEVER_FOLD
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
            and all(not name or name in known for name in node.input))


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold, in place, every node computable from constants alone; returns how many nodes went."""
    graph, opsets = model.graph, _opset(model)
    known: dict[str, np.ndarray] = {}
    for tensor in graph.initializer:
        value = _inline_value(tensor)
        if value is not None:
            known[tensor.name] = value
    graph_outputs = {o.name for o in graph.output}
    kept, removed = [], 0
    for node in graph.node:
        values = None
        if node.op_type == "Constant" and node.output[0] not in graph_outputs:
            value = _constant_value(node)
            values = None if value is None else [value]
        elif _foldable(node, known) and not graph_outputs.intersection(node.output):
            values = ReferenceEvaluator(node, opsets=opsets).run(None, {n: known[n] for n in node.input if n})
            if any(np.asarray(v).nbytes > FOLD_MAX_BYTES for v in values):
                values = None
        if values is None:
            kept.append(node)
            continue
        known.update((name, np.asarray(v)) for name, v in zip(node.output, values) if name)
        removed += 1
    if not removed:
        return 0
    have = {t.name for t in graph.initializer}
    needed = {name for node in kept for name in node.input} | graph_outputs
    for name in sorted(needed & known.keys() - have):
        graph.initializer.append(numpy_helper.from_array(known[name], name))
    del graph.node[:]
    graph.node.extend(kept)
    return removed


def float_integer_cumsum(model: onnx.ModelProto) -> int:
    """Cast the data of every integer CumSum to float32 and its result back; returns how many."""
    graph = model.graph
    types = _element_types(model)
    rewritten, nodes = 0, []
    for node in graph.node:
        elem = types.get(node.input[0]) if node.op_type == "CumSum" else None
        if elem not in (onnx.TensorProto.INT32, onnx.TensorProto.INT64):
            nodes.append(node)
            continue
        data, result = node.input[0], node.output[0]
        as_float, float_sum = f"{node.name}/data_float", f"{node.name}/sum_float"
        nodes.append(onnx.helper.make_node("Cast", [data], [as_float], name=f"{node.name}/to_float",
                                           to=onnx.TensorProto.FLOAT))
        node.input[0], node.output[0] = as_float, float_sum
        nodes.append(node)
        nodes.append(onnx.helper.make_node("Cast", [float_sum], [result], name=f"{node.name}/to_int", to=elem))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor, by ONNX shape inference over the nodes alone: initializers are
    declared as typed inputs, so no weight is copied however large the model."""
    graph = model.graph
    declared = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in graph.initializer]
    skeleton = onnx.helper.make_graph(list(graph.node), graph.name, [*graph.input, *declared], list(graph.output))
    shell = onnx.helper.make_model(skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(shell, strict_mode=False).graph
    return {v.name: v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.output, *inferred.value_info)}


def parser_clean(model: onnx.ModelProto) -> dict:
    """Both rewrites, in place; what was done, for the artifact's manifest."""
    return {"folded_nodes": fold_constants(model), "float_cumsums": float_integer_cumsum(model)}
