"""The mission's own commands as typed (issue 24): every action with only the family, the backends
and --use-cache (and --fp16 for trt) works on every family's default variant, with no length,
dataset or image flag: `benchmark GPT2 frameworks onnxrt --use-cache` once failed on gpt2-tiny's 128
positions (the defaults are 128 prompt + 64 new tokens), `accuracy` offline on the missing LAMBADA,
and `chat BLIP` without --image (BLIP's accuracy scores its shipped captions).

Each command runs in-process with the defaults (10 benchmark iterations and all), on the tiny models;
trt runs on the CPU stand-in for TensorRT."""

from __future__ import annotations

import io
import json

import pytest

from conftest import call

FAMILIES = ("GPT2", "OPT", "BLOOM", "LLAMA", "T5", "BART", "BLIP", "BERT", "VIT")
COMMANDS = {   # name -> argv after the action and family
    "benchmark": ("benchmark", "frameworks", "onnxrt", "--use-cache"),
    "run": ("run", "frameworks", "onnxrt", "--use-cache"),
    "accuracy": ("accuracy", "frameworks", "onnxrt", "--use-cache"),
    "chat": ("chat", "frameworks", "onnxrt", "--use-cache"),
    "trt benchmark": ("benchmark", "trt", "--fp16", "--use-cache"),
}


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    return tmp_path_factory.mktemp("bare")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_bare_command_works_on_the_default_variant(standin, capsys, monkeypatch, wd, tmp_path, family, command):
    action, *rest = COMMANDS[command]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))     # chat with its input closed
    out_file = tmp_path / "result.json"
    code, out, err = call(capsys, action, family, *rest, "--working-dir", wd, "--save-output-fpath", out_file)
    assert code == 0 and "Traceback" not in err, err
    assert standin._errors == [] and standin._warnings == []
    result = json.loads(out_file.read_text())
    backends = [b for b in rest if b in ("frameworks", "onnxrt", "trt")]
    if action != "chat":
        assert sorted(result["results"]) == sorted(backends)
    if action == "benchmark" and family in FITTED:
        # the defaults (128 + 64), or the longest that fit the variant, said in a note
        lengths = (result["settings"]["input_seq_len"], result["results"][backends[0]]["new_tokens"])
        assert lengths == FITTED[family], lengths
        assert (lengths[1] == 64 and lengths[0] in (128, 1)) or "so this benchmark uses" in err


FITTED = {  # (prompt, new tokens) a bare benchmark uses
    **dict.fromkeys(("GPT2", "OPT", "BLOOM", "LLAMA"), (64, 64)),   # 128 positions: 64 + 64
    "T5": (128, 64), "BART": (128, 64),                             # the encoder takes the prompt
    "BLIP": (1, 63),                                                # bos + 63 of 64 text positions
}
