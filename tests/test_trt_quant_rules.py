"""TensorRT's rules for quantized graphs (NNDF/export/quantize.py, "What TensorRT takes"): the trt
form keeps to them, and the stand-in's parser (tests/trt_standin/onnx_support.py,
quantization_problems) refuses a graph that breaks one, each refusal checked here on a small graph
that breaks only that rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from NNDF.base.config import QuantSettings
from NNDF.export import quantize
from trt_standin.onnx_support import parser_problems

F16 = TensorProto.FLOAT16


def linear_graph(weights: dict[str, np.ndarray], k: int, opset: int = 17) -> onnx.ModelProto:
    """x [2, k] -> one MatMul per weight (its own output each), in the weight's type (fp32 weights
    get a Cast of x)."""
    x = helper.make_tensor_value_info("x", F16, [2, k])
    nodes, outputs = [helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT, name="cast")], []
    for name, w in weights.items():
        fp32 = w.dtype == np.float32
        nodes.append(helper.make_node("MatMul", ["x32" if fp32 else "x", name], [f"y_{name}"], name=f"mm_{name}"))
        outputs.append(helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT if fp32 else F16, [2, w.shape[1]]))
    graph = helper.make_graph(nodes, "g", [x], outputs, [numpy_helper.from_array(w, n) for n, w in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")   # as the stand-in runs QDQ
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def texts(proto: onnx.ModelProto) -> list[str]:
    return [p.text for p in parser_problems(proto)]


def test_trt_int4_graph_computes_the_fp16_graph_with_dequantized_weights():
    """qdq_graph on fp16 weights, one with an odd output dimension (as GPT2's LM head, 50257) and one
    fp32 weight (as T5's kept feed-forward output): the parser takes it, the odd weight is padded to an
    even INT4 tensor and sliced back, the fp32 weight stays float, and the outputs are the fp16 graph's
    with each weight replaced by its dequantized INT4 (both graphs run by ONNX Runtime in fp16; the
    only difference allowed is fp16 rounding of the products, 1e-3 of the output's range)."""
    rng = np.random.default_rng(0)
    weights = {"even": rng.standard_normal((128, 6)).astype(np.float16),
               "odd": rng.standard_normal((128, 5)).astype(np.float16),
               "kept": rng.standard_normal((128, 3)).astype(np.float32)}
    proto = linear_graph(weights, 128)
    qdq = quantize.qdq_graph(onnx.ModelProto.FromString(proto.SerializeToString()), QuantSettings("int4", 64))
    assert texts(qdq) == []
    int4 = {t.name: list(t.dims) for t in qdq.graph.initializer if t.data_type == TensorProto.INT4}
    assert int4 == {"even_int4": [128, 6], "odd_int4": [128, 6]}          # padded to an even last dimension
    assert "kept" in {t.name for t in qdq.graph.initializer}              # the fp32 weight stays float
    assert [n.op_type for n in qdq.graph.node].count("Slice") == 1
    dequantized = {}
    for name, w in weights.items():
        if w.dtype == np.float16:
            values, scales = quantize.blocked_int4(w, 64)
            w = (values * np.repeat(scales.astype(np.float32), 64, axis=0)).astype(np.float16)
        dequantized[name] = w
    x = rng.standard_normal((2, 128)).astype(np.float16)
    got, want = run(qdq, x), run(linear_graph(dequantized, 128), x)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.abs(g.astype(np.float32) - w.astype(np.float32)).max() <= 1e-3 * np.ptp(w.astype(np.float32))


def int4_dq(values: np.ndarray, scales: np.ndarray, block: int, axis: int = 0, name: str = "w") -> tuple:
    """An INT4 initializer, its scales and a blocked DequantizeLinear of them."""
    init = quantize.int4_tensor(values, f"{name}_int4")
    scale = numpy_helper.from_array(scales, f"{name}_scale")
    node = helper.make_node("DequantizeLinear", [init.name, scale.name], [f"{name}_dq"], name=f"{name}_dq_node",
                            axis=axis, block_size=block)
    return init, scale, node


def dq_matmul_graph(init, scale, node, k: int, n: int, dtype=F16, opset: int = 21) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", dtype, [2, k])
    y = helper.make_tensor_value_info("y", dtype, [2, n])
    graph = helper.make_graph([node, helper.make_node("MatMul", ["x", node.output[0]], ["y"], name="mm")], "g",
                              [x], [y], [init, scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def good_int4(k=128, n=6, block=64, scale_dtype=np.float16):
    values = np.random.default_rng(1).integers(-8, 8, (k, n)).astype(np.int8)
    return values, np.full((k // block, n), 0.01, scale_dtype)


def test_a_well_formed_int4_weight_passes():
    values, scales = good_int4()
    assert texts(dq_matmul_graph(*int4_dq(values, scales, 64), 128, 6)) == []


@pytest.mark.parametrize("broken,message", [
    ("odd_last_dimension", "odd last dimension 5"),
    ("block_32", "block size 32 is not one of TensorRT's (64, 128)"),
    ("partial_block", "is not a whole number of 64-blocks"),
    ("fp32_scales", "dequantized to FLOAT; TensorRT's INT4 weights meet FLOAT16/BFLOAT16"),
    ("negative_scale", "scale coefficients must all be positive"),
    ("not_blocked", "is not block-quantized"),
])
def test_each_int4_rule_refuses_the_graph_that_breaks_it(broken, message):
    k, n, block, dtype, scale_dtype = 128, 6, 64, F16, np.float16
    if broken == "odd_last_dimension":
        n = 5
    if broken == "block_32":
        block = 32
    if broken == "partial_block":
        k = 96     # 1.5 blocks of 64: ONNX allows a partial last block, TensorRT does not
    if broken == "fp32_scales":
        dtype, scale_dtype = TensorProto.FLOAT, np.float32
    values = np.random.default_rng(1).integers(-8, 8, (k, n)).astype(np.int8)
    scales = np.full((-(-k // block), n), 0.01, scale_dtype)
    if broken == "negative_scale":
        scales[0, 0] = -0.01
    init, scale, node = int4_dq(values, scales, block)
    if broken == "not_blocked":      # per-column scales: ONNX allows it for INT4, TensorRT wants blocks
        scale = numpy_helper.from_array(scales[0], scale.name)
        node = helper.make_node("DequantizeLinear", [init.name, scale.name], node.output, name=node.name, axis=1)
    found = texts(dq_matmul_graph(init, scale, node, k, n, dtype))
    assert any(message in t for t in found), found


def test_computed_int4_is_refused_as_not_weight_only():
    """INT4 activations (a QuantizeLinear to INT4 feeding the DequantizeLinear) are not TensorRT's INT4."""
    x = helper.make_tensor_value_info("x", F16, [2, 128])
    y = helper.make_tensor_value_info("y", F16, [2, 128])
    scale = numpy_helper.from_array(np.array(0.1, np.float16), "s")
    zero = helper.make_tensor("z", TensorProto.INT4, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, zero]),
                              opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    assert any("is computed; TensorRT's INT4 is weight-only" in t for t in texts(proto))


def int8_graph(quantize_activation: bool, dtype=TensorProto.FLOAT, opset: int = 17) -> onnx.ModelProto:
    """x -> [QuantizeLinear -> DequantizeLinear ->] MatMul with an INT8 per-channel weight -> DQ."""
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    x = helper.make_tensor_value_info("x", dtype, [2, 64])
    y = helper.make_tensor_value_info("y", dtype, [2, 8])
    inits = [numpy_helper.from_array(np.ones((64, 8), np.int8), "w_int8"),
             numpy_helper.from_array(np.full(8, 0.01, np_dtype), "w_scale"),
             numpy_helper.from_array(np.array(0.02, np.float32 if opset < 19 else np_dtype), "x_scale"),
             numpy_helper.from_array(np.zeros((), np.int8), "zero")]
    nodes = [helper.make_node("DequantizeLinear", ["w_int8", "w_scale"], ["w_dq"], name="w_dq", axis=1)]
    activation = "x"
    if quantize_activation:
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["x_q"], name="x_q"),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zero"], ["x_dq"], name="x_dq")]
        activation = "x_dq"
    nodes.append(helper.make_node("MatMul", [activation, "w_dq"], ["y"], name="mm"))
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", opset)])


def test_int8_weights_need_quantized_activations():
    """W8A8 passes; an INT8 weight DQ before a float MatMul (weight-only INT8) is refused."""
    assert texts(int8_graph(quantize_activation=True)) == []
    assert any("whose other input is not quantized" in t for t in texts(int8_graph(quantize_activation=False)))


def test_an_invalid_graph_is_refused_with_a_line_not_an_onnx_runtime_traceback():
    """The issue-24 defect's form: fp16 activations quantized with fp32 scales at opset 17, where
    QuantizeLinear takes only fp32 (ONNX Runtime refused to load it, INVALID_GRAPH); at opset 19 with
    fp16 scales, the form calibrated_qdq now writes for fp16 graphs, it passes."""
    found = texts(int8_graph(True, TensorProto.FLOAT16, opset=17))
    assert any("not valid ONNX" in t for t in found), found
    assert texts(int8_graph(True, TensorProto.FLOAT16, opset=19)) == []


def test_calibrated_qdq_of_an_fp16_graph_is_valid_and_in_fp16():
    """calibrated_qdq on an fp16 graph: opset 19, every scale fp16, and the stand-in's parser takes it."""
    rng = np.random.default_rng(0)
    proto = linear_graph({"w": rng.standard_normal((64, 8)).astype(np.float16)}, 64)
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float16)} for _ in range(2)]
    qdq = quantize.calibrated_qdq(proto, feeds)
    assert next(o.version for o in qdq.opset_import if o.domain == "") == 19
    scales = [t for t in qdq.graph.initializer if t.name.endswith("scale")]
    assert scales and all(t.data_type == F16 for t in scales)
    assert texts(qdq) == []
    got, want = run(qdq, feeds[0]["x"])[0], run(proto, feeds[0]["x"])[0]
    assert np.abs(got.astype(np.float32) - want.astype(np.float32)).max() <= 0.05 * np.ptp(want.astype(np.float32))
