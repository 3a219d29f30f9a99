"""The onnxrt-only graph rewrites (NNDF/export/onnx_shapes.py, NNDF/export/onnx_rotary.py) change where numbers
come from, never the numbers: checked against the plain exported graph at shapes other than the
trace's (batch 1-3, past 0/3/37, a left-padded row), and a planted wrong rotary table is caught."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from NNDF.cli import parse_args
from NNDF.export.onnx_export import export_graph
from NNDF.export.onnx_rotary import fuse_rotary, rotary_tables
from NNDF.export.onnx_shapes import fold_shape_arithmetic
from NNDF.graphs.axes import BATCH, KEPT, PAST, SEQ
from NNDF.kinds.decoder_only.graphs import decoder_spec
from NNDF.registry import get_family

SIZES = ({BATCH: 3, SEQ: 4, PAST: 0}, {BATCH: 1, SEQ: 1, PAST: 37}, {BATCH: 2, SEQ: 6, PAST: 3, KEPT: 1})


def exported(tmp_path_factory, family: str, variant: str):
    loaded = get_family(family).load(parse_args(["run", family, "--variant", variant]))
    spec = decoder_spec(loaded.model, get_family(family).layout(loaded), with_cache=True)
    out = tmp_path_factory.mktemp(variant)
    export_graph(loaded.model, spec, out, fp16=False)
    model = onnx.load(str(out / "model.onnx"))   # weights read in: the rewrites build new files from it
    return loaded, spec, model


def run(model: onnx.ModelProto, feed: dict) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def feeds(spec):
    for sizes in SIZES:
        yield {k: v.numpy() for k, v in spec.make_inputs(sizes).items()}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return exported(tmp_path_factory, "LLAMA", "llama-tiny")


@pytest.mark.parametrize("family, variant", [("GPT2", "gpt2-tiny"), ("LLAMA", "qwen2-tiny")])
def test_folded_shape_arithmetic_gives_the_same_bits_with_fewer_nodes(tmp_path_factory, family, variant):
    _, spec, plain = exported(tmp_path_factory, family, variant)
    folded = copy.deepcopy(plain)
    assert fold_shape_arithmetic(folded) > 0
    shape_ops = lambda m: sum(n.op_type in ("Shape", "Gather", "Unsqueeze", "Concat") for n in m.graph.node)
    assert len(folded.graph.node) < 0.8 * len(plain.graph.node) and shape_ops(folded) < shape_ops(plain) / 2
    for feed in feeds(spec):
        want, got = run(plain, feed), run(folded, feed)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_rotary_embeddings_fuse_to_one_node_each_and_match(llama):
    loaded, spec, plain = llama
    fused = copy.deepcopy(plain)
    fold_shape_arithmetic(fused)   # first, as ort_optimized does: rotate_half's slice bounds become constants
    cos, sin = rotary_tables(loaded.model, loaded.max_positions)
    layers = loaded.config.num_hidden_layers
    assert fuse_rotary(fused, cos, sin) == 2 * layers     # each layer's queries and keys
    assert sum(n.op_type == "RotaryEmbedding" for n in fused.graph.node) == 2 * layers
    assert not any(n.op_type == "Neg" for n in fused.graph.node)   # every rotate_half is gone
    for feed in feeds(spec):
        want, got = run(plain, feed), run(fused, feed)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=name)


def test_a_wrong_rotary_table_is_caught(llama):
    """A table that rotates the wrong way (sin negated) moves the outputs far beyond the tolerance
    the model's own table meets. (A table shifted by a constant number of positions would not
    show: attention sees only relative rotary positions.)"""
    loaded, spec, plain = llama
    cos, sin = rotary_tables(loaded.model, loaded.max_positions)
    wrong = copy.deepcopy(plain)
    fold_shape_arithmetic(wrong)
    assert fuse_rotary(wrong, cos, -sin) > 0
    feed = next(feeds(spec))
    want, got = run(plain, feed), run(wrong, feed)
    assert np.abs(got["logits"] - want["logits"]).max() > 1e-2


def test_graphs_without_rotary_or_position_ids_are_left_alone(tmp_path_factory):
    _, _, plain = exported(tmp_path_factory, "GPT2", "gpt2-tiny")
    before = len(plain.graph.node)
    assert fuse_rotary(plain, np.zeros((8, 4), np.float32), np.zeros((8, 4), np.float32)) == 0
    assert len(plain.graph.node) == before
