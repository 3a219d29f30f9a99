"""Every family x precision (fp32, fp16) x --quantize (none, int8, int4) that the command line accepts
either runs through onnxrt and the TensorRT stand-in, or is refused in one `error:` line before any
graph is exported (issue 24: `--fp16 --quantize int8` on an encoder once wrote an invalid graph that
the stand-in failed on with an ONNX Runtime traceback).

Where trt refuses a combination, onnxrt alone still runs it. The refusals are TensorRT's rules
(NNDF/export/quantize.py, "What TensorRT takes"), each named here by the words its line must hold."""

from __future__ import annotations

import pytest

from conftest import call

from NNDF.registry import get_family

FAMILIES = ("GPT2", "OPT", "BLOOM", "LLAMA", "T5", "BART", "BLIP", "BERT", "VIT")
PRECISIONS = ("fp32", "fp16")
SCHEMES = ("none", "int8", "int4")


def trt_refusal(family: str, precision: str, scheme: str) -> str | None:
    """What the combined onnxrt + trt run must be refused with, or None where it runs."""
    generates = get_family(family).generates
    if scheme == "int4" and not generates:
        return "encoders quantize to int8"
    if scheme == "int8" and generates:
        return "TensorRT quantizes INT8 as weights and activations together"
    if scheme == "int4" and precision == "fp32":
        return "--quantize int4 with trt needs --fp16"
    if scheme == "int4" and family in ("BLIP", "OPT"):   # blip-tiny's vision weights and opt-tiny's projected
        return "TensorRT's INT4 blocks (64 or 128) do not fit it"   # embeddings are 32 wide
    return None


def artifacts(root) -> set[str]:
    """Every graph and engine folder under the working dir (temp folders included)."""
    return {str(p.relative_to(root)) for p in root.glob("*/*/*/*") if p.is_dir()}


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    return tmp_path_factory.mktemp("quant-matrix")


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", FAMILIES)
def test_runs_through_onnxrt_and_trt_or_is_refused_before_export(standin, capsys, wd, family, precision, scheme):
    generates = get_family(family).generates
    flags = ["--working-dir", wd, "--input-seq-len", "8", "--iterations", "1", "--warmup", "0"]
    flags += ["--use-cache", "--output-seq-len", "4"] if generates else []
    flags += ["--fp16"] if precision == "fp16" else []
    flags += ["--quantize", scheme] if scheme != "none" else []
    refusal = trt_refusal(family, precision, scheme)
    before = artifacts(wd)
    code, out, err = call(capsys, "benchmark", family, "onnxrt", "trt", *flags)
    assert "Traceback" not in err and standin._errors == [], err
    if refusal is None:
        assert code == 0, err
        rows = {words[0]: words for words in map(str.split, out.splitlines())
                if words[:1] in (["onnxrt"], ["trt"]) and words[1:2] == ["cpu"]}   # the table's rows
        label = scheme if scheme != "none" else precision
        assert rows["onnxrt"][2] == label and rows["trt"][2] == label, out
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and refusal in errors[0], err
    assert artifacts(wd) == before, "a refused run exported something"
    if scheme != "int4" or generates:   # onnxrt alone takes what trt refuses (encoders refuse int4 outright)
        code, out, err = call(capsys, "benchmark", family, "onnxrt", *flags)
        assert code == 0 and "Traceback" not in err, err


@pytest.mark.parametrize("block,message", [
    ("32", "--quant-block-size 32 with trt: TensorRT's INT4 blocks are 64 or 128 weights"),
    ("128", "--quant-block-size 128 is larger than the input dimension 64"),
])
def test_trt_block_sizes_outside_tensorrts_are_refused_before_export(standin, capsys, wd, block, message):
    before = artifacts(wd)
    code, out, err = call(capsys, "benchmark", "GPT2", "onnxrt", "trt", "--working-dir", wd, "--use-cache", "--fp16",
                          "--quantize", "int4", "--quant-block-size", block, "--iterations", "1")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert artifacts(wd) == before
