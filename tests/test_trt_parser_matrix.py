"""Every graph the trt backend parses passes TensorRT 10's ONNX support matrix, and the stand-in's
parser refuses one that does not, naming the operator and node.

The graphs are the ones each family's trt backend exports (all variant groups, fp32 and fp16,
with and without the KV cache), checked as written in the working dir, which is the file a
user hands to trtexec or polygraphy."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported
from NNDF.export.onnx_fold import float_integer_cumsum, fold_constants
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family
from trt_standin.onnx_support import MATRIX_FILE, load_matrix, parser_problems

ROOT = Path(__file__).resolve().parents[1]
SHARED_MATRIX = ROOT.parent / "shared" / "reference" / "tensorrt10-onnx-operators.tsv"
VARIANTS = [("GPT2", "gpt2-tiny"), ("GPT2", "gpt-neo-tiny"), ("GPT2", "gptj-tiny"), ("GPT2", "gpt-neox-tiny"),
            ("OPT", "opt-tiny"), ("BLOOM", "bloom-tiny"), ("T5", "t5-tiny"), ("T5", "flan-t5-tiny"),
            ("BART", "bart-tiny"), ("BART", "mbart-tiny"), ("BLIP", "blip-tiny"),
            ("LLAMA", "llama-tiny"), ("LLAMA", "qwen2-tiny"), ("LLAMA", "mistral-tiny"),
            ("BERT", "distilbert-tiny-sst2"), ("BERT", "bert-tiny-squad"), ("BERT", "bert-tiny-ner"),
            ("BERT", "minilm-tiny-embeddings"), ("VIT", "vit-tiny-shapes")]


def trt_graph_specs(family, loaded, use_cache: bool) -> dict:
    """The graphs the family's trt backend parses for this cache setting (encoders have one, cache or not)."""
    if not family.generates:
        return {"encoder": importlib.import_module(f"{family.package}.export").encoder_graph(loaded)}
    if family.name in ("T5", "BART"):
        from Seq2Seq.export import specs_for
        return specs_for(family, loaded, use_cache)
    if family.name == "BLIP":
        from NNDF.kinds.image_to_text.graphs import specs_for
        return specs_for(family, loaded, use_cache)
    spec = importlib.import_module(f"{family.package}.export").decoder_graph(loaded, use_cache)
    return {spec.name: spec}


@pytest.mark.parametrize("family_name,variant", VARIANTS, ids=[v for _, v in VARIANTS])
def test_every_trt_graph_passes_the_matrix(workdir, family_name, variant):
    family = get_family(family_name)
    loaded = family.load(parse_args(["run", family_name, "frameworks", "--variant", variant,
                                     "--working-dir", str(workdir.root)]))
    checked = 0
    for fp16 in (False, True):
        for use_cache in (True, False):
            for name, spec in trt_graph_specs(family, loaded, use_cache).items():
                art = exported(workdir, artifact_subdir(family, loaded), loaded.model, spec, loaded.source_key, fp16)
                problems = parser_problems(art.file(MODEL_FILE))
                assert not problems, f"{variant} {name} fp16={fp16}: " + "; ".join(map(str, problems[:5]))
                checked += 1
    assert checked >= 4


def test_the_matrix_copy_equals_the_shared_reference():
    if not SHARED_MATRIX.is_file():
        pytest.skip(f"{SHARED_MATRIX} is not on this machine")
    ours = [ln for ln in MATRIX_FILE.read_text().splitlines() if not ln.startswith("#")]
    theirs = [ln for ln in SHARED_MATRIX.read_text().splitlines() if not ln.startswith("#")]
    assert ours == theirs


def test_matrix_is_read_as_written():
    matrix = load_matrix()
    assert matrix["CumSum"].types == {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    assert "initializer" in matrix["Slice"].restrictions
    assert matrix["NonMaxSuppression"].supported and not matrix["Unique"].supported


# --------------------------------------------------------------------------- the checker on handmade graphs
def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _slice_of_unsqueezed_constant():
    """What T5/BART decoders and BLIP's vision encoder looked like: Slice axes = Unsqueeze(Constant)."""
    nodes = [helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(1, np.int64))),
             helper.make_node("Unsqueeze", ["zero", "ax0"], ["axes"], name="make_axes"),
             helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="the_slice")]
    inits = [numpy_helper.from_array(np.array([0], np.int64), n) for n in ("ax0", "starts")]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "ends"))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def _int_cumsum():
    """What BLOOM's decoder looked like: CumSum over the INT64 attention mask."""
    nodes = [helper.make_node("CumSum", ["mask", "axis"], ["pos"], name="positions")]
    return _model(nodes, [helper.make_tensor_value_info("mask", TensorProto.INT64, ["b", "t"])],
                  [helper.make_tensor_value_info("pos", TensorProto.INT64, None)],
                  [numpy_helper.from_array(np.array(1, np.int64), "axis")])


def test_computed_slice_axes_are_refused_then_folded_exactly():
    model = _slice_of_unsqueezed_constant()
    problems = parser_problems(model)
    assert [(p.node, p.operator) for p in problems] == [("the_slice", "Slice")]
    assert "`axes`" in problems[0].text and "initializer" in problems[0].text
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    before = _run(model, {"x": x})
    assert fold_constants(model) == 2                       # the Constant and the Unsqueeze
    assert [n.op_type for n in model.graph.node] == ["Slice"]
    assert parser_problems(model) == []
    np.testing.assert_array_equal(_run(model, {"x": x}), before)


def test_integer_cumsum_is_refused_then_run_in_float_exactly():
    model = _int_cumsum()
    problems = parser_problems(model)
    assert [(p.node, p.operator) for p in problems] == [("positions", "CumSum")] and "INT64" in problems[0].text
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], np.int64)
    assert float_integer_cumsum(model) == 1
    assert parser_problems(model) == []
    out = _run(model, {"mask": mask})
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.cumsum(mask, axis=1))


def _run(model, feed):
    import onnxruntime as ort
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _dequantize(zero_point: int, block_size: int = 0, opset: int = 17):
    attrs = {"block_size": block_size} if block_size else {}
    node = helper.make_node("DequantizeLinear", ["w", "scale", "zp"], ["y"], name="dq", axis=0, **attrs)
    shape = [4, 2] if block_size else [4]
    inits = [numpy_helper.from_array(np.ones(shape, np.int8), "w"),
             numpy_helper.from_array(np.full([2, 2] if block_size else [], 0.5, np.float32), "scale"),
             numpy_helper.from_array(np.full([2, 2] if block_size else [], zero_point, np.int8), "zp")]
    return _model([node], [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits, opset)


def test_dequantize_zero_points_and_opset_rules():
    assert parser_problems(_dequantize(0)) == []
    nonzero = parser_problems(_dequantize(3))
    assert [(p.node, p.operator) for p in nonzero] == [("dq", "DequantizeLinear")] and "zero" in nonzero[0].text
    # opset 21 passes only for blocked DequantizeLinear (INT4 weight-only), the one 21 feature TensorRT 10 parses
    assert parser_problems(_dequantize(0, block_size=2, opset=21)) == []
    plain_21 = parser_problems(_dequantize(0, opset=21))
    assert plain_21 and "opset 21" in plain_21[0].text and plain_21[0].node == ""
    assert parser_problems(_dequantize(0, opset=22))
    assert parser_problems(_dequantize(0), max_opset=16)      # the limit is a parameter


def test_unsupported_and_foreign_operators_are_named():
    nodes = [helper.make_node("Unique", ["x"], ["y"], name="uniq"),
             helper.make_node("FastGelu", ["x"], ["z"], name="fused", domain="com.microsoft")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                    helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    problems = parser_problems(model)
    assert [(p.node, p.operator) for p in problems] == [("uniq", "Unique"), ("fused", "FastGelu")]


def test_standin_parser_refuses_with_operator_and_node_named(standin, tmp_path):
    import tensorrt as trt

    from NNDF.base.errors import UsageError
    from NNDF.export.trt_engines import _parse

    path = tmp_path / "bad.onnx"
    onnx.save(_int_cumsum(), str(path))
    logger = trt.Logger(trt.Logger.WARNING)
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    with pytest.raises(UsageError, match=r"node positions \(CumSum\).*INT64"):
        _parse(parser, path)
    assert parser.get_error(0).node_name() == "positions" and parser.get_error(0).node_operator() == "CumSum"
    standin._errors.clear()
