"""checkpoint.toml in the original demo's format, and run/compare reporting what the demo reported.

tests/fixtures/demo_checkpoints/ holds the demo's own files (see the README there).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import ROOT, call, one_line_error
from NNDF.base.errors import UsageError
from NNDF.models.examples import load_examples, outputs_match

DEMO = ROOT / "tests" / "fixtures" / "demo_checkpoints"




# ------------------------------------------------------------------ the format, without a model
def test_default_tables_are_overridden_field_by_field():
    default = load_examples(DEMO / "GPT2.toml", "GPT2", "frameworks", ("gpt2", "gpt2"), "fp32")
    assert list(default) == ["generate", "generate_b", "generate_c", "generate_d"]
    gen = default["generate"]
    assert gen.inputs == ("TensorRT is a Deep Learning compiler used for deep learning.\n",)
    # the demo writes newlines as a literal \n inside ''' strings; they are newlines again
    assert gen.labels[0].startswith("TensorRT is a Deep Learning compiler used for deep learning.\n\nThe main goal")
    medium = load_examples(DEMO / "GPT2.toml", "GPT2", "onnxrt", ("gpt2-medium", "gpt2-medium"), "fp32")
    assert medium["generate"].inputs == gen.inputs                       # only the label is overridden
    assert "TensorRT is a deep learning library for Python" in medium["generate"].labels[0]
    fp16 = load_examples(DEMO / "GPT2.toml", "GPT2", "trt", ("gpt2", "gpt2"), "fp16")
    assert "a wide range of applications" in fp16["generate"].labels[0]  # [GPT2.all.default.fp16.generate]
    # a specific variant wins over the default precision table (the demo's order)
    assert load_examples(DEMO / "GPT2.toml", "GPT2", "trt", ("gpt2-medium",), "fp16")["generate"].labels == \
        medium["generate"].labels


def test_variants_match_exactly_by_name_or_hub_id():
    by_hub_id = load_examples(DEMO / "GPT2.toml", "GPT2", "frameworks", ("gpt-j-6b", "EleutherAI/gpt-j-6b"), "fp32")
    assert "enables you to run deep learning models on NVIDIA GPUs" in by_hub_id["generate"].labels[0]
    base = load_examples(DEMO / "GPT2.toml", "GPT2", "frameworks", ("gpt2",), "fp32")
    for near_miss in ("GPT2-medium", "gpt2-med", "gpt-j-6b"):
        assert load_examples(DEMO / "GPT2.toml", "GPT2", "frameworks", (near_miss,), "fp32") == base
    t5 = load_examples(DEMO / "T5.toml", "T5", "frameworks", ("t5-small", "t5-small"), "fp32")
    assert t5["cola_a"].labels == ("acceptable",) and t5["translate_a"].labels == ("Das ist gut.",)
    t5_base = load_examples(DEMO / "T5.toml", "T5", "frameworks", ("t5-base", "t5-base"), "fp32")
    assert t5_base["cola_a"].labels == ("unacceptable",) and t5_base["translate_a"].labels == ("Das ist gut so.",)


def test_a_list_input_is_one_batch_cycled_to_the_batch_size():
    ex = load_examples(DEMO / "BLOOM.toml", "BLOOM", "frameworks", ("bloom-560m", "bigscience/bloom-560m"),
                       "fp32")["generate_d"]
    assert ex.is_batch and len(ex.inputs) == 2 and ex.inputs[1].startswith("If I fall asleep")
    assert ex.rows(1) == ([ex.inputs[0]], [ex.labels[0]])
    assert ex.rows(3)[0] == [ex.inputs[0], ex.inputs[1], ex.inputs[0]]
    single = load_examples(DEMO / "BLOOM.toml", "BLOOM", "frameworks", ("bloom-tiny",), "fp32")["generate"]
    assert not single.is_batch and single.rows(2) == ([single.inputs[0]] * 2, [None, None])   # no label here


def test_the_demo_bart_file_loads_its_stray_table_ignored_as_the_demo_did(capsys):
    cnn = load_examples(DEMO / "BART.toml", "BART", "frameworks", ("bart-large-cnn", "facebook/bart-large-cnn"),
                        "fp32")
    assert cnn["summarization"].labels[0].startswith("TensorRT-based applications perform up to 36X faster")
    assert "Tensor RT also uses sparse tensor cores" in cnn["summarization"].labels[0]   # not the "native" one
    assert 'has no precision level' in capsys.readouterr().err


def test_exact_match_is_the_demos():
    assert outputs_match("Das ist gut.", "Das ist gut.")
    assert outputs_match("a\nb", "ab\n") and outputs_match("a\\nb", "ab")   # newlines do not count
    assert not outputs_match("Das ist gut. Ja", "Das ist gut.")          # a prefix is not a match
    assert not outputs_match("das ist gut.", "Das ist gut.")


@pytest.mark.parametrize("text, match", [
    ('[GPT2.all.default.all.x]\ninput = 3\nlabel = "a"\n', "[GPT2.all.default.all.x] needs 'input' as a string or a list of strings, but it is an integer"),
    ('[GPT2.all.default.all.x]\ninput = "a"\nlable = "a"\n', "[GPT2.all.default.all.x] has an unknown key 'lable'"),
    ('[GPT2.all.default.all.x]\ninput = [1, 2]\nlabel = "a"\n', "needs 'input' as a string or a list of strings, but it is an array"),
    ('[GPT2.all.default.all.x]\ninput = "a"\nlabel = "a"\nskip = "yes"\n', "needs 'skip' as a boolean, but it is a string"),
    ('[GPT2.all.default.all.x]\ninput = ["a", "b"]\nlabel = ["a"]\n', "has 2 inputs but 1 labels"),
    ('[GPT2.all.default.all.x]\nlabel = "a"\n', "[GPT2.all.default.all.x] has no input"),
    ('[GPT2.all.gpt2-tiny.all.x]\nlabel = "a"\n', "[GPT2.all.gpt2-tiny.all.x] has no input"),
    ('[T5.all.default.all.x]\ninput = "a"\nlabel = "a"\n', "table [T5...] is for T5, not GPT2"),
    ('[GPT2.pytorch.default.all.x]\ninput = "a"\nlabel = "a"\n', "unknown framework 'pytorch'"),
    ('[GPT2.all.default.fp8.x]\ninput = "a"\nlabel = "a"\n', "unknown precision 'fp8' in [GPT2.all.default.fp8"),
    ('[GPT2.all]\ndefault = 3\n', "[GPT2.all.default] must be a table, not an integer"),
    # tables of the wrong types: the message names the table; its wording is the loader's
    ("GPT2 = 5\n", "[GPT2]"),
    ('[GPT2.all.default]\nall = "x"\n', "[GPT2.all.default.all]"),
    ('[GPT2.all.default.all.x]\ninput = 5\nlabel = "a"\n', "[GPT2.all.default.all.x]"),
    ('[GPT2.all.default.all.x]\ninput = "a"\nlabel = [1, 2]\n', "[GPT2.all.default.all.x]"),
])
def test_bad_checkpoint_tables_are_one_line_naming_the_table(capsys, tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(match)):
        load_examples(path, "GPT2", "frameworks", ("gpt2-tiny",), "fp32")
    one_line_error(capsys, "run", "GPT2", "--checkpoint", str(path), "-wd", str(tmp_path / "w"), match=match)


# ------------------------------------------------------------------ the demo's files, run
@pytest.mark.parametrize("family, backends", [("GPT2", ("frameworks", "onnxrt")), ("OPT", ("frameworks",)),
                                              ("BLOOM", ("frameworks",)), ("T5", ("frameworks", "onnxrt"))])
def test_the_demo_checkpoint_files_run(capsys, workdir, tmp_path, family, backends):
    out_file = tmp_path / "r.json"
    code, out, err = call(capsys, "run", family, *backends, "--checkpoint", str(DEMO / f"{family}.toml"), "-kv",
                          "-wd", str(workdir.root), "--output-seq-len", "6", "--iterations", "1", "--warmup", "0",
                          "-o", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    for name, r in results.items():
        assert r["examples"] and r["device"] == "cpu" and r["precision"] == "fp32"
        for ex in r["examples"].values():
            assert isinstance(ex["output"], type(ex["input"])) and ex["full_latency_s"] > 0
            if ex["label"] is None:   # the demo's BLOOM file labels hub variants only
                assert family == "BLOOM" and ex["match"] is None and ex["label_perplexity"] is None
            else:
                # short answers ("entailment") are in t5-tiny's training pairs, so some may match
                assert isinstance(ex["match"], bool) and ex["label_perplexity"] >= 1
                rows = zip(*(x if isinstance(x, list) else [x] for x in (ex["output"], ex["label"])))
                assert ex["match"] == all(outputs_match(out, lab) for out, lab in rows)
    if len(backends) > 1:
        fw, ort = (results[b]["examples"] for b in backends)
        for name in fw:
            assert fw[name]["output"] == ort[name]["output"]
            assert fw[name]["log_perplexity"] == pytest.approx(ort[name]["log_perplexity"], abs=1e-4)


def test_the_demo_bart_file_with_bart_tiny_names_the_position_limit(capsys, workdir):
    one_line_error(capsys, "run", "BART", "--checkpoint", str(DEMO / "BART.toml"), "-wd", str(workdir.root),
        match="exceeds bart-tiny's 128 encoder positions")


# ------------------------------------------------------------------ what run and compare report
def test_label_perplexity_is_the_teacher_forced_cross_entropy(capsys, workdir, tmp_path, gpt2_tiny):
    ck = tmp_path / "ck.toml"
    ck.write_text('[GPT2.all.default.all.one]\ninput = "The lighthouse"\nlabel = "The lighthouse keeper was here"\n')
    out_file = tmp_path / "r.json"
    code, _, err = call(capsys, "run", "GPT2", "frameworks", "onnxrt", "--checkpoint", str(ck), "-wd",
                        str(workdir.root), "--iterations", "1", "--output-seq-len", "4", "-o", str(out_file))
    assert code == 0, err
    ids = torch.tensor([gpt2_tiny.tokenizer("The lighthouse keeper was here")["input_ids"]])
    with torch.no_grad():
        logits = gpt2_tiny.model(ids).logits[0, :-1]
    expected = min(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])), 12.0)
    for r in json.loads(out_file.read_text())["results"].values():
        assert r["examples"]["one"]["log_perplexity"] == pytest.approx(expected, abs=1e-4)
        assert r["label_perplexity"] == pytest.approx(min(math.exp(expected), 1e5), rel=1e-3)


def test_run_honours_the_timing_flags(capsys, workdir, tmp_path):
    out_file = tmp_path / "r.json"
    code, _, err = call(capsys, "run", "T5", "onnxrt", "-kv", "-wd", str(workdir.root), "--iterations", "3",
                        "--warmup", "1", "--number", "2", "--percentile", "90", "50", "-o", str(out_file))
    assert code == 0, err
    r = json.loads(out_file.read_text())["results"]["onnxrt"]
    assert r["percentile"] == 90
    for ex in r["examples"].values():
        assert ex["iterations"] == 3 and set(ex["percentiles"]) == {"90", "50"}
        assert ex["percentiles"]["90"]["full_latency_s"] >= ex["percentiles"]["50"]["full_latency_s"]
        assert ex["encoder_latency_s"] > 0 and ex["decoder_latency_s"] > 0
    assert r["encoder_latency_s"] == pytest.approx(np.mean([ex["encoder_latency_s"] for ex in r["examples"].values()]))
    code, _, err = call(capsys, "run", "T5", "onnxrt", "-kv", "-wd", str(workdir.root), "--iterations", "1",
                        "--warmup", "0", "--duration", "0.5", "-o", str(out_file))
    assert code == 0, err
    for ex in json.loads(out_file.read_text())["results"]["onnxrt"]["examples"].values():
        assert ex["iterations"] > 1   # --iterations 1, but it kept measuring until --duration passed


def test_compare_prints_an_example_table_and_a_latency_summary(capsys, workdir, tmp_path):
    out_file = tmp_path / "c.json"
    code, out, err = call(capsys, "compare", "T5", "--compare", "frameworks", "onnxrt", "-kv", "-wd",
                          str(workdir.root), "--iterations", "1", "-o", str(out_file))
    assert code == 0, err
    example_table, summary = out.strip().split("\n\n")[-2:]
    assert example_table.splitlines()[0].split()[:4] == ["example", "backend", "match", "label"]
    assert "encoder (ms)" in example_table and "DIFFERS" not in example_table
    assert summary.splitlines()[0].split()[:5] == ["backend", "device", "precision", "accuracy", "label"]
    data = json.loads(out_file.read_text())
    assert data["action"] == "compare" and set(data["results"]) == {"frameworks", "onnxrt"}
    for r in data["results"].values():
        assert {"accuracy", "label_perplexity", "full_latency_s", "decoder_latency_s", "encoder_latency_s",
                "device", "precision"} <= set(r)
