"""RunConfig is the one contract: built and checked in one place for the command line and the Python
API alike, and stored as JSON (never argv) where a run is reopened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from NNDF.actions import ACTIONS, RULES
from NNDF.api import run_config
from NNDF.base.build_config import build_config
from NNDF.base.config import RunConfig
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args


@pytest.mark.parametrize("argv", [
    ["benchmark", "GPT2", "frameworks", "onnxrt", "--use-cache", "--percentile", "50", "90", "--input-seq-len", "16"],
    ["accuracy", "GPT2", "onnxrt", "--quantize", "int4", "--quant-block-size", "64", "--num-samples", "3"],
    ["run", "T5", "trt", "--dynamic-batch", "--max-dynamic-batch", "4", "--fp16", "--tf32", "--engine-postfix", "x"],
    ["chat", "GPT2", "--compare", "frameworks", "onnxrt", "--do-sample", "--top-p", "0.9", "--seed", "7"],
    ["serve", "GPT2", "onnxrt", "--use-cache", "--api", "triton", "--max-batch-size", "4", "--http-port", "9000"],
    ["export-triton", "T5", "--backend", "onnxrt", "--output", "repo", "--use-cache"],
    ["list"],
])
def test_a_config_survives_json(argv, tmp_path):
    cfg = parse_args([*argv, "--working-dir", str(tmp_path)])
    text = json.dumps(cfg.to_json())
    back = RunConfig.from_json(json.loads(text))
    assert back == cfg and isinstance(back.working_dir, Path)
    if cfg.quantize is not None:
        assert back.quantize.block_size == 64 and back.backends == ("frameworks", "onnxrt")


def test_prebuilt_paths_survive_json(tmp_path):
    graph = tmp_path / "decoder.onnx"
    graph.write_bytes(b"")
    cfg = parse_args(["run", "GPT2", "onnxrt", "--decoder-onnx", str(graph), "--working-dir", str(tmp_path)])
    assert RunConfig.from_json(json.loads(json.dumps(cfg.to_json()))).trt.prebuilt_onnx == {"decoder": graph}


def test_the_api_builds_the_config_the_command_line_builds_without_argv(monkeypatch, tmp_path):
    import NNDF.cli

    wd = str(tmp_path)
    cli = parse_args(["benchmark", "GPT2", "onnxrt", "--use-cache", "--percentile", "50", "90", "--batch-size", "2",
                      "--working-dir", wd])
    monkeypatch.setattr(NNDF.cli, "build_parser", lambda: pytest.fail("the API went through the argument parser"))
    api = run_config("benchmark", "GPT2", "onnxrt", {"use_cache": True, "percentile": [50, 90], "batch_size": "2",
                                                   "working_dir": wd})
    assert api == cli
    with pytest.raises(UsageError, match="--batch-size must be at least 1"):
        run_config("run", "GPT2", "onnxrt", {"batch_size": 0})
    with pytest.raises(UsageError, match="invalid int value: '2.5'"):
        run_config("run", "GPT2", "onnxrt", {"batch_size": 2.5})


def test_every_action_is_in_the_one_table_and_the_parser():
    from NNDF.cli import build_parser

    choices = next(a.choices for a in build_parser()._actions if a.dest == "action")
    assert tuple(choices) == tuple(ACTIONS) == tuple(RULES)
    for name, entry in ACTIONS.items():
        assert entry.rules.name == name
        assert entry.action_for(True) is not None and (entry.encoder is None or entry.action_for(False) is not None)


def test_flags_only_some_actions_read_are_refused_by_the_others(tmp_path):
    flags = {"action": "benchmark", "family": "GPT2", "checkpoint": "x.toml", "working_dir": str(tmp_path)}
    with pytest.raises(UsageError, match="--checkpoint is only read by the run and compare actions"):
        build_config(flags, RULES)


def test_serving_stores_the_config_not_argv(tmp_path):
    from NNDF.serving.triton_server import write_serving_repository

    cfg = parse_args(["serve", "GPT2", "onnxrt", "--use-cache", "--working-dir", str(tmp_path)])
    write_serving_repository(tmp_path / "repo", cfg)
    text = (tmp_path / "repo" / "generate" / "config.pbtxt").read_text()
    source = json.loads(json.loads(text.split('string_value: ', 1)[1].rsplit(" }", 2)[0]))
    assert source["kind"] == "config" and "argv" not in source
    assert RunConfig.from_json(source["config"]) == cfg
