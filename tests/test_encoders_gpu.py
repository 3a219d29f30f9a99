"""Real TensorRT on a real GPU for the encoder families: engines for the tiny BERT, DistilBERT and
ViT variants against PyTorch fp32 on the host, and frameworks on CUDA against the host. Skipped, with
the reason, where TensorRT's native libraries or a CUDA device are missing; the stand-in tests
(test_bert_family.py, test_vit_family.py) cover the path elsewhere. Not yet run anywhere: no machine
here has had TensorRT's libraries.

Exact agreement is not asked where physics does not promise it (issue 24): fp32 (TF32 off) and
fp16 outputs must lie within the tolerances of tests/numerics.py, and every decision (class, token
tag, QA span start and end) must agree wherever the host's winner leads by more than twice that;
calibrated int8 may flip one near-tied answer. The same checks run on the CPU in
test_numerics.py (onnxrt fp16 against PyTorch for every variant here)."""

from __future__ import annotations

import json

import pytest

from conftest import call
from numerics import FP16_RELATIVE, FP32_LOGIT_ATOL, encoder_disagreements, encoder_outputs as outputs

pytestmark = pytest.mark.gpu
CASES = [("BERT", "distilbert-tiny-sst2"), ("BERT", "bert-tiny-squad"), ("BERT", "bert-tiny-ner"),
         ("BERT", "minilm-tiny-embeddings"), ("VIT", "vit-tiny-shapes")]
TOLERANCE = {"fp32": {"atol": FP32_LOGIT_ATOL}, "fp16": {"relative": FP16_RELATIVE}}


@pytest.mark.parametrize("family,variant", CASES, ids=[v for _, v in CASES])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_engine_outputs_agree_with_pytorch(real_tensorrt, workdir, family, variant, precision):
    made, got, want, mask, embeddings = outputs(family, variant, workdir, "trt",
                                                *(["--fp16"] if precision == "fp16" else []))
    assert made.device.startswith("cuda")
    assert encoder_disagreements(got, want, mask, embeddings, **TOLERANCE[precision]) == []


@pytest.mark.parametrize("family,variant", CASES, ids=[v for _, v in CASES])
def test_trt_int8_engine_answers_like_pytorch(real_tensorrt, capsys, workdir, tmp_path, family, variant):
    """Calibrated int8 quantizes activations too: its error is not bounded by a float tolerance, so
    the answers are compared, and one may flip (on the stand-in, at most 2 of 16 held-out answers moved)."""
    out_file = tmp_path / "compare.json"
    code, out, err = call(capsys, "compare", family, "frameworks", "trt", "--variant", variant, "--cpu",
                          "--working-dir", str(workdir.root), "--iterations", "3", "--batch-size", "2",
                          "--save-output-fpath", str(out_file), "--quantize", "int8")
    assert code == 0, err
    results = json.loads(out_file.read_text())["results"]
    assert results["trt"]["device"].startswith("cuda")
    same = [ex["same_as_frameworks"] for ex in results["trt"]["examples"].values()]
    assert sum(same) >= len(same) - 1, results["trt"]["examples"]


@pytest.mark.parametrize("family,variant", CASES, ids=[v for _, v in CASES])
def test_frameworks_on_cuda_agrees_with_the_host(cuda, workdir, family, variant):
    """PyTorch fp32 on CUDA against the host. Its matmuls are fp32 (torch leaves TF32 off for them),
    but cuDNN convolutions may use TF32 by default (torch.backends.cudnn.allow_tf32), whose 10-bit
    significand is fp16's: ViT's patch embedding is a convolution, so ViT gets the fp16 bound."""
    made, got, want, mask, embeddings = outputs(family, variant, workdir, "frameworks")
    assert made.device.startswith("cuda")
    tolerance = TOLERANCE["fp16" if family == "VIT" else "fp32"]
    assert encoder_disagreements(got, want, mask, embeddings, **tolerance) == []
