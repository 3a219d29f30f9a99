"""Rotary position embeddings as one ONNX Runtime node per query/key, for the onnxrt graph.

HF applies rotary embeddings as `x * cos + rotate_half(x) * sin`, with rotate_half
splitting the head dimension in two halves: traced, that is two Slices, a Neg, a
Concat, two Muls and an Add for every query and key of every layer, around cos and
sin computed from the position ids. ONNX Runtime's RotaryEmbedding contrib operator
does the same from the position ids and a table of cos/sin per position, in one node.

The table is the model's own rotary module evaluated at every position (so rope
scaling such as Llama 3's, and any attention scaling it folds into cos/sin, are the
model's), in the same float32 arithmetic HF uses at run time. Only ONNX Runtime runs
the result; TensorRT's graph keeps the plain operators.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from NNDF.export.onnx_shapes import drop_dead_nodes

COS, SIN = "rotary_cos_cache", "rotary_sin_cache"


def rotary_tables(model: torch.nn.Module, positions: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(cos, sin) of shape (positions, head_dim / 2) from the model's rotary module, or None
    if it has none."""
    rotary = next((m for name, m in model.named_modules() if name.endswith("rotary_emb")), None)
    if rotary is None:
        return None
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, positions, 1), torch.arange(positions)[None])
    half = cos.shape[-1] // 2
    return cos[0, :, :half].float().numpy(), sin[0, :, :half].float().numpy()


class _Graph:
    def __init__(self, graph: onnx.GraphProto):
        self.producer = {o: n for n in graph.node for o in n.output}
        self.initializers = {t.name: t for t in graph.initializer}

    def ints(self, name: str) -> list[int] | None:
        if name in self.initializers:
            return [int(v) for v in numpy_helper.to_array(self.initializers[name]).reshape(-1)]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return [int(v) for v in numpy_helper.to_array(node.attribute[0].t).reshape(-1)]
        return None

    def comes_from(self, name: str, op_type: str, depth: int = 8) -> bool:
        node = self.producer.get(name)
        if node is None or depth == 0:
            return False
        return node.op_type == op_type or any(self.comes_from(i, op_type, depth - 1) for i in node.input)

    def made_by(self, name: str, op_type: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _factor(g: _Graph, mul, trig: str) -> tuple[str, str] | None:
    """(x, table) of `x * table` where the table side is computed from a Cos (or Sin) node."""
    for x, table in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0])):
        if g.comes_from(table, trig) and not g.comes_from(x, trig):
            return x, table
    return None


def _rotated_input(g: _Graph, add, half: int) -> str | None:
    """x if `add` computes x * cos + rotate_half(x) * sin with halves of `half` on the last axis."""
    muls = [g.made_by(i, "Mul") for i in add.input]
    if len(muls) != 2 or None in muls:
        return None
    plain, rotated = _factor(g, muls[0], "Cos"), _factor(g, muls[1], "Sin")
    if plain is None or rotated is None:
        return None
    x = plain[0]
    concat = g.made_by(rotated[0], "Concat")
    if concat is None or len(concat.input) != 2:
        return None
    neg, first = g.made_by(concat.input[0], "Neg"), g.made_by(concat.input[1], "Slice")
    second = g.made_by(neg.input[0], "Slice") if neg is not None else None
    if first is None or second is None or first.input[0] != x or second.input[0] != x:
        return None
    lo, hi = [g.ints(i) for i in first.input[1:4]], [g.ints(i) for i in second.input[1:4]]
    if any(v is None or len(v) != 1 for v in lo + hi):
        return None
    last_axis = lambda axes: axes[0] in (-1, 3)
    if lo[0] == [0] and lo[1] == [half] and hi[0] == [half] and hi[1][0] >= 2 * half \
            and last_axis(lo[2]) and last_axis(hi[2]):
        return x
    return None


def fuse_rotary(model: onnx.ModelProto, cos: np.ndarray, sin: np.ndarray, positions: str = "position_ids") -> int:
    """Replace every rotary application in `model` (in place) by a RotaryEmbedding node reading
    the graph input `positions`; the number replaced. Run it after fold_shape_arithmetic: a traced
    rotate_half computes its slice bounds from the head size, and only constant bounds match."""
    if positions not in {i.name for i in model.graph.input}:
        return 0
    g = _Graph(model.graph)
    half = cos.shape[1]
    fused = {}
    for node in model.graph.node:
        if node.op_type == "Add" and len(node.input) == 2:
            x = _rotated_input(g, node, half)
            if x is not None:
                fused[id(node)] = helper.make_node("RotaryEmbedding", [x, positions, COS, SIN], list(node.output),
                                                   name=f"{node.name}/RotaryEmbedding", domain="com.microsoft",
                                                   interleaved=0)
    if not fused:
        return 0
    nodes = [fused.get(id(n), n) for n in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(cos, np.float32), COS),
                                    numpy_helper.from_array(np.ascontiguousarray(sin, np.float32), SIN)])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    drop_dead_nodes(model.graph)
    return len(fused)
