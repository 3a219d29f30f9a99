"""The demo-shaped Python API: family classes as declarations, keyword arguments checked as
flags, generate() giving the backends' text, and benchmark/accuracy/run returning what the
JSON file holds. The README's example runs verbatim."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import run as run_py
from conftest import ROOT
from NNDF.actions.accuracy import SHIPPED_SAMPLE
from NNDF.api import Model
from NNDF.base.errors import UsageError
from NNDF.cli import parse_args
from NNDF.registry import FAMILIES

SUFFIX = {"frameworks": "HF", "onnxrt": "OnnxRT", "trt": "TRT"}


def api_class(family: str, backend: str) -> type:
    return getattr(importlib.import_module(f"{family}.{backend}"), f"{family}{SUFFIX[backend]}")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_declares_the_demo_classes_beside_make_backend(family):
    for backend in SUFFIX:
        module = importlib.import_module(f"{family}.{backend}")
        cls = api_class(family, backend)
        assert issubclass(cls, Model) and (cls.family_name, cls.backend_name) == (family, backend)
        assert callable(module.make_backend)


@pytest.fixture(scope="module")
def wd(workdir):
    return str(workdir.root)


@pytest.fixture(scope="module")
def gpt2_ort(wd):
    from GPT2.onnxrt import GPT2OnnxRT

    return GPT2OnnxRT(variant="gpt2-tiny", use_cache=True, working_dir=wd)


@pytest.fixture(scope="module")
def gpt2_hf(wd):
    from GPT2.frameworks import GPT2HF

    return GPT2HF(use_cache=True, working_dir=wd)


def test_generate_returns_the_text_hf_generates(gpt2_ort, gpt2_hf):
    prompts = ["The lighthouse keeper", "Clara baked bread every morning"]
    texts = gpt2_ort.generate(input=prompts, use_mask=True, output_seq_len=10)
    assert texts == gpt2_hf.generate(input=prompts, use_mask=True, output_seq_len=10)
    assert all(t.startswith(p) and len(t) > len(p) for t, p in zip(texts, prompts))
    assert gpt2_ort.generate(input=prompts[0], output_seq_len=10) == texts[0]


def test_bad_keywords_are_the_cli_errors(gpt2_ort, wd):
    from GPT2.onnxrt import GPT2OnnxRT

    with pytest.raises(UsageError, match=r"unknown keyword argument use_cahce=; did you mean use_cache="):
        GPT2OnnxRT(use_cahce=True, working_dir=wd)
    with pytest.raises(UsageError) as api_error:
        gpt2_ort.generate(input="Ben", do_sample=True, top_p=1.5)
    with pytest.raises(UsageError) as cli_error:
        parse_args(["run", "GPT2", "onnxrt", "--do-sample", "--top-p", "1.5"])
    assert str(api_error.value) == str(cli_error.value)
    with pytest.raises(UsageError, match="--num-beams must be at least 1"):
        gpt2_ort.generate(input="Ben", num_beams=0)
    with pytest.raises(UsageError, match="use_cache= takes True or False"):
        gpt2_ort.generate(input="Ben", use_cache="yes")
    with pytest.raises(UsageError, match="fixed when the object is made"):
        gpt2_ort.generate(input="Ben", variant="gpt-neo-tiny")


def test_lengths_and_sampling_reuse_the_session_and_cache_switches_it(gpt2_ort):
    session = gpt2_ort.backend
    sampled = gpt2_ort.generate(input="The lighthouse", do_sample=True, top_k=8, seed=4, output_seq_len=12)
    assert gpt2_ort.generate(input="The lighthouse", do_sample=True, top_k=8, seed=4, output_seq_len=12) == sampled
    assert gpt2_ort.generate(input="The lighthouse", do_sample=True, top_k=8, seed=5, output_seq_len=12) != sampled
    assert gpt2_ort.backend is session
    cached = gpt2_ort.generate(input="The lighthouse", output_seq_len=12)
    assert gpt2_ort.generate(input="The lighthouse", output_seq_len=12, use_cache=False) == cached
    assert gpt2_ort.backend is not session


def _cli_json(tmp_path, *argv) -> dict:
    out = tmp_path / "cli.json"
    assert run_py.main([*argv, "--save-output-fpath", str(out)]) == 0
    return json.loads(out.read_text())


def test_run_and_accuracy_return_the_json_of_run_py(gpt2_ort, wd, tmp_path):
    api_run = gpt2_ort.run(iterations=1, output_seq_len=8)
    cli_run = _cli_json(tmp_path, "run", "GPT2", "onnxrt", "--use-cache", "--working-dir", wd, "--iterations", "1",
                        "--output-seq-len", "8")
    assert api_run.keys() == cli_run.keys() and api_run["results"].keys() == {"onnxrt"}
    assert {n: e["output"] for n, e in api_run["results"]["onnxrt"]["examples"].items()} == \
        {n: e["output"] for n, e in cli_run["results"]["onnxrt"]["examples"].items()}

    flags = dict(dataset_path=SHIPPED_SAMPLE, num_samples=3)
    api_acc = gpt2_ort.accuracy(**flags)
    cli_acc = _cli_json(tmp_path, "accuracy", "GPT2", "onnxrt", "--use-cache", "--working-dir", wd,
                        "--dataset-path", str(SHIPPED_SAMPLE), "--num-samples", "3")
    assert json.loads(json.dumps(api_acc)) == cli_acc      # same numbers, same names


def test_benchmark_returns_the_json_of_run_py_and_writes_it_when_asked(gpt2_ort, wd, tmp_path):
    flags = dict(input_seq_len=8, output_seq_len=4, iterations=2, warmup=0, percentile=[50, 90])
    saved = tmp_path / "api.json"
    api = gpt2_ort.benchmark(**flags, save_output_fpath=saved)
    cli = _cli_json(tmp_path, "benchmark", "GPT2", "onnxrt", "--use-cache", "--working-dir", wd, "--input-seq-len", "8",
                    "--output-seq-len", "4", "--iterations", "2", "--warmup", "0", "--percentile", "50", "90")
    api = json.loads(json.dumps(api))               # as a file holds it (tuples become lists)
    assert json.loads(saved.read_text()) == api
    assert api["settings"] == cli["settings"]
    assert api["results"]["onnxrt"].keys() == cli["results"]["onnxrt"].keys()
    assert api["results"]["onnxrt"]["tokens"] == cli["results"]["onnxrt"]["tokens"]


def test_trt_class_samples_what_onnxrt_samples(standin, gpt2_ort, wd):
    from GPT2.trt import GPT2TRT

    trt = GPT2TRT(variant="gpt2-tiny", use_cache=True, working_dir=wd)
    flags = dict(do_sample=True, temperature=0.8, top_p=0.95, seed=11, output_seq_len=12)
    assert trt.generate(input="The lighthouse keeper", **flags) == gpt2_ort.generate(input="The lighthouse keeper", **flags)
    assert standin._errors == []


def test_encoder_decoder_and_image_classes_answer(wd):
    from BLIP.onnxrt import BLIPOnnxRT
    from T5.onnxrt import T5OnnxRT

    t5 = T5OnnxRT(variant="t5-tiny", use_cache=True, working_dir=wd)
    assert t5.generate(input="translate English to German: The house is wonderful.") == "Das Haus ist wunderbar."
    blip = BLIPOnnxRT(use_cache=True, working_dir=wd)
    assert blip.generate(input="images/red_circle.png") == "a red circle on a white background"


def test_readme_example_runs_verbatim(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "GPT2OnnxRT(" in code and ".generate(input=" in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("The lighthouse keeper") and float(lines[-1]) > 0
    assert (tmp_path / "models").is_dir()          # working_dir="models" is relative to the script
