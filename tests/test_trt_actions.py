"""Every run.py action with the trt backend, in-process through run.py's main(), on the CPU
stand-in for TensorRT: the results must agree with the frameworks backend's."""

from __future__ import annotations

import io
import json

import pytest

from conftest import ROOT, call
from NNDF.kinds.makers import make_backends


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)


def test_benchmark_with_cuda_graphs(standin, capsys, wd, tmp_path):
    out_file = tmp_path / "bench.json"
    code, out, err = call(capsys, "benchmark", "GPT2", "frameworks", "trt", "--working-dir", wd, "--use-cache",
                          "--use-cuda-graph", "--batch-size", "2", "--input-seq-len", "10", "--output-seq-len", "6",
                          "--iterations", "2", "--warmup", "2", "--save-output-fpath", str(out_file))
    assert code == 0, err
    trt = json.loads(out_file.read_text())["results"]["trt"]
    assert trt["same_tokens_as_frameworks"] is True and trt["new_tokens"] == 6
    assert trt["decoder_latency_s"] > 0 and trt["tokens_per_second"] > 0
    assert standin._errors == [] and standin._warnings == []   # no default-stream enqueue either


def test_accuracy_agrees_with_frameworks(standin, capsys, wd, tmp_path):
    out_file = tmp_path / "acc.json"
    code, out, err = call(capsys, "accuracy", "GPT2", "frameworks", "trt", "--working-dir", wd, "--use-cache",
                          "--dataset-path", str(ROOT / "NNDF" / "data" / "lambada_sample.jsonl"), "--num-samples", "8",
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    fw, trt = results["frameworks"], results["trt"]
    assert trt["top_n"] == fw["top_n"]
    for key in ("token_perplexity", "seq_perplexity"):
        assert trt[key] == pytest.approx(fw[key], rel=1e-3)


@pytest.mark.parametrize("family", ["GPT2", "T5"])
def test_run_and_compare_agree_with_frameworks(standin, capsys, wd, tmp_path, family):
    out_file = tmp_path / "run.json"
    code, out, err = call(capsys, "run", family, "frameworks", "trt", "--working-dir", wd, "--use-cache",
                          "--iterations", "1", "--batch-size", "2", "--use-mask", "--save-output-fpath", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    assert results["trt"]["examples"] and results["trt"]["accuracy"] == results["frameworks"]["accuracy"]
    for name, example in results["frameworks"]["examples"].items():
        assert results["trt"]["examples"][name]["output"] == example["output"]
    code, out, err = call(capsys, "compare", family, "frameworks", "trt", "--working-dir", wd, "--use-cache",
                          "--iterations", "1")
    assert code == 0, err
    assert "full (s)" in out and "DIFFERS" not in out


def test_chat_answers_like_frameworks(standin, wd, gpt2_tiny, workdir):
    from NNDF.actions import chat
    from NNDF.cli import parse_args
    from NNDF.registry import get_family

    cfg = parse_args(["chat", "GPT2", "frameworks", "trt", "--working-dir", wd, "--use-cache",
                      "--output-seq-len", "5"])
    backends = make_backends(get_family("GPT2"), gpt2_tiny, cfg, workdir)
    result = chat.converse(cfg, gpt2_tiny, backends, stdin=io.StringIO("The lighthouse\nClara baked bread\nexit\n"))
    assert len(result["turns"]) == 2
    for turn in result["turns"]:
        assert turn["outputs"]["trt"]["output"] == turn["outputs"]["frameworks"]["output"]


def test_a_run_leaving_the_profile_is_one_line_before_generating(standin, capsys, wd):
    code, out, err = call(capsys, "run", "GPT2", "trt", "--working-dir", wd, "--use-cache", "--iterations", "1",
                          "--input-profile-max-len", "16", "--output-profile-max-len", "2", "--output-seq-len", "30")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert "30 new tokens needs past_len=" in errors[0] and "raise --output-profile-max-len" in errors[0]
