"""Take the run-time shape arithmetic out of a graph ONNX Runtime will run.

A traced HF model computes every reshape's target from the input's dynamic sizes
at run time: `view(batch, seq, heads, head_dim)` becomes Shape -> Gather ->
Unsqueeze -> Concat -> Reshape, and grouped-query attention's key/value
repetition an Expand to a computed shape. In a one-token decode step those cheap
nodes outnumber the real work (SmolLM2-135M: about 1,900 of 3,800 nodes) and
cost ONNX Runtime a fixed overhead each.

ONNX Runtime's symbolic shape inference knows each such shape tensor as symbols
(`[batch, seq, -1, 64]`) and each tensor's dimensions the same way. Where every
element of a Reshape's target is a constant or the same symbol as the input's
dimension at that place, the target becomes a constant using Reshape's "0 =
copy this dimension" (one unknown left becomes -1); where an Expand's target
repeats the input's dimensions, those become 1 (broadcast keeps them); any other
shape value that is a constant after all (a head size halved, a slice bound)
becomes an initializer. Nodes that no longer feed anything are dropped. Values
are unchanged, bit for bit: only where the numbers come from changes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

INT_MAX = 2**31 - 1


def _symbolic(model: onnx.ModelProto):
    """ONNX Runtime's symbolic shape inference, run on `model` and kept for its per-tensor
    symbolic values (`sympy_data_`) and shapes (`known_vi_`). It reads the value of every
    initializer an Add or a Mul takes, so weights outside the proto (left on disk,
    NNDF/export/onnx_weights.py) are handed to it as typed graph inputs: it never tries to read
    them, and no shape arithmetic comes from a weight's values."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    shell = onnx.ModelProto()
    shell.CopyFrom(model)          # megabytes: the weights are not in it
    outside = [t for t in shell.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if outside:
        shell.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in outside)
        kept = [t for t in shell.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        del shell.graph.initializer[:]
        shell.graph.initializer.extend(kept)
    inference = SymbolicShapeInference(int_max=INT_MAX, auto_merge=True, guess_output_rank=False, verbose=0)
    inference._preprocess(shell)
    while inference.run_:
        inference._infer_impl()
    return inference


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) or bool(getattr(value, "is_Integer", False))


def _dims(inference, name: str) -> list | None:
    info = inference.known_vi_.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in info.type.tensor_type.shape.dim]


def _same(a, b) -> bool:
    """Whether a symbolic value equals a dimension (a symbol name, an expression, or a number)."""
    if a is None or b is None:
        return False
    import sympy

    try:
        return sympy.simplify(sympy.sympify(str(a)) - sympy.sympify(str(b))) == 0
    except (sympy.SympifyError, TypeError):
        return False


def _reshape_target(target: list, dims: list) -> list[int] | None:
    literal_minus_one = any(_is_int(v) and int(v) == -1 for v in target)
    out, unknown = [], 0
    for j, v in enumerate(target):
        if _is_int(v):
            out.append(int(v))
        elif j < len(dims) and _same(v, dims[j]):
            out.append(0)
        else:
            out.append(-1)
            unknown += 1
    return out if unknown == 0 or (unknown == 1 and not literal_minus_one) else None


def _expand_target(target: list, dims: list) -> list[int] | None:
    offset = len(target) - len(dims)       # Expand broadcasts from the right
    out = []
    for j, v in enumerate(target):
        if _is_int(v):
            out.append(int(v))
        elif j >= offset and _same(v, dims[j - offset]):
            out.append(1)
        else:
            return None
    return out


def drop_dead_nodes(graph: onnx.GraphProto) -> None:
    outputs = {o.name for o in graph.output}
    while True:
        used = set(outputs)
        for node in graph.node:
            used.update(node.input)
        live = [n for n in graph.node if any(o in used for o in n.output)]
        if len(live) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(live)
    needed = {i for n in graph.node for i in n.input} | outputs | {i.name for i in graph.input}
    kept = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def fold_shape_arithmetic(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place as described above; the number of shape inputs replaced by
    constants. A graph the inference cannot follow is left as it is (0)."""
    try:
        inference = _symbolic(model)
    except Exception:   # an operator the inference does not know: nothing is rewritten
        return 0
    values = inference.sympy_data_
    initializers = {t.name for t in model.graph.initializer}
    added: dict[tuple, str] = {}
    replaced = 0

    def constant(numbers: list[int], shape: tuple[int, ...] | None, hint: str) -> str:
        key = (tuple(numbers), shape)
        if key not in added:
            array = np.array(numbers, np.int64)
            array = array.reshape(shape) if shape is not None else array
            name = f"{hint}/folded_{len(added)}"
            model.graph.initializer.append(numpy_helper.from_array(array, name))
            initializers.add(name)
            added[key] = name
        return added[key]

    for node in model.graph.node:
        if node.op_type in ("Reshape", "Expand") and node.input[1] in values:
            allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
            target, dims = values[node.input[1]], _dims(inference, node.input[0])
            if isinstance(target, list) and dims is not None and not allowzero:
                rewrite = _reshape_target if node.op_type == "Reshape" else _expand_target
                new = rewrite(target, dims)
                if new is not None:
                    node.input[1] = constant(new, None, node.name or node.output[0])
                    replaced += 1
                    continue
        for k, name in enumerate(node.input):
            value = values.get(name)
            if name in initializers or value is None:
                continue
            items = value if isinstance(value, list) else [value]
            info = inference.known_vi_.get(name)
            if not all(_is_int(v) for v in items) or info is None or \
                    info.type.tensor_type.elem_type != onnx.TensorProto.INT64:
                continue
            shape = tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
            if int(np.prod(shape)) != len(items):
                continue
            node.input[k] = constant([int(v) for v in items], shape, name)
            replaced += 1
    drop_dead_nodes(model.graph)
    return replaced
