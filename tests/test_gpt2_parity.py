"""ONNX Runtime must reproduce PyTorch on tiny GPT2, at shapes other than the trace shapes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import make_cfg
from NNDF.actions.accuracy import SHIPPED_SAMPLE, evaluate, load_texts
from NNDF.base.config import GenerationSettings
from NNDF.export.onnx_export import MODEL_FILE, exported, verify_graph
from NNDF.kinds.decoder_only.graphs import decoder_spec
from NNDF.models.artifacts import artifact_subdir
from NNDF.registry import get_family
from GPT2 import onnxrt
from GPT2.GPT2ModelConfig import GPT2_LAYOUT, build_tiny
from GPT2.export import decoder_graph
from GPT2.frameworks import make_backend as frameworks_backend


@pytest.fixture(scope="module")
def torch_backend(gpt2_tiny, workdir):
    return frameworks_backend(gpt2_tiny, make_cfg(workdir))


@pytest.fixture(scope="module", params=[True, False], ids=["cache", "nocache"])
def ort_backend(request, gpt2_tiny, workdir):
    flags = ("--use-cache",) if request.param else ()
    return onnxrt.make_backend(gpt2_tiny, make_cfg(workdir, *flags, backends=("onnxrt",)), workdir)


@pytest.mark.parametrize("use_cache", [True, False])
def test_exported_graph_matches_torch_away_from_trace_shapes(gpt2_tiny, workdir, use_cache):
    spec = decoder_graph(gpt2_tiny, use_cache)
    art = exported(workdir, artifact_subdir(get_family("GPT2"), gpt2_tiny), gpt2_tiny.model, spec,
                   gpt2_tiny.source_key, fp16=False)
    assert spec.trace_sizes["batch"] == 2
    # "kept" is how many final positions get logits (generation asks for 1, accuracy for all)
    cases = ([{"batch": b, "seq": s, "past_len": p, "kept": k}
              for b, s, p, k in [(1, 1, 0, 1), (1, 1, 1, 1), (3, 1, 37, 1), (3, 5, 1, 5), (3, 5, 1, 2), (1, 9, 37, 1)]]
             if use_cache else [{"batch": b, "seq": s, "kept": k} for b, s, k in [(1, 1, 1), (3, 13, 13), (4, 40, 1)]])
    for sizes in cases:  # make_inputs left-pads row 0 whenever batch > 1
        assert verify_graph(gpt2_tiny.model, spec, art.file(MODEL_FILE), sizes, tolerance=1e-4) <= 1e-4


def test_verification_catches_a_wrong_graph(gpt2_tiny, workdir, tmp_path):
    """The parity check must be able to fail: a graph from other weights is rejected."""
    import torch

    other = build_tiny(seed=1)[0].eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    spec = decoder_spec(other, GPT2_LAYOUT, True)
    art = exported(workdir, ("GPT2", "other"), other, spec, {"other": 1}, fp16=False)
    with pytest.raises(AssertionError, match="differs from PyTorch"):
        verify_graph(gpt2_tiny.model, decoder_graph(gpt2_tiny, True), art.file(MODEL_FILE),
                     {"batch": 1, "seq": 3, "past_len": 4})


def test_teacher_forced_logits_match(torch_backend, ort_backend, prompts):
    ids, mask = prompts
    want, got = torch_backend.logits(ids, mask), ort_backend.logits(ids, mask)
    real = mask.astype(bool)  # padded positions are never read
    assert np.abs(want[real] - got[real]).max() <= 1e-4


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("rows", [[1], [0, 1, 2]], ids=["batch1", "batch3-padded"])
def test_tokens_identical_to_hf_generate(torch_backend, ort_backend, prompts, num_beams, rows):
    ids, mask = prompts[0][rows], prompts[1][rows]
    keep = mask.sum(0) > 0  # batch of one: drop columns that are padding for every row
    ids, mask = ids[:, keep], mask[:, keep]
    settings = GenerationSettings(max_new_tokens=24, num_beams=num_beams, use_cache=ort_backend.steps.with_cache)
    want = torch_backend.generate(ids, mask, settings).tokens
    got = ort_backend.generate(ids, mask, settings).tokens
    assert want.shape == (len(rows), 24)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_eos_mid_sequence_and_min_length_match(torch_backend, ort_backend, prompts, num_beams):
    """Make the token the model emits most often the EOS, so stopping, padding and
    beam finishing are exercised; min_new_tokens must hold it back at first."""
    ids, mask = prompts
    plain = GenerationSettings(max_new_tokens=16, num_beams=num_beams, use_cache=ort_backend.steps.with_cache)
    first = torch_backend.generate(ids, mask, plain).tokens
    eos = int(np.bincount(first[:, :8].ravel()).argmax())
    original = torch_backend.token_ids
    token_ids = replace(original, eos=eos, pad=eos)
    torch_backend.token_ids = ort_backend.token_ids = token_ids
    try:
        outputs = {}
        for min_new in (0, 8):
            settings = replace(plain, min_new_tokens=min_new)
            want = torch_backend.generate(ids, mask, settings).tokens
            np.testing.assert_array_equal(ort_backend.generate(ids, mask, settings).tokens, want)
            outputs[min_new] = want
    finally:
        torch_backend.token_ids = ort_backend.token_ids = original
    # the token appeared early in the unrestricted output, so stopping on it must change the result
    assert outputs[0].shape != first.shape or not np.array_equal(outputs[0], first)
    assert not (outputs[8][:, :8] == eos).any()


def test_perplexity_and_topn_match(torch_backend, ort_backend, gpt2_tiny):
    texts = load_texts(SHIPPED_SAMPLE, 8)
    want = evaluate(torch_backend, gpt2_tiny, texts, 5, [1, 2, 10])
    got = evaluate(ort_backend, gpt2_tiny, texts, 5, [1, 2, 10])
    for key in ("token_perplexity", "seq_perplexity"):
        assert abs(got[key] - want[key]) <= 1e-3 * want[key]
    assert got["top_n"] == want["top_n"]
    assert 1.0 < want["seq_perplexity"] < 1e6
