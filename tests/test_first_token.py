"""Classification graphs run their last layer for the first token only (NNDF/export/first_token.py):
the same answers as the model's whole forward, at shapes other than the trace's with padding on
either side, for each architecture; the exported graph really does the smaller work; heads that
read every token keep the whole layer; and export verification catches a wrong last layer."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
import transformers

from NNDF.export.first_token import LastLayer
from NNDF.export.onnx_export import MODEL_FILE, exported
from NNDF.kinds.encoder_only.graphs import EXPORT_ATTENTION, EncoderWrapper, encoder_spec
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.family import Variant
from NNDF.registry import get_family
from NNDF.runtime.ort_session import OrtSession
from trt_standin.onnx_support import parser_problems

BERT, VIT = get_family("BERT"), get_family("VIT")
SMALL = dict(num_hidden_layers=2, num_attention_heads=4, hidden_size=32, intermediate_size=64, vocab_size=120)


def build(kind: str, task_class: str = "ForSequenceClassification"):
    """A random two-layer model of `kind`, loaded as the family loads a checkpoint."""
    torch.manual_seed(0)
    if kind == "distilbert":
        config = transformers.DistilBertConfig(n_layers=2, n_heads=4, dim=32, hidden_dim=64, vocab_size=120)
        model, family = getattr(transformers, "DistilBert" + task_class)(config), BERT
    elif kind == "bert":
        config = transformers.BertConfig(**SMALL)
        model, family = getattr(transformers, "Bert" + task_class)(config), BERT
    else:
        config = transformers.ViTConfig(**{k: v for k, v in SMALL.items() if k != "vocab_size"},
                                        image_size=16, patch_size=4, num_labels=3)
        model, family = transformers.ViTForImageClassification(config), VIT
    return family, family._finish(Variant(f"{kind}-first-token-test"), model, None, {"test": kind})


def feed_for(loaded, batch: int, seq: int) -> dict[str, torch.Tensor]:
    """Random inputs; with several rows, the first is right-padded and the last left-padded, so
    one row's first token is itself padding (as HF computes it, the head still reads it)."""
    gen = torch.Generator().manual_seed(batch * 100 + seq)
    if loaded.is_image:
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=gen)}
    mask = torch.ones(batch, seq, dtype=torch.int64)
    if batch > 1:
        mask[0, seq - 3:] = 0
        mask[-1, :2] = 0
    feed = {"input_ids": torch.randint(0, 120, (batch, seq), generator=gen), "attention_mask": mask}
    if loaded.layout.uses_token_types:
        feed["token_type_ids"] = (torch.arange(seq) >= seq // 2).long().expand(batch, seq).contiguous()
    return feed


@pytest.mark.parametrize("kind", ["distilbert", "bert", "vit"])
def test_first_token_last_layer_gives_the_models_own_logits(kind):
    """In PyTorch, with the export's attention and with the model's own (SDPA)."""
    _, loaded = build(kind)
    spec = encoder_spec(loaded)
    for attention in (loaded.layout.export_attention, None):
        whole = EncoderWrapper(loaded.model, loaded.task, spec.input_names, attention)
        first = EncoderWrapper(loaded.model, loaded.task, spec.input_names, attention, loaded.layout.last_layer)
        for batch, seq in ((1, 5), (3, 11), (4, 17)):
            feed = feed_for(loaded, batch, seq)
            with torch.inference_mode():
                want, got = whole(*feed.values()), first(*feed.values())
            assert want.shape == got.shape
            assert torch.max(torch.abs(want - got)) < 1e-5, (kind, attention, batch, seq)


def one_token_matmuls(path, feed: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    """How many of the graph's rank-3 MatMuls ([batch, tokens, features]) run on one token at
    this feed, read from the graph run with every MatMul output exposed; and the graph's outputs."""
    proto = onnx.load(str(path))
    matmuls = [n.output[0] for n in proto.graph.node if n.op_type == "MatMul"]
    declared = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                              for name in matmuls if name not in declared)
    exposed = path.with_name("exposed.onnx")
    onnx.save_model(proto, str(exposed))
    out = OrtSession(exposed).infer(feed)
    return sum(out[name].ndim == 3 and out[name].shape[1] == 1 for name in matmuls), out


@pytest.mark.parametrize("kind", ["distilbert", "bert", "vit"])
def test_exported_classifier_computes_its_last_layer_for_one_token(workdir, kind):
    """The query, output projection and both feed-forward MatMuls of the last layer see one token;
    the graph's logits equal PyTorch's whole forward at a shape other than the trace's; TensorRT's
    parser takes the graph."""
    family, loaded = build(kind)
    spec = encoder_spec(loaded)
    path = exported(workdir, ("first-token", kind), loaded.model, spec, loaded.source_key, False).file(MODEL_FILE)
    assert not parser_problems(path)
    feed = feed_for(loaded, 3, 13)
    count, out = one_token_matmuls(path, {k: v.numpy() for k, v in feed.items()})
    assert count == 4
    with torch.inference_mode():
        want = loaded.model(**feed).logits.numpy()
    assert np.max(np.abs(out["logits"] - want)) < 1e-4


def test_heads_reading_every_token_keep_the_whole_last_layer(workdir):
    family, loaded = build("bert", "ForQuestionAnswering")
    assert loaded.task is Task.QUESTION_ANSWERING
    spec = encoder_spec(loaded)
    path = exported(workdir, ("first-token", "qa"), loaded.model, spec, loaded.source_key, False).file(MODEL_FILE)
    count, out = one_token_matmuls(path, {k: v.numpy() for k, v in feed_for(loaded, 2, 9).items()})
    assert count == 0 and out["start_logits"].shape == (2, 9)


def test_export_verification_catches_a_wrong_last_layer(workdir):
    """Verification compares the graph with the model's whole forward, not with the module it
    traced: a first-token layer that skips the feed-forward is refused at export."""
    _, loaded = build("distilbert")
    skip_ffn = LastLayer("transformer.layer", lambda layer, hidden, mask: layer.output_layer_norm(hidden[:, :1]))
    broken = replace(loaded, layout=replace(loaded.layout, last_layer=skip_ffn))
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        exported(workdir, ("first-token", "broken"), broken.model, encoder_spec(broken), {"broken": 1}, False)
