"""VIT (issue 17): parity with PyTorch at batch sizes other than the trace's, answers equal to the
image-classification pipeline's, the parser matrix, the trt stand-in (a batch sweep through one
dynamic profile), int8, and the actions through run.py, bad input included."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest

from conftest import ROOT
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported
from NNDF.kinds.encoder_only.answers import predict
from NNDF.kinds.encoder_only.data import dataset
from NNDF.kinds.encoder_only.graphs import encoder_spec
from NNDF.kinds.encoder_only.inputs import encode
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family
from test_cli import call
from trt_standin.onnx_support import parser_problems
from NNDF.kinds.makers import make_backends

VIT = get_family("VIT")
SAMPLE = ROOT / "VIT" / "data" / "shapes_test.jsonl"


@pytest.fixture(scope="module")
def vit(workdir):
    return VIT.load(parse_args(["run", "VIT", "frameworks", "--working-dir", str(workdir.root)]))


def backends(vit, workdir, *names, flags=()):
    cfg = parse_args(["run", "VIT", *names, "--working-dir", str(workdir.root), *flags])
    return make_backends(VIT, vit, cfg, workdir)


def test_tiny_vit_classifies_shapes_and_has_learned_something(vit, workdir):
    assert vit.task is Task.IMAGE_CLASSIFICATION and vit.labels == ["circle", "square", "triangle", "cross"]
    assert vit.image_size == (32, 32)
    rows = dataset(vit, SAMPLE)
    fw, = backends(vit, workdir, "frameworks")
    batch = encode(vit, rows)
    answers = predict(vit, batch, fw.forward(batch.feed))
    assert np.mean([a["label"] == r["label"] for a, r in zip(answers, rows)]) >= 0.5   # chance is 0.25


def test_onnxrt_matches_pytorch_at_other_batch_sizes(vit, workdir):
    """onnxrt (the plain export) and the fused graph its int8 starts from (Attention fused: ViT's
    export divides the scores, the form ONNX Runtime's fusion matches) agree with PyTorch."""
    from NNDF.runtime.ort_session import OrtSession
    from test_bert_family import fused_graph

    fw, ort = backends(vit, workdir, "frameworks", "onnxrt")
    fused = OrtSession(fused_graph(workdir, vit, VIT))
    rng = np.random.default_rng(0)
    for batch in (1, 3, 5):   # traced at 2
        feed = {"pixel_values": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
        want = fw.forward(feed)["logits"]
        assert np.max(np.abs(want - ort.forward(feed)["logits"])) < 1e-4
        assert np.max(np.abs(want - fused.infer(feed)["logits"])) < 1e-4


def test_answers_equal_the_image_classification_pipeline(vit, workdir):
    import transformers
    from PIL import Image

    processor = transformers.ViTImageProcessorPil(size={"height": 32, "width": 32})
    pipe = transformers.pipeline("image-classification", model=vit.model, image_processor=processor, device="cpu")
    rows = dataset(vit, SAMPLE)
    _, ort = backends(vit, workdir, "frameworks", "onnxrt")
    batch = encode(vit, rows)
    ours = predict(vit, batch, ort.forward(batch.feed))
    for answer, row in zip(ours, rows):
        theirs = pipe(Image.open(row["image"]), top_k=4)
        assert answer["label"] == theirs[0]["label"] and answer["score"] == pytest.approx(theirs[0]["score"], abs=1e-4)
        assert answer["top"] == [t["label"] for t in theirs]


def test_trt_graphs_pass_the_parser_matrix(vit, workdir):
    from NNDF.export.quantize import trt_calibrated_int8
    from NNDF.kinds.encoder_only.inputs import calibration_feeds

    spec = encoder_spec(vit)
    for fp16 in (False, True):
        art = exported(workdir, artifact_subdir(VIT, vit), vit.model, spec, vit.source_key, fp16)
        assert not parser_problems(art.file(MODEL_FILE)), fp16
    plain = exported(workdir, artifact_subdir(VIT, vit), vit.model, spec, vit.source_key, False).file(MODEL_FILE)
    qdq = trt_calibrated_int8(plain, calibration_feeds(vit), workdir, workdir.artifact_dir(*artifact_subdir(VIT, vit), "onnx"))
    assert not parser_problems(qdq)


def test_trt_standin_run_and_batch_sweep(standin, capsys, workdir, tmp_path):
    wd, out_file = str(workdir.root), tmp_path / "r.json"
    code, out, err = call(capsys, "compare", "VIT", "frameworks", "trt", "--working-dir", wd, "--iterations", "1",
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    assert all(ex["same_as_frameworks"] for ex in results["trt"]["examples"].values())
    code, out, err = call(capsys, "benchmark", "VIT", "frameworks", "trt", "--working-dir", wd, "--batch-sweep", "1,4",
                          "--iterations", "2", "--warmup", "1", "--save-output-fpath", str(out_file))
    assert code == 0, err
    trt = json.loads(out_file.read_text())["results"]["trt"]["batch_sizes"]
    assert trt["4"]["max_abs_diff_to_frameworks"] < 1e-4 and trt["1"]["samples_per_second"] > 0
    assert standin._errors == [] and standin._warnings == []


@pytest.mark.parametrize("backend", ["onnxrt", "trt"])
def test_int8_reports_its_top1_delta(standin, capsys, workdir, tmp_path, backend):
    out_file = tmp_path / "acc.json"
    code, out, err = call(capsys, "accuracy", "VIT", backend, "--quantize", "int8", "--working-dir", str(workdir.root),
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    r = json.loads(out_file.read_text())["results"][backend]
    assert r["precision"] == "int8" and abs(r["delta_to_fp32"]["top_1"]) <= 0.125
    assert r["delta_to_fp32"]["same_answers"] >= 14


def test_run_with_image_and_chat(capsys, vit, workdir, tmp_path):
    from NNDF.actions import encoder

    out_file = tmp_path / "r.json"
    code, out, err = call(capsys, "run", "VIT", "onnxrt", "--working-dir", str(workdir.root), "--iterations", "1",
                          "--image", str(ROOT / "VIT" / "images" / "cross_3.png"), "--save-output-fpath", str(out_file))
    assert code == 0, err
    example = json.loads(out_file.read_text())["results"]["onnxrt"]["examples"]["image"]
    assert example["output"] in vit.labels and example["match"] is None
    cfg = parse_args(["chat", "VIT", "frameworks", "onnxrt", "--working-dir", str(workdir.root)])
    made = make_backends(VIT, vit, cfg, workdir)
    lines = "images/circle_0.png\nnot-there.png\nimages/square_1.png\nexit\n"
    text = io.StringIO()
    result = encoder.converse(cfg, vit, made, stdin=io.StringIO(lines), out=text)
    assert len(result["turns"]) == 2 and "error: image file not-there.png does not exist" in text.getvalue()
    for turn in result["turns"]:
        assert turn["outputs"]["frameworks"]["output"] == turn["outputs"]["onnxrt"]["output"]


@pytest.mark.parametrize("argv,needle", [
    (["run", "VIT", "onnxrt", "--image", "{not_an_image}"], "not an image file"),
    (["accuracy", "VIT", "onnxrt", "--dataset-path", "{wrong_class}"], "not one of vit-tiny-shapes's classes"),
    (["serve", "VIT", "onnxrt"], "encoder family"),
])
def test_bad_input_is_one_error_line(capsys, workdir, tmp_path, argv, needle):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"image": str(ROOT / "VIT" / "images" / "circle_0.png"), "label": "hexagon"}) + "\n")
    argv = [a.format(not_an_image=not_image, wrong_class=wrong) for a in argv] + ["--working-dir", str(workdir.root)]
    code, out, err = call(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert needle in errors[0], errors[0]


def test_a_batch_sweep_outside_the_dynamic_batch_range_is_one_line(standin, capsys, workdir):
    code, out, err = call(capsys, "benchmark", "VIT", "trt", "--working-dir", str(workdir.root), "--dynamic-batch",
                          "--max-dynamic-batch", "2", "--batch-sweep", "1,4")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "outside the dynamic batch range [1, 2]" in errors[0], err


def test_a_saved_model_loads_from_torch_dir_without_tokenizer_files(vit, workdir, tmp_path):
    """An image model's folder has config.json and weights only; it loads with its head and classes
    and answers as the model it was saved from; a folder without weights is one line."""
    vit.model.save_pretrained(str(tmp_path / "saved"))
    cfg = parse_args(["run", "VIT", "frameworks", "--torch-dir", str(tmp_path / "saved"),
                      "--working-dir", str(workdir.root)])
    loaded = VIT.load(cfg)
    assert loaded.task is Task.IMAGE_CLASSIFICATION and loaded.labels == vit.labels and loaded.tokenizer is None
    rows = dataset(vit, SAMPLE)[:4]
    feed = encode(vit, rows).feed
    want = make_backends(VIT, vit, cfg, workdir)[0].forward(feed)["logits"]
    got = make_backends(VIT, loaded, cfg, workdir)[0].forward(feed)["logits"]
    np.testing.assert_allclose(got, want, atol=1e-6)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    with pytest.raises(UsageError, match="could not load a VIT model from --torch-dir"):
        VIT.load(parse_args(["run", "VIT", "frameworks", "--torch-dir", str(tmp_path / "empty")]))
