"""--quantize int8/int4: every weight quantized, one quantization in two graph forms (onnxrt's
MatMulNBits, trt's QDQ on the stand-in), the accuracy gate on the trained tiny models and a planted
scale-axis bug it catches, cached artifacts, and bad input as one line with exit 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import ROOT, call

from NNDF.actions.accuracy import evaluate, load_texts
from NNDF.actions.quant_gate import MAX_RELATIVE_PERPLEXITY, delta_to_fp32, passes
from NNDF.cli import parse_args
from NNDF.export import quantize
from NNDF.kinds.makers import make_backends
from NNDF.models.artifacts import artifact_subdir, onnx_path
from NNDF.registry import get_family
from NNDF.runtime.memory import linear_weight_shapes

SAMPLE = ROOT / "NNDF" / "data" / "lambada_sample.jsonl"
TRAINED = {"T5": "t5-tiny", "BART": "bart-tiny"}   # the tiny models trained on real text


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)


def cfg_for(workdir, family, *flags, backends=("onnxrt",), action="accuracy"):
    return parse_args([action, family, *backends, "--working-dir", str(workdir.root), "--use-cache", *flags])


def loaded_model(family, variant, workdir, cache={}):
    if (family, variant) not in cache:
        cache[family, variant] = get_family(family).load(cfg_for(workdir, family, "--variant", variant))
    return cache[family, variant]


def backend(workdir, family, variant, name, *flags):
    cfg = cfg_for(workdir, family, "--variant", variant, *flags, backends=(name,))
    return next(b for b in make_backends(get_family(family), loaded_model(family, variant, workdir), cfg, workdir)
                if b.name == name)


def accuracy(b, family, variant, workdir):
    texts = load_texts(SAMPLE, 40)
    return evaluate(b, loaded_model(family, variant, workdir), texts, 5, [1, 10])


# --------------------------------------------------------------------------- graphs
def ops(path) -> dict[str, int]:
    proto = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for n in proto.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def float_weight_matmuls(path) -> list[str]:
    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]


@pytest.mark.parametrize("family,variant", [("GPT2", "gpt2-tiny"), ("T5", "t5-tiny")])
def test_every_weight_is_quantized_and_embeddings_stay_float(workdir, family, variant):
    """onnxrt: every MatMul weight a MatMulNBits, int8 and int4. trt (int4, fp16 graphs only): every
    fp16 weight an INT4 initializer -> blocked DequantizeLinear with positive fp16 scales, in blocks
    of 64 (the default with trt); a weight the fp16 export keeps in fp32 (T5's feed-forward output
    projections) stays float, as TensorRT's INT4 is W4A16."""
    from NNDF.kinds.decoder_only.graphs import decoder_spec
    from NNDF.kinds.encoder_decoder.graphs import graph_specs

    fam, loaded = get_family(family), loaded_model(family, variant, workdir)
    model_linears = linear_weight_shapes(loaded.model)
    spec_names = ["decoder"] if family == "GPT2" else ["encoder", "cache_generator", "decoder"]
    specs = [decoder_spec(loaded.model, fam.layout(loaded), True) if family == "GPT2"
             else graph_specs(loaded.model, fam.layout(loaded))[name] for name in spec_names]
    for scheme in ("int8", "int4"):
        cfg = cfg_for(workdir, family, "--variant", variant, "--quantize", scheme)
        quantized = 0
        for spec in specs:
            ort_graph = onnx_path(spec, loaded, fam, cfg, workdir, "onnxrt")
            assert "Gemm" not in ops(ort_graph) and float_weight_matmuls(ort_graph) == []
            quantized += ops(ort_graph)["MatMulNBits"]
        # every linear layer of the model (GPT2's tied LM head included) is quantized in some graph
        assert quantized >= len(model_linears) - (0 if family == "GPT2" else 1)
    cfg = cfg_for(workdir, family, "--variant", variant, "--quantize", "int4", "--fp16", backends=("trt",))
    kept_fp32 = 0
    for spec in specs:
        proto = onnx.load(str(onnx_path(spec, loaded, fam, cfg, workdir, "trt")))
        inits = {t.name: t for t in proto.graph.initializer}
        assert next(o.version for o in proto.opset_import if o.domain == "") == 21
        for t in proto.graph.initializer:   # embedding tables and norms stay in export precision
            if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.INT8):
                assert t.name.endswith("_int4")
        for node in proto.graph.node:
            if node.op_type == "DequantizeLinear":
                assert len(node.input) == 2   # no zero point: symmetric
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                scale = inits[node.input[1]]
                assert attrs == {"axis": 0, "block_size": 64} and len(scale.dims) == 2
                assert scale.data_type == onnx.TensorProto.FLOAT16
                assert (onnx.numpy_helper.to_array(scale) > 0).all()    # TensorRT refuses others
        assert float_weight_matmuls_of(proto) == []    # every fp16 weight a MatMul reads directly is INT4
        kept_fp32 += len(fp32_kept_matmuls(proto))
    assert kept_fp32 == (0 if family == "GPT2" else 2 * loaded.model.config.num_layers)   # T5: wo of each layer


def fp32_kept_matmuls(proto) -> list[str]:
    """MatMuls the fp16 export keeps in fp32: their weight comes through a Cast to float (the weights'
    Transpose is fp16, as at real size: the export leaves matrices unfolded), never from a DequantizeLinear."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    kept = []
    for node in proto.graph.node:
        cast = producer.get(node.input[1]) if node.op_type == "MatMul" else None
        if cast is not None and cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT:
            assert "DequantizeLinear" not in {producer[i].op_type for i in cast.input if i in producer}
            kept.append(node.name)
    return kept


def float_weight_matmuls_of(proto) -> list[str]:
    inits = {t.name for t in proto.graph.initializer}
    return [n.input[1] for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits]


def test_trt_int4_blocks_round_trip():
    """TensorRT's INT4 scheme: positive per-block scales (largest |w| / 7), values in [-8, 7], each
    weight within half a step of its dequantized value; the INT4 packing keeps the values."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((128, 24)) * rng.uniform(0.01, 3, (1, 24))).astype(np.float16)
    values, scales = quantize.blocked_int4(weight, 64)
    assert values.shape == (128, 24) and scales.shape == (2, 24) and scales.dtype == np.float16
    assert (scales > 0).all() and values.min() >= -8 and values.max() <= 7
    dequantized = values * np.repeat(scales.astype(np.float32), 64, axis=0)
    step = np.repeat(scales.astype(np.float32), 64, axis=0)
    assert (np.abs(dequantized - weight.astype(np.float32)) <= step / 2 + 1e-3 * step).all()   # round to nearest
    packed = quantize.int4_tensor(values, "v")
    assert np.array_equal(onnx.numpy_helper.to_array(packed).astype(np.int8), values)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_in_place_rounding_gives_the_chained_formulas_values(dtype):
    """blocked_int4 and per_channel_int8 compute in one float32 copy (a weight-sized array, where the
    chained formula made three: a 7B LM head is 1 GB each): the same values and scales as the plain
    formula, and the caller's weight untouched."""
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((256, 40)) * rng.uniform(0.01, 3, (1, 40))).astype(dtype)
    weight[3, 5], weight[70, 6] = 0, -weight[70, 6] * 50      # a zero, a negative largest magnitude
    kept = weight.copy()
    w = weight.astype(np.float32).reshape(4, 64, 40)
    scales = np.maximum((np.abs(w).max(axis=1) / 7.0).astype(dtype), np.finfo(dtype).tiny)
    want = np.clip(np.round(w / scales.astype(np.float32)[:, None, :]), -8, 7).astype(np.int8).reshape(256, 40)
    values, got_scales = quantize.blocked_int4(weight, 64)
    assert np.array_equal(values, want) and np.array_equal(got_scales, scales)
    w = weight.astype(np.float32)
    scale = np.maximum((np.abs(w).max(axis=0) / 127.0).astype(dtype), np.finfo(dtype).tiny)
    want = np.clip(np.round(w / scale.astype(np.float32)), -127, 127).astype(np.int8)
    values, got_scale = quantize.per_channel_int8(weight)
    assert np.array_equal(values, want) and np.array_equal(got_scale, scale) and values.min() >= -127
    assert np.array_equal(weight, kept)


def test_onnx_runtime_int4_scales_are_signed_so_trt_quantizes_on_its_own():
    """Why the trt form does not reuse onnxrt's MatMulNBits weights: ONNX Runtime's symmetric int4
    maps each block's largest weight to -8, so a block whose largest weight is positive gets a negative
    scale, and TensorRT refuses any scale that is not positive (onnx-tensorrt, "Scale coefficients must
    all be positive")."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 24)).astype(np.float32)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3, 64])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 24])
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y],
                                   [onnx.numpy_helper.from_array(weight, "w")])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    from NNDF.base.config import QuantSettings

    q = quantize.quantize_with_ort(proto, QuantSettings("int4", 16, 1), "test")
    scales = next(onnx.numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("_scales"))
    assert (scales < 0).any() and (scales > 0).any()


# --------------------------------------------------------------------------- the accuracy gate
@pytest.fixture(scope="module")
def fp32_accuracy(workdir):
    return {f: accuracy(backend(workdir, f, v, "frameworks"), f, v, workdir) for f, v in TRAINED.items()}


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("family", list(TRAINED))
def test_onnxrt_passes_the_gate(workdir, fp32_accuracy, family, scheme):
    variant = TRAINED[family]
    result = accuracy(backend(workdir, family, variant, "onnxrt", "--quantize", scheme), family, variant, workdir)
    delta = delta_to_fp32(fp32_accuracy[family], result)
    assert passes(scheme, delta), delta
    assert abs(delta["top1_delta"]) <= 0.05, delta


@pytest.mark.parametrize("family", list(TRAINED))
def test_trt_int4_passes_the_gate_on_its_own(standin, workdir, fp32_accuracy, family):
    """TensorRT's int4 (fp16 activations, blocks of 64) on the stand-in, against fp32 frameworks."""
    variant = TRAINED[family]
    result = accuracy(backend(workdir, family, variant, "trt", "--quantize", "int4", "--fp16"), family, variant, workdir)
    assert passes("int4", delta_to_fp32(fp32_accuracy[family], result))
    assert standin._errors == []
    import trt_standin

    engines = list(workdir.root.glob(f"{family}/{variant}/engines/*/decoder-fp16-*/engine.plan"))
    quantized = [e for e in engines if "-int4-" in trt_standin.plan_header(e)["source"]]
    assert quantized and all(trt_standin.plan_header(e)["strongly_typed"] for e in quantized)


def test_gate_catches_int4_nibbles_packed_in_the_wrong_order(standin, workdir, fp32_accuracy, monkeypatch, tmp_path):
    """A planted bug: INT4 pairs packed high nibble first (ONNX puts the first value in the low nibble),
    which swaps every two neighbouring weights of a row."""
    from NNDF.export.workdir import WorkingDir

    def swapped(values, name):
        flat = values.reshape(-1)
        pairs = np.stack([flat[1::2], flat[0::2]], axis=-1).reshape(-1)
        return correct(pairs.reshape(values.shape), name)

    correct = quantize.int4_tensor
    monkeypatch.setattr(quantize, "int4_tensor", swapped)
    fresh = WorkingDir(tmp_path)   # the planted graph must not land in the shared cache
    family, variant = "T5", TRAINED["T5"]
    result = accuracy(backend(fresh, family, variant, "trt", "--quantize", "int4", "--fp16"), family, variant, fresh)
    assert not passes("int4", delta_to_fp32(fp32_accuracy[family], result))


# --------------------------------------------------------------------------- CLI, cache, bad input
def test_accuracy_and_compare_print_the_delta_to_fp32(capsys, wd, tmp_path):
    out_file = tmp_path / "acc.json"
    code, out, err = call(capsys, "accuracy", "T5", "onnxrt", "--working-dir", wd, "--use-cache", "--quantize", "int8",
                          "--dataset-path", str(SAMPLE), "--num-samples", "40", "--save-output-fpath", str(out_file))
    assert code == 0, err
    assert "int8 (block 32) against frameworks (fp32 on cpu)" in out and "within the int8 gate" in out
    onnxrt = json.loads(out_file.read_text())["results"]["onnxrt"]
    assert abs(onnxrt["delta_to_fp32"]["token_perplexity_rel"]) <= 0.01
    code, out, err = call(capsys, "compare", "GPT2", "onnxrt", "--working-dir", wd, "--use-cache", "--quantize", "int4",
                          "--iterations", "1")
    assert code == 0, err
    assert "onnxrt int4 against frameworks (fp32)" in out


def test_quantized_graphs_are_cached_with_a_manifest_and_info_shows_bytes(capsys, workdir, wd):
    # without the cache: with it, onnxrt's GPT2 decoder is written from the weights (tests/test_gpt2_graph.py),
    # not quantized by ONNX Runtime's quantizer, whose artifacts this checks
    code, out, err = call(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, "--quantize", "int4",
                          "--quant-block-size", "16", "--iterations", "1", "--info")
    assert code == 0, err
    loaded = loaded_model("GPT2", "gpt2-tiny", workdir)
    onnx_dir = workdir.artifact_dir(*artifact_subdir(get_family("GPT2"), loaded), "onnx")
    made = sorted(p for p in onnx_dir.iterdir() if "-int4-b16-a4-onnxrt" in p.name and not p.name.startswith("."))
    assert made, list(onnx_dir.iterdir())
    manifest = json.loads((made[0] / "manifest.json").read_text())
    assert manifest["key"]["block_size"] == 16 and manifest["key"]["accuracy_level"] == 4
    assert manifest["key"]["onnxruntime"] and manifest["quantized_weights"] == manifest["weights"] == 9
    assert made[0].name in out and " MB" in out     # --info lists each graph with its bytes
    mtime = (made[0] / "model.onnx").stat().st_mtime_ns
    code, out, err = call(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, "--quantize", "int4",
                          "--quant-block-size", "16", "--iterations", "1")
    assert code == 0 and (made[0] / "model.onnx").stat().st_mtime_ns == mtime   # reused, not rebuilt
    assert "quantizing" not in err


def test_fp16_combines_with_quantize(workdir):
    b = backend(workdir, "GPT2", "gpt2-tiny", "onnxrt", "--fp16", "--quantize", "int8")
    ref = backend(workdir, "GPT2", "gpt2-tiny", "onnxrt", "--fp16")
    loaded = loaded_model("GPT2", "gpt2-tiny", workdir)
    ids = loaded.tokenizer("Clara baked bread every morning", return_tensors="np")["input_ids"]
    got, want = b.logits(ids, np.ones_like(ids)), ref.logits(ids, np.ones_like(ids))
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.9


def test_bad_quantize_inputs_are_one_line_errors(capsys, wd, workdir):
    loaded = loaded_model("GPT2", "gpt2-tiny", workdir)
    fam = get_family("GPT2")
    quantized = onnx_path(__import__("NNDF.kinds.decoder_only.graphs", fromlist=["x"]).decoder_spec(loaded.model, fam.layout(loaded), True),
                          loaded, fam, cfg_for(workdir, "GPT2", "--quantize", "int4"), workdir)
    cases = {
        ("--quantize", "int3"): "--quantize int3 is not supported",
        ("--quantize", "int4", "--quant-block-size", "24"): "not a power of two >= 16",
        ("--quantize", "int4", "--quant-block-size", "8"): "not a power of two >= 16",
        ("--quantize", "int4", "--quant-block-size", "128"): "larger than the input dimension 64",
        ("--quantize", "int8", "--decoder-onnx", str(quantized)): "is already quantized",
        ("--quant-block-size", "64",): "need --quantize",
    }
    for flags, message in cases.items():
        code, out, err = call(capsys, "run", "GPT2", "onnxrt", "--working-dir", wd, "--use-cache", "--iterations", "1",
                              *flags)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (flags, err)
    code, out, err = call(capsys, "run", "GPT2", "frameworks", "--working-dir", wd, "--quantize", "int4")
    assert code == 2 and "applies to the onnxrt and trt backends" in err
