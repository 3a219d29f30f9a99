"""T5, Flan-T5, BART and mBART tiny variants: the three graphs and onnxrt generation must
reproduce PyTorch at shapes other than the trace shapes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT
from NNDF.actions.accuracy import SHIPPED_SAMPLE, evaluate, load_texts
from NNDF.base.config import GenerationSettings
from NNDF.cli import parse_args
from NNDF.export.onnx_export import MODEL_FILE, exported, verify_graph
from NNDF.kinds.encoder_decoder.graphs import graph_specs
from NNDF.kinds.makers import make_backends
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family

VARIANTS = [("T5", "t5-tiny"), ("T5", "flan-t5-tiny"), ("BART", "bart-tiny"), ("BART", "mbart-tiny")]
PROMPTS = ["translate English to German: The house is wonderful.", "cola sentence: The course is jumping well.",
           "summarize: A storm cut the power to the island, but the lighthouse stayed lit all night because the "
           "keeper ran the old generator by hand."]


def _cfg(workdir, family, variant, *flags, backends=("frameworks",)):
    return parse_args(["run", family, *backends, "--variant", variant, "--working-dir", str(workdir.root), *flags])


@pytest.fixture(scope="module", params=VARIANTS, ids=[v for _, v in VARIANTS])
def tiny(request, workdir):
    family_name, variant = request.param
    family = get_family(family_name)
    return family, family.load(_cfg(workdir, family_name, variant))


@pytest.fixture(scope="module")
def batch(tiny):
    _, loaded = tiny
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)  # right-padded, as tokenizers do
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _backends(tiny, workdir, use_cache):
    family, loaded = tiny
    flags = ("--use-cache",) if use_cache else ()
    cfg = _cfg(workdir, family.name, loaded.variant, *flags, backends=("frameworks", "onnxrt"))
    return make_backends(family, loaded, cfg, workdir)


def test_every_graph_matches_torch_away_from_trace_shapes(tiny, workdir):
    family, loaded = tiny
    specs = graph_specs(loaded.model, family.layout(loaded))
    cases = {
        "encoder": [{"batch": 1, "enc_seq": 1}, {"batch": 3, "enc_seq": 23}],
        "cache_generator": [{"batch": 1, "enc_seq": 1}, {"batch": 4, "enc_seq": 31}],
        "decoder": [{"batch": 1, "seq": 1, "past_len": 0, "enc_seq": 9}, {"batch": 3, "seq": 1, "past_len": 1, "enc_seq": 4},
                    {"batch": 3, "seq": 1, "past_len": 37, "enc_seq": 15}, {"batch": 1, "seq": 6, "past_len": 2, "enc_seq": 3}],
        "decoder_nocache": [{"batch": 1, "seq": 1, "enc_seq": 2}, {"batch": 3, "seq": 12, "enc_seq": 21}],
    }
    for name, spec in specs.items():
        art = exported(workdir, artifact_subdir(family, loaded), loaded.model, spec, loaded.source_key, fp16=False)
        for sizes in cases[name]:
            assert verify_graph(loaded.model, spec, art.file(MODEL_FILE), sizes, tolerance=1e-4) <= 1e-4 * 100


def test_tiny_models_answer_rather_than_repeat(tiny, batch, workdir):
    """Token parity on a model that repeats one token would prove little."""
    fw, _ = _backends(tiny, workdir, True)
    tokens = fw.generate(*batch, GenerationSettings(max_new_tokens=20)).tokens
    for row in tokens:
        assert len(set(row.tolist())) >= 3
    _, loaded = tiny
    text = loaded.tokenizer.decode(tokens[0], skip_special_tokens=True)
    assert text.startswith("Das Haus ist wunderbar")


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_tokens_identical_to_hf_generate(tiny, batch, workdir, use_cache, num_beams):
    fw, ort = _backends(tiny, workdir, use_cache)
    settings = GenerationSettings(max_new_tokens=16, num_beams=num_beams, use_cache=use_cache)
    for ids, mask in ((batch[0][1:2, :], batch[1][1:2, :]), batch):   # batch 1, then 3 with padding
        keep = mask.sum(0) > 0
        want = fw.generate(ids[:, keep], mask[:, keep], settings).tokens
        np.testing.assert_array_equal(ort.generate(ids[:, keep], mask[:, keep], settings).tokens, want)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_teacher_forced_logits_and_perplexity(tiny, workdir, use_cache):
    family, loaded = tiny
    fw, ort = _backends(tiny, workdir, use_cache)
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)
    start = loaded.generation_defaults["decoder_start_token_id"]
    decoder = np.concatenate([np.full((3, 1), start), enc["input_ids"][:, :7]], axis=1)
    want = fw.logits(enc["input_ids"], enc["attention_mask"], decoder)
    got = ort.logits(enc["input_ids"], enc["attention_mask"], decoder)
    assert np.abs(want - got).max() <= 1e-4
    texts = load_texts(SHIPPED_SAMPLE, 4)
    a, b = evaluate(fw, loaded, texts, 5, [1, 10]), evaluate(ort, loaded, texts, 5, [1, 10])
    assert abs(a["token_perplexity"] - b["token_perplexity"]) <= 1e-3 * a["token_perplexity"]
    assert a["top_n"] == b["top_n"]


def test_run_and_benchmark_through_the_cli(tiny, workdir, tmp_path, capsys):
    import json

    import run as run_py

    family, loaded = tiny
    out = tmp_path / "run.json"
    code = run_py.main(["run", family.name, "frameworks", "onnxrt", "--variant", loaded.variant, "--use-cache",
                        "--working-dir", str(workdir.root), "--iterations", "1", "--batch-size", "2", "--use-mask",
                        "--save-output-fpath", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads(out.read_text())["results"]
    for name, ex in results["frameworks"]["examples"].items():
        assert ex["output"] == results["onnxrt"]["examples"][name]["output"]
    assert results["frameworks"]["accuracy"] >= 0.5   # the tiny models learned these pairs
    bench = tmp_path / "bench.json"
    code = run_py.main(["benchmark", family.name, "frameworks", "onnxrt", "--variant", loaded.variant, "--use-cache",
                        "--working-dir", str(workdir.root), "--iterations", "2", "--warmup", "0",
                        "--input-seq-len", "10", "--output-seq-len", "6", "--save-output-fpath", str(bench)])
    assert code == 0, capsys.readouterr().err
    for r in json.loads(bench.read_text())["results"].values():
        assert r["encoder_latency_s"] > 0 and r["decoder_latency_s"] > 0 and r["full_latency_s"] > 0
        assert r["new_tokens"] == 6


@pytest.mark.parametrize("variant", ["t5-tiny", "flan-t5-tiny"])
def test_t5_fp16_graph_keeps_fragile_parts_fp32_and_matches_fp32(workdir, variant):
    """T5's feed-forward outputs and RMS norms stay fp32 inside the fp16 graphs; greedy output
    of the fp16 graphs equals the fp32 reference."""
    import onnx

    family = get_family("T5")
    cfg = _cfg(workdir, "T5", variant, "--use-cache", "--fp16", backends=("frameworks", "onnxrt"))
    loaded = family.load(cfg)
    fw, ort = make_backends(family, loaded, cfg, workdir)
    decoder_file = ort.steps.session._session._model_path
    graph = onnx.load(decoder_file, load_external_data=False).graph
    halves = [i for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    wo = [i for i in graph.initializer if "DenseReluDense.wo" in i.name]
    assert halves and wo and all(i.data_type == onnx.TensorProto.FLOAT for i in wo)
    enc = loaded.tokenizer(PROMPTS, return_tensors="np", padding=True)
    settings = GenerationSettings(max_new_tokens=16, use_cache=True)
    want = fw.generate(enc["input_ids"], enc["attention_mask"], settings).tokens
    np.testing.assert_array_equal(ort.generate(enc["input_ids"], enc["attention_mask"], settings).tokens, want)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_forced_first_and_last_tokens_match_hf(tiny, batch, workdir, num_beams):
    """BART forces EOS at the last position and mBART-50 a language token first: the loop
    must apply both as HF does, after (and over) the min-length rule."""
    from dataclasses import replace

    fw, ort = _backends(tiny, workdir, True)
    original = fw.token_ids
    forced = replace(original, forced_bos=7, forced_eos=original.eos)
    fw.token_ids = ort.token_ids = forced
    try:
        for settings in (GenerationSettings(max_new_tokens=6, num_beams=num_beams),
                         GenerationSettings(max_new_tokens=6, min_new_tokens=6, num_beams=num_beams)):
            want = fw.generate(*batch, settings).tokens
            np.testing.assert_array_equal(ort.generate(*batch, settings).tokens, want)
            assert (want[:, 0] == 7).all() and (want[:, -1] == original.eos).all()
    finally:
        fw.token_ids = ort.token_ids = original


def test_prebuilt_onnx_files_are_used_and_checked(workdir, tmp_path, capsys):
    """--encoder-onnx, --cache-generator-onnx and --decoder-onnx are used as given; a file
    with another graph's inputs and outputs is refused in one line."""
    import shutil

    import run as run_py

    family = get_family("T5")
    loaded = family.load(_cfg(workdir, "T5", "t5-tiny"))
    specs = graph_specs(loaded.model, family.layout(loaded))
    given = {}
    for name in ("encoder", "cache_generator", "decoder"):
        art = exported(workdir, artifact_subdir(family, loaded), loaded.model, specs[name], loaded.source_key, False)
        given[name] = tmp_path / name
        shutil.copytree(art.path, given[name])
    fresh = tmp_path / "fresh-workdir"
    flags = ["run", "T5", "onnxrt", "--use-cache", "--iterations", "1", "--working-dir", str(fresh),
             "--encoder-onnx", str(given["encoder"] / MODEL_FILE),
             "--cache-generator-onnx", str(given["cache_generator"] / MODEL_FILE)]
    assert run_py.main(flags + ["--decoder-onnx", str(given["decoder"] / MODEL_FILE)]) == 0, capsys.readouterr().err
    assert not list(fresh.glob("**/*.onnx"))        # nothing was exported: the given files were used
    assert run_py.main(flags + ["--decoder-onnx", str(given["encoder"] / MODEL_FILE)]) == 2
    assert "does not look like a decoder graph" in capsys.readouterr().err
