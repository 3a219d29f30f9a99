"""Every run.py action end to end on tiny GPT2, and every bad input ending in one line with exit 2."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, call, one_line_error
from NNDF.kinds.makers import make_backends
from NNDF.models.examples import outputs_match


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)




def test_benchmark_writes_the_documented_json(capsys, wd, tmp_path):
    out_file = tmp_path / "bench.json"
    code, out, err = call(capsys, "benchmark", "GPT2", "frameworks", "onnxrt", "--working-dir", wd, "--use-cache",
                          "--input-seq-len", "12", "--output-seq-len", "6", "--iterations", "2", "--warmup", "1",
                          "--percentile", "50", "90", "--save-output-fpath", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    for backend in ("frameworks", "onnxrt"):
        r = data["results"][backend]
        assert r["full_latency_s"] > 0 and r["decoder_latency_s"] > 0 and r["tokens_per_second"] > 0
        assert r["new_tokens"] == 6 and set(r["percentiles"]) == {"50", "90"}
        assert r["same_tokens_as_frameworks"] is True
    assert data["settings"]["input_seq_len"] == 12 and data["settings"]["output_seq_len"] == 6
    assert "tokens/s" in out


def test_accuracy_on_shipped_sample(capsys, wd, tmp_path):
    out_file = tmp_path / "acc.json"
    sample = ROOT / "NNDF" / "data" / "lambada_sample.jsonl"
    code, out, err = call(capsys, "accuracy", "GPT2", "frameworks", "onnxrt", "--working-dir", wd,
                          "--dataset-path", str(sample), "--num-samples", "5", "--topN", "3",
                          "--save-output-fpath", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    for r in data["results"].values():
        assert set(r["top_n"]) == {"1", "3", "10"}
        assert 0.0 <= r["top_n"]["1"] <= r["top_n"]["3"] <= r["top_n"]["10"] <= 1.0
        assert r["token_perplexity"] > 1 and r["seq_perplexity"] > 1 and r["num_samples"] == 5
    assert "top1=" in out


def test_num_samples_beyond_the_data_draws_with_replacement(capsys, wd, tmp_path):
    sample = tmp_path / "two.jsonl"
    sample.write_text('{"text": "one two three four five six seven eight nine ten"}\n'
                      '{"text": "a b c d e f g h i j k l m n"}\n')
    out_file = tmp_path / "a.json"
    code, _, err = call(capsys, "accuracy", "GPT2", "--working-dir", wd, "--dataset-path", str(sample),
                        "--num-samples", "50", "--save-output-fpath", str(out_file))
    assert code == 0, err
    assert json.loads(out_file.read_text())["num_samples"] == 50   # the demo's draw: with replacement


def test_run_and_compare(capsys, wd, tmp_path):
    out_file = tmp_path / "run.json"
    code, out, err = call(capsys, "run", "GPT2", "frameworks", "onnxrt", "--working-dir", wd, "--use-cache",
                          "--iterations", "1", "--batch-size", "2", "--use-mask", "--save-output-fpath", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    fw, ort = data["results"]["frameworks"], data["results"]["onnxrt"]
    assert set(fw["examples"]) == {"capital", "numbers", "days", "lighthouse"}
    for name, ex in fw["examples"].items():
        assert ex["output"].startswith(ex["input"]) and ex["output"] == ort["examples"][name]["output"]
        assert ex["match"] == outputs_match(ex["output"], ex["label"])
    code, out, err = call(capsys, "compare", "GPT2", "frameworks", "onnxrt", "--working-dir", wd, "--iterations", "1")
    assert code == 0, err
    assert "full (s)" in out and "accuracy" in out and "DIFFERS" not in out


def test_run_with_user_checkpoint(capsys, wd, tmp_path):
    ck = tmp_path / "mine.toml"
    ck.write_text('[GPT2.all.gpt2-tiny.all.echo]\ninput = "Ben"\nlabel = "Ben"\n')
    out_file = tmp_path / "r.json"
    flags = ("--working-dir", wd, "--checkpoint", str(ck), "--iterations", "1", "-o", str(out_file))
    code, out, err = call(capsys, "run", "GPT2", *flags)
    assert code == 0, err
    assert "accuracy 0.00 over 1 examples" in out   # exact match: a prefix of the output is not one
    said = json.loads(out_file.read_text())["results"]["frameworks"]["examples"]["echo"]["output"]
    ck.write_text('[GPT2.all.gpt2-tiny.all.echo]\ninput = "Ben"\nlabel = %s\n' % json.dumps(said))
    code, out, err = call(capsys, "run", "GPT2", *flags)
    assert code == 0, err
    assert "accuracy 1.00 over 1 examples" in out


def test_chat_exit_eof_and_ctrl_c(wd, gpt2_tiny, workdir):
    from NNDF.actions import chat
    from NNDF.cli import parse_args
    from NNDF.registry import get_family

    cfg = parse_args(["chat", "GPT2", "frameworks", "onnxrt", "--working-dir", wd, "--use-cache",
                      "--output-seq-len", "5"])
    backends = make_backends(get_family("GPT2"), gpt2_tiny, cfg, workdir)
    result = chat.converse(cfg, gpt2_tiny, backends, stdin=io.StringIO("The lighthouse\n\nexit\nnever read\n"))
    turn, = result["turns"]
    assert turn["outputs"]["frameworks"]["output"] == turn["outputs"]["onnxrt"]["output"]
    assert chat.converse(cfg, gpt2_tiny, backends, stdin=io.StringIO("Ben"))["turns"]  # EOF after one line

    class CtrlC(io.StringIO):
        def readline(self, *a):
            raise KeyboardInterrupt

    assert chat.converse(cfg, gpt2_tiny, backends, stdin=CtrlC())["turns"] == []


def test_chat_through_the_real_cli_process(wd):
    proc = subprocess.run([sys.executable, "run.py", "chat", "GPT2", "--working-dir", wd, "--output-seq-len", "4"],
                          input="Clara baked\nexit\n", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Clara baked" in proc.stdout and "bye" in proc.stdout and "Traceback" not in proc.stderr




def test_bad_inputs_are_one_line_errors(capsys, wd, tmp_path):
    one_line_error(capsys, "run", "GPT9", "--working-dir", wd, match="unknown model family 'GPT9'")
    one_line_error(capsys, "run", "GPT2", "--variant", "gpt5", "--working-dir", wd, match="unknown GPT2 variant 'gpt5'")
    one_line_error(capsys, "run", "GPT2", "cuda", "--working-dir", wd, match="unknown backend 'cuda'")
    one_line_error(capsys, "run", "GPT2", "--torch-dir", str(tmp_path), "--working-dir", wd, match="has no config.json")
    one_line_error(capsys, "run", "GPT2", "--dynamic-batch", "--min-dynamic-batch", "2", "--max-dynamic-batch", "4",
         "--batch-size", "8", "--working-dir", wd, match="outside the dynamic batch range [2, 4]")
    one_line_error(capsys, "run", "GPT2", "--num-beams", "0", "--working-dir", wd, match="--num-beams must be at least 1")
    one_line_error(capsys, "benchmark", "GPT2", "--input-seq-len", "120", "--output-seq-len", "20", "--working-dir", wd,
         match="needs 140 positions")
    one_line_error(capsys, "run", "GPT2", "--checkpoint", str(tmp_path / "missing.toml"), "--working-dir", wd,
         match="cannot read checkpoint file")
    broken = tmp_path / "broken.toml"
    broken.write_text("[GPT2.all\n")
    one_line_error(capsys, "run", "GPT2", "--checkpoint", str(broken), "--working-dir", wd, match="is not valid TOML")
    one_line_error(capsys, "run", "GPT2", "--frobnicate", "--working-dir", wd, match="bad command line")
    one_line_error(capsys, "accuracy", "GPT2", "--dataset-path", str(broken), "--working-dir", wd, match="line 1 is not a JSON")


def test_long_prompt_is_refused(capsys, wd, tmp_path):
    ck = tmp_path / "long.toml"
    ck.write_text('[GPT2.all.default.all.long]\ninput = "%s"\nlabel = "x"\n' % ("word " * 200))
    one_line_error(capsys, "run", "GPT2", "--checkpoint", str(ck), "--working-dir", wd, match="exceeds the model's 128 positions")


def test_corrupt_onnx_in_working_dir_is_rebuilt(capsys, tmp_path):
    wd = tmp_path / "w"
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    args = ("run", "GPT2", "onnxrt", "--working-dir", str(wd), "--iterations", "1")
    assert call(capsys, *args, "--save-output-fpath", str(first))[0] == 0
    model_file, = (f for f in wd.glob("GPT2/gpt2-tiny/onnx/*/model.onnx") if not f.parent.name.endswith("-ort"))
    good = model_file.read_bytes()
    model_file.write_bytes(b"not an onnx file at all")
    code, _, err = call(capsys, *args, "--save-output-fpath", str(second))
    assert code == 0, err
    assert f"rebuilding {model_file.parent}: model.onnx has a different size" in err
    assert model_file.read_bytes() == good
    outputs = [{name: ex["output"] for name, ex in json.loads(f.read_text())["results"]["onnxrt"]["examples"].items()}
               for f in (first, second)]   # (the examples also hold their latencies, which vary)
    assert outputs[0] == outputs[1]


def test_torch_dir_loads_a_local_checkpoint(capsys, gpt2_tiny, tmp_path):
    ckpt = tmp_path / "my-gpt2"
    gpt2_tiny.model.save_pretrained(ckpt)
    gpt2_tiny.tokenizer.save_pretrained(ckpt)
    out_file = tmp_path / "r.json"
    code, _, err = call(capsys, "run", "GPT2", "frameworks", "onnxrt", "--torch-dir", str(ckpt), "--use-cache",
                        "--working-dir", str(tmp_path / "w"), "--iterations", "1", "--save-output-fpath", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())
    assert data["variant"] == "my-gpt2"
    fw, ort = data["results"]["frameworks"]["examples"], data["results"]["onnxrt"]["examples"]
    assert all(fw[k]["output"] == ort[k]["output"] for k in fw)
    (ckpt / "model.safetensors").write_bytes(b"garbage")
    one_line_error(capsys, "run", "GPT2", "--torch-dir", str(ckpt), "--working-dir", str(tmp_path / "w"),
         match="could not load a GPT2 model from --torch-dir")


def test_trt_without_tensorrt_says_so_before_exporting(capsys, tmp_path):
    wd = tmp_path / "w"
    one_line_error(capsys, "run", "GPT2", "trt", "--working-dir", str(wd), match="the trt backend needs TensorRT and a CUDA GPU")
    assert not list(wd.glob("**/*.onnx"))


def test_hub_variant_offline_points_to_offline_options(capsys, wd, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # read once at import
    one_line_error(capsys, "run", "GPT2", "--variant", "gpt2", "--working-dir", wd, match="could not load 'gpt2'")
