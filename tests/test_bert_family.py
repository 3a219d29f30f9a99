"""BERT / DistilBERT (issue 17): graph parity at shapes other than the trace's with padded rows,
answers equal to HF pipelines', the trt stand-in, TensorRT's parser matrix, fp16, int8 with its
accuracy delta, and the actions through run.py, bad input included."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest

from conftest import ROOT
from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported, run_torch
from NNDF.kinds.encoder_only.answers import predict
from NNDF.kinds.encoder_only.data import dataset
from NNDF.kinds.encoder_only.graphs import encoder_spec
from NNDF.kinds.encoder_only.inputs import encode
from NNDF.kinds.encoder_only.tasks import Task
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family
from NNDF.runtime.ort_session import OrtSession
from test_cli import call
from trt_standin.onnx_support import parser_problems
from NNDF.kinds.makers import make_backends

BERT = get_family("BERT")
TINY = {"distilbert-tiny-sst2": Task.SEQUENCE_CLASSIFICATION, "bert-tiny-squad": Task.QUESTION_ANSWERING,
        "bert-tiny-ner": Task.TOKEN_CLASSIFICATION, "minilm-tiny-embeddings": Task.EMBEDDINGS}
_loaded = {}


def load(workdir, variant: str):
    if variant not in _loaded:
        _loaded[variant] = BERT.load(parse_args(["run", "BERT", "frameworks", "--variant", variant,
                                                 "--working-dir", str(workdir.root)]))
    return _loaded[variant]


def backends(workdir, variant: str, *names: str, flags: tuple[str, ...] = ()):
    cfg = parse_args(["run", "BERT", *names, "--variant", variant, "--working-dir", str(workdir.root), *flags])
    return make_backends(BERT, load(workdir, variant), cfg, workdir)


def padded_feed(loaded, batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    """Rows of different real lengths, right-padded (BERT's tokenizers pad on the right)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, loaded.config.vocab_size, size=(batch, seq))
    mask = np.ones((batch, seq), np.int64)
    for row in range(batch):
        mask[row, seq - row * 2:] = 0 if row else 1
    feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask}
    if loaded.layout.uses_token_types:
        types = np.zeros_like(ids)
        types[:, seq // 2:] = 1
        feed["token_type_ids"] = types.astype(np.int64)
    return feed


@pytest.mark.parametrize("variant", list(TINY))
def test_each_tiny_variant_has_its_head(workdir, variant):
    loaded = load(workdir, variant)
    assert loaded.task is TINY[variant]
    assert loaded.config.model_type == ("distilbert" if variant.startswith("distilbert") else "bert")


@pytest.mark.parametrize("variant", list(TINY))
def test_graphs_match_pytorch_at_other_shapes_with_padded_rows(workdir, variant):
    """Export traces batch 2 x 7 tokens; frameworks (SDPA attention), onnxrt (the plain export) and
    the fused graph int8 starts from agree within 1e-4 at batch 1-4 and lengths 5-19, padded rows included."""
    fw, ort = backends(workdir, variant, "frameworks", "onnxrt")
    loaded = load(workdir, variant)
    fused = OrtSession(fused_graph(workdir, loaded))
    for batch, seq in ((1, 5), (3, 11), (4, 19)):
        feed = padded_feed(loaded, batch, seq, seed=batch * seq)
        want = fw.forward(feed)
        for graph, got in (("onnxrt", ort.forward(feed)), ("fused", fused.infer(feed))):
            for name in want:
                assert want[name].shape == got[name].shape
                diff = np.abs(want[name] - got[name])
                if name != "logits" or loaded.task is Task.TOKEN_CLASSIFICATION:   # per token: the real ones
                    diff = diff[feed["attention_mask"].astype(bool)] if name != "embeddings" else diff
                assert np.max(diff) < 1e-4, (variant, graph, name, batch, seq)


def fused_graph(workdir, loaded, family=BERT):
    """ONNX Runtime's fused form of the export (what onnxrt's int8 quantizes), with its Attention fused."""
    from NNDF.export.onnx_export import ort_optimized

    plain = exported(workdir, artifact_subdir(family, loaded), loaded.model, encoder_spec(loaded), loaded.source_key,
                     False).file(MODEL_FILE)
    path = ort_optimized(plain, loaded.layout.ort_fusions, loaded.config, workdir)
    assert any(n.op_type == "Attention" for n in onnx.load(str(path), load_external_data=False).graph.node)
    return path


def _ours_and_the_pipelines(workdir, variant: str, data: str, task: str):
    """(our onnxrt answers, the HF pipeline's answers) for the shipped test file `data`."""
    import transformers

    loaded = load(workdir, variant)
    rows = dataset(loaded, ROOT / "BERT" / "data" / data)
    _, ort = backends(workdir, variant, "frameworks", "onnxrt")
    batch = encode(loaded, rows)
    pipe = transformers.pipeline(task, model=loaded.model, tokenizer=loaded.tokenizer, device="cpu",
                                 **({"aggregation_strategy": "simple"} if task == "token-classification" else {}))
    return predict(loaded, batch, ort.forward(batch.feed)), [pipe(r["text"]) for r in rows]


def test_classification_equals_the_text_classification_pipeline(workdir):
    ours, theirs = _ours_and_the_pipelines(workdir, "distilbert-tiny-sst2", "sentiment_test.jsonl", "text-classification")
    for a, t in zip(ours, theirs):
        assert a["label"] == t[0]["label"] and a["score"] == pytest.approx(t[0]["score"], abs=1e-4)


def test_entities_equal_the_token_classification_pipeline(workdir):
    ours, theirs = _ours_and_the_pipelines(workdir, "bert-tiny-ner", "ner_test.jsonl", "token-classification")
    assert sum(len(t) for t in theirs) > 10    # the shipped sentences do have entities
    for a, t in zip(ours, theirs):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in a["entities"]] == \
            [(e["entity_group"], e["word"], e["start"], e["end"]) for e in t]
        assert [e["score"] for e in a["entities"]] == pytest.approx([float(e["score"]) for e in t], abs=1e-4)


@pytest.mark.parametrize("model", ["model", "model-random"])
def test_question_answering_equals_the_question_answering_pipeline(workdir, model):
    """transformers 5 has no question-answering pipeline: tests/fixtures/qa_pipeline holds 4.57.1's
    answers to 46 questions (the shipped ones, and some with words the vocabulary splits) for two saved
    models, the tiny trained one and a seeded random one (whose arbitrary logits exercise the span rule:
    up to 15 context tokens, widened to whole words, equal texts' scores added). Ours, batched with
    padded rows, on frameworks and onnxrt, are the same spans with the same scores."""
    fixture = ROOT / "tests" / "fixtures" / "qa_pipeline"
    expected = json.loads((fixture / "expected.json").read_text())["answers"][model]
    cfg = parse_args(["run", "BERT", "frameworks", "onnxrt", "--torch-dir", str(fixture / model),
                      "--working-dir", str(workdir.root)])
    loaded = BERT.load(cfg)
    assert loaded.task is Task.QUESTION_ANSWERING
    rows = [{"question": e["question"], "context": e["context"]} for e in expected]
    batch = encode(loaded, rows)
    assert len(set(batch.feed["attention_mask"].sum(axis=1))) > 1       # rows of several lengths: padding
    assert len({len(e["answer"].split()) for e in expected}) > 4 or model == "model"
    for backend in make_backends(BERT, loaded, cfg, workdir):
        for ours, theirs in zip(predict(loaded, batch, backend.forward(batch.feed)), expected):
            assert (ours["answer"], ours["start"], ours["end"]) == (theirs["answer"], theirs["start"], theirs["end"]), \
                (backend.name, theirs["question"])
            assert ours["score"] == pytest.approx(theirs["score"], rel=1e-3, abs=1e-6)


def test_every_trt_graph_passes_the_parser_matrix(workdir):
    """The plain export TensorRT parses (fp32 and fp16) and the calibrated int8 QDQ graph."""
    from NNDF.export.quantize import trt_calibrated_int8
    from NNDF.kinds.encoder_only.inputs import calibration_feeds

    for variant in TINY:
        loaded = load(workdir, variant)
        spec = encoder_spec(loaded)
        for fp16 in (False, True):
            art = exported(workdir, artifact_subdir(BERT, loaded), loaded.model, spec, loaded.source_key, fp16)
            assert not parser_problems(art.file(MODEL_FILE)), (variant, fp16)
        qdq = trt_calibrated_int8(exported(workdir, artifact_subdir(BERT, loaded), loaded.model, spec, loaded.source_key,
                                           False).file(MODEL_FILE), calibration_feeds(loaded), workdir,
                                  workdir.artifact_dir(*artifact_subdir(BERT, loaded), "onnx"))
        proto = onnx.load(str(qdq), load_external_data=False)
        assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) >= 8
        assert not parser_problems(qdq), variant


def test_fp16_graph_stays_close_to_pytorch(workdir, tmp_path):
    from NNDF.export.onnx_export import export_graph

    loaded = load(workdir, "bert-tiny-squad")
    spec = encoder_spec(loaded)
    export_graph(loaded.model, spec, tmp_path, fp16=True)
    proto = onnx.load(str(tmp_path / MODEL_FILE), load_external_data=False)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    feed = spec.make_inputs({"batch": 3, "seq": 9})
    want = run_torch(spec.make_module(loaded.model).eval(), spec, feed)
    got = OrtSession(tmp_path / MODEL_FILE).infer({k: v.numpy() for k, v in feed.items()})
    for name in want:
        assert got[name].dtype == np.float32     # logits stay fp32 at the boundary
        assert np.max(np.abs(want[name] - got[name])) < 2e-2


def test_trt_standin_gives_frameworks_answers(standin, capsys, workdir, tmp_path):
    out_file = tmp_path / "run.json"
    for variant in TINY:
        code, out, err = call(capsys, "compare", "BERT", "frameworks", "trt", "--variant", variant, "--working-dir",
                              str(workdir.root), "--iterations", "1", "--warmup", "0", "--save-output-fpath", str(out_file))
        assert code == 0, err
        results = json.loads(out_file.read_text())["results"]
        assert results["trt"]["accuracy"] == results["frameworks"]["accuracy"]
        assert all(ex["same_as_frameworks"] for ex in results["trt"]["examples"].values()), variant
    assert standin._errors == [] and standin._warnings == []


@pytest.mark.parametrize("backend", ["onnxrt", "trt"])
def test_int8_accuracy_delta_is_reported_and_small(standin, capsys, workdir, tmp_path, backend):
    out_file = tmp_path / "acc.json"
    code, out, err = call(capsys, "accuracy", "BERT", backend, "--variant", "distilbert-tiny-sst2", "--quantize", "int8",
                          "--working-dir", str(workdir.root), "--batch-size", "4", "--save-output-fpath", str(out_file))
    assert code == 0, err
    result = json.loads(out_file.read_text())["results"]
    assert result[backend]["precision"] == "int8" and result["frameworks"]["precision"] == "fp32"
    delta = result[backend]["delta_to_fp32"]
    assert abs(delta["accuracy"]) <= 0.125 and delta["same_answers"] >= 14    # of 16 held-out sentences
    assert "int8 against frameworks" in out


def test_actions_write_the_documented_json(capsys, workdir, tmp_path):
    wd = str(workdir.root)
    out_file = tmp_path / "r.json"
    code, out, err = call(capsys, "run", "BERT", "frameworks", "onnxrt", "--variant", "bert-tiny-squad",
                          "--working-dir", wd, "--iterations", "2", "--save-output-fpath", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    example = data["results"]["onnxrt"]["examples"]["where"]
    assert example["output"] == "Paris" and example["match"] is True and example["samples_per_second"] > 0
    assert data["results"]["onnxrt"]["accuracy"] == 1.0

    code, out, err = call(capsys, "accuracy", "BERT", "frameworks", "onnxrt", "--variant", "bert-tiny-ner",
                          "--working-dir", wd, "--save-output-fpath", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    assert results["onnxrt"]["entity_f1"] == results["frameworks"]["entity_f1"] > 0

    code, out, err = call(capsys, "accuracy", "BERT", "onnxrt", "--variant", "minilm-tiny-embeddings",
                          "--working-dir", wd, "--save-output-fpath", str(out_file))
    assert code == 0, err
    assert json.loads(out_file.read_text())["results"]["onnxrt"]["cosine_min"] > 0.9999

    code, out, err = call(capsys, "benchmark", "BERT", "frameworks", "onnxrt", "--working-dir", wd,
                          "--input-seq-len", "16", "--batch-sweep", "1,3", "--iterations", "2", "--warmup", "1",
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    bench = json.loads(out_file.read_text())
    onnxrt = bench["results"]["onnxrt"]
    assert set(onnxrt["batch_sizes"]) == {"1", "3"} and onnxrt["samples_per_second"] > 0
    assert onnxrt["batch_sizes"]["3"]["max_abs_diff_to_frameworks"] < 1e-4
    assert bench["settings"]["batch_sweep"] == [1, 3] and "samples/s" in out


def test_chat_answers_questions_about_a_context_and_classifies_lines(workdir):
    from NNDF.actions import encoder

    for variant, lines, expected in (
            ("bert-tiny-squad", "Anna works as a baker for Acme . Anna lives in Paris and has a red car .\n"
                                "Where does Anna live ?\nWhat colour is the car of Anna ?\nexit\n", ["Paris", "red"]),
            ("distilbert-tiny-sst2", "What a great book , I enjoyed every page .\nexit\n", ["POSITIVE"])):
        cfg = parse_args(["chat", "BERT", "frameworks", "onnxrt", "--variant", variant, "--working-dir", str(workdir.root)])
        made = make_backends(BERT, load(workdir, variant), cfg, workdir)
        out = io.StringIO()
        result = encoder.converse(cfg, load(workdir, variant), made, stdin=io.StringIO(lines), out=out)
        assert [t["outputs"]["onnxrt"]["output"] for t in result["turns"]] == expected
        assert all(t["outputs"]["frameworks"]["output"] == t["outputs"]["onnxrt"]["output"] for t in result["turns"])


@pytest.mark.parametrize("argv,needle", [
    (["run", "BERT", "onnxrt", "--variant", "bert-tiny-squad", "--checkpoint", "{qa_without_context}"], "has no context"),
    (["run", "BERT", "onnxrt", "--image", "{image}"], "text family"),
    (["benchmark", "BERT", "onnxrt", "--torch-dir", "{multiple_choice}"], "BertForMultipleChoice head"),
    (["benchmark", "BERT", "onnxrt", "--batch-sweep", "1,x"], "batch-sweep"),
    (["accuracy", "BERT", "onnxrt", "--variant", "bert-tiny-squad", "--dataset-path", "{qa_rows_without_context}"],
     "no context"),
    (["run", "BERT", "onnxrt", "--quantize", "int4"], "encoders quantize to int8"),
    (["benchmark", "BERT", "onnxrt", "--batch-size", "1000000"], "lower --batch-size"),
    (["benchmark", "GPT2", "onnxrt", "--batch-sweep", "1,2"], "times encoder families"),
])
def test_bad_input_is_one_error_line(capsys, workdir, tmp_path, argv, needle):
    from transformers import BertConfig, BertForMultipleChoice

    checkpoint = tmp_path / "qa.toml"
    checkpoint.write_text('[BERT.all.default.all.q]\ninput = "Where does Anna live ?"\nlabel = "Paris"\n')
    rows = tmp_path / "qa.jsonl"
    rows.write_text('{"question": "Where?", "answers": ["x"]}\n')
    mc = tmp_path / "mc"
    BertForMultipleChoice(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)).save_pretrained(mc)
    paths = {"qa_without_context": checkpoint, "image": ROOT / "VIT" / "images" / "circle_0.png",
             "multiple_choice": mc, "qa_rows_without_context": rows}
    argv = [a.format(**paths) for a in argv] + ["--working-dir", str(workdir.root)]
    code, out, err = call(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert needle in errors[0], errors[0]


def test_python_api_predicts_like_run(workdir):
    from BERT.onnxrt import BERTOnnxRT

    ner = BERTOnnxRT(variant="bert-tiny-ner", working_dir=str(workdir.root))
    assert ner.predict(input="Anna Smith moved to Paris last year .")["label"] == "Anna Smith (PER), Paris (LOC)"
    qa = BERTOnnxRT(variant="bert-tiny-squad", working_dir=str(workdir.root))
    assert qa.predict(input="Where does Anna live ?",
                      context="Anna works as a baker for Acme . Anna lives in Paris and has a red car .")["label"] == "Paris"


def test_trt_standin_fp16_gives_frameworks_answers(standin, capsys, workdir, tmp_path):
    """The fp16 graph through the trt path (strongly typed: its precision is the graph's)."""
    out_file = tmp_path / "run.json"
    code, out, err = call(capsys, "compare", "BERT", "frameworks", "trt", "--fp16", "--variant", "bert-tiny-ner",
                          "--working-dir", str(workdir.root), "--iterations", "1", "--warmup", "0",
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    trt = json.loads(out_file.read_text())["results"]["trt"]
    assert trt["precision"] == "fp16" and all(ex["same_as_frameworks"] for ex in trt["examples"].values())
