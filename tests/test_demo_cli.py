"""The original demo's command lines: short flags, `--compare b1 b2`, `list`, `--n-positions`."""

from __future__ import annotations

import json

import pytest

from conftest import call, one_line_error
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args




def test_short_flags_mean_the_long_ones():
    short = parse_args("run T5 onnxrt -m t5-tiny -wd w -b 2 -kv -nb 3 -v -o out.json".split())
    long = parse_args("run T5 onnxrt --variant t5-tiny --working-dir w --batch-size 2 --use-cache --num-beams 3 "
                      "--verbose --save-output-fpath out.json".split())
    assert short == long
    assert (short.variant, str(short.working_dir), short.batch_size, short.generation.use_cache,
            short.generation.num_beams, short.verbose, str(short.save_output_fpath)) == \
        ("t5-tiny", "w", 2, True, 3, True, "out.json")
    assert parse_args("run GPT2 --enable-kv-cache".split()).generation.use_cache
    assert not parse_args("run GPT2".split()).generation.use_cache


def test_compare_flag_takes_backends_as_the_demo_did():
    demo = parse_args("compare T5 --compare frameworks trt --variant t5-small --working-dir temp".split())
    assert demo.backends == ("frameworks", "trt") and demo.variant == "t5-small"
    assert parse_args("chat T5 -c frameworks onnxrt -m t5-tiny".split()).backends == ("frameworks", "onnxrt")
    positional = parse_args("compare T5 frameworks trt --variant t5-small".split())
    assert positional.backends == demo.backends
    # flags and backends in any order
    assert parse_args("compare T5 --variant t5-small frameworks trt".split()).backends == ("frameworks", "trt")
    assert parse_args("chat GPT2 frameworks onnxrt".split()).backends == ("frameworks", "onnxrt")   # chat compares
    assert parse_args("chat GPT2 onnxrt".split()).backends == ("onnxrt",)


@pytest.mark.parametrize("argv, match", [
    ("compare T5 frameworks --compare trt", "backends given twice"),
    ("compare T5 --compare", "--compare needs the backends to compare after it"),
    ("chat T5 frameworks onnxrt --compare", "--compare needs the backends to compare after it"),
    ("run GPT2 --compare onnxrt", "--compare belongs to the chat and compare actions"),
    ("compare T5 --compare frameworks tensorrt", "unknown backend 'tensorrt'"),
    ("run GPT2 -q 3", "unrecognized arguments: -q"),
    ("run GPT2 -kv2", "unrecognized arguments"),
    ("run", "the run action needs a model family"),
    ("run GPT2 --n-positions 512", "--n-positions only applies to benchmark"),
    ("benchmark GPT2 --n-positions 0", "--n-positions must be at least 1"),
])
def test_bad_demo_command_lines_are_one_line(capsys, tmp_path, argv, match):
    with pytest.raises(UsageError, match=match.replace("(", r"\(")):
        parse_args(argv.split())
    one_line_error(capsys, *argv.split(), "--working-dir", str(tmp_path), match=match)


def test_list_names_families_variants_and_what_runs_offline(capsys, tmp_path):
    out_file = tmp_path / "list.json"
    code, out, err = call(capsys, "list", "-o", str(out_file))
    assert code == 0, err
    data = json.loads(out_file.read_text())["families"]
    assert {"GPT2", "OPT", "BLOOM", "T5", "BART", "BLIP"} <= set(data)
    gpt2 = {v["variant"]: v for v in data["GPT2"]["variants"]}
    assert gpt2["gpt2-tiny"]["offline"] and gpt2["gpt2-tiny"]["hub_id"] is None
    assert gpt2["gpt2"]["runs"] == "hub; offline with --random-weights" and gpt2["gpt2"]["offline"]
    assert gpt2["gpt-j-6b"]["hub_id"] == "EleutherAI/gpt-j-6b"
    assert "gpt2" in data["GPT2"]["model_types"] and data["BART"]["model_types"] == ["bart", "mbart"]
    assert "gpt2-tiny" in out and "offline (tiny, built here)" in out
    code, out, _ = call(capsys, "list", "t5")
    assert code == 0 and out.startswith("T5") and "GPT2" not in out
    one_line_error(capsys, "list", "GPT9", match="unknown model family 'GPT9'")


def test_n_positions_lengthens_benchmark_inputs(capsys, tmp_path):
    """gpt2-tiny has 128 positions; the demo let a benchmark ask for more."""
    wd = str(tmp_path / "w")
    flags = ("--input-seq-len", "200", "--output-seq-len", "4", "--iterations", "1", "--warmup", "0", "-wd", wd)
    one_line_error(capsys, "benchmark", "GPT2", "onnxrt", *flags, match="needs 204 positions, but gpt2-tiny has 128")
    out_file = tmp_path / "b.json"
    code, out, err = call(capsys, "benchmark", "GPT2", "frameworks", "onnxrt", "-kv", "--n-positions", "256", *flags,
                          "-o", str(out_file))
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    assert results["onnxrt"]["same_tokens_as_frameworks"] and results["onnxrt"]["new_tokens"] == 4
