"""Sampling and the repetition penalty: our numpy processors are HF's, applied in HF's order;
onnxrt and trt draw the same tokens for one seed; the loop streams each step's tokens; bad
sampling values are one-line errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_cfg, one_line_error
from NNDF.base.config import GenerationSettings
from NNDF.kinds.makers import make_backends
from NNDF.runtime.backends import hf_generation_config
from NNDF.runtime.generation import leading_pads, process_scores, warp_for_sampling
from GPT2 import onnxrt as gpt2_onnxrt, trt as gpt2_trt
from GPT2.frameworks import make_backend as frameworks_backend

SAMPLING = ["--do-sample", "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--repetition-penalty", "1.3"]


def hf_processors(model, ids, mask, settings, tok_ids, names: list | None = None):
    """The processors HF's own generate builds for these settings (captured from a real call), as one
    function of host tensors; `names` receives their class names in order."""
    captured = []
    original = model._get_logits_processor

    def capture(*args, **kwargs):
        captured.append(original(*args, **kwargs))
        return captured[-1]

    device = next(model.parameters()).device          # the frameworks backend may have moved it to a GPU
    model._get_logits_processor = capture
    try:
        model.generate(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
                       generation_config=hf_generation_config(dataclasses.replace(settings, max_new_tokens=1), tok_ids))
    finally:
        del model._get_logits_processor
    if names is not None:
        names += [type(p).__name__ for p in captured[0]]
    return lambda seqs, scores: captured[0](seqs.to(device), scores.to(device)).cpu()


@pytest.mark.parametrize("flags", [
    SAMPLING,
    ["--do-sample", "--top-k", "0", "--top-p", "0.5"],
    ["--do-sample", "--temperature", "1.8", "--top-k", "3"],
    ["--repetition-penalty", "0.6"],                 # greedy: the penalty alone (below 1 favours repeats)
    ["--do-sample", "--top-p", "1e-6"],               # keeps only the most likely token
], ids=["all", "top_p", "temp_top_k", "penalty_only", "tiny_top_p"])
def test_processors_equal_hf_processors_in_hf_order(gpt2_tiny, workdir, prompts, flags):
    cfg = make_cfg(workdir, "--min-output-len", "2", *flags)
    settings, tok_ids = cfg.generation, gpt2_tiny.token_ids
    ids, mask = prompts
    assert (mask == 0).any()                         # padding that the penalty must skip
    procs = hf_processors(gpt2_tiny.model, ids, mask, settings, tok_ids)
    rng = np.random.default_rng(7)
    for trial in range(5):
        logits = (rng.standard_normal((ids.shape[0], gpt2_tiny.config.vocab_size)) * 3).astype(np.float32)
        logits[:, ids[0, -1]] = -2.0                 # a negative score on a seen token: multiplied, not divided
        expected = procs(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
        ours = logits.copy()
        process_scores(ours, ids, leading_pads(mask), ids.shape[1], settings, tok_ids)
        if settings.do_sample:
            ours = warp_for_sampling(ours, settings)
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
        finite = np.isfinite(expected)
        np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-6)
        assert not np.array_equal(ours, logits)      # the settings did change something


def test_hf_processor_order_is_penalty_then_temperature_top_k_top_p(gpt2_tiny, workdir, prompts):
    cfg = make_cfg(workdir, "--min-output-len", "2", *SAMPLING)
    ids, mask = prompts
    names = []
    hf_processors(gpt2_tiny.model, ids, mask, cfg.generation, gpt2_tiny.token_ids, names)
    # the penalty first, then HF's min-length (EOS) rules, then the warpers: what process_scores
    # then warp_for_sampling do
    assert names[0] == "RepetitionPenaltyLogitsProcessor"
    assert set(names[1:-3]) <= {"MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor"} and names[1:-3]
    assert names[-3:] == ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]


@pytest.fixture(scope="module")
def sampled_cfg(workdir):
    return lambda use_cache, backend, *extra: make_cfg(workdir, *(["--use-cache"] if use_cache else []),
                                                       "--output-seq-len", "12", *SAMPLING, *extra, backends=(backend,))


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "nocache"])
def test_onnxrt_and_trt_sample_the_same_tokens(standin, gpt2_tiny, workdir, prompts, sampled_cfg, use_cache):
    ids, mask = prompts
    ort = gpt2_onnxrt.make_backend(gpt2_tiny, sampled_cfg(use_cache, "onnxrt"), workdir)
    trt = gpt2_trt.make_backend(gpt2_tiny, sampled_cfg(use_cache, "trt", "--batch-size", "3"), workdir)
    settings = sampled_cfg(use_cache, "onnxrt").generation
    by_seed = {}
    for seed in (0, 1):
        s = dataclasses.replace(settings, seed=seed)
        by_seed[seed] = ort.generate(ids, mask, s).tokens
        np.testing.assert_array_equal(trt.generate(ids, mask, s).tokens, by_seed[seed])
        np.testing.assert_array_equal(ort.generate(ids, mask, s).tokens, by_seed[seed])   # seeded per call
    assert not np.array_equal(by_seed[0], by_seed[1])
    greedy = dataclasses.replace(settings, do_sample=False)
    assert not np.array_equal(by_seed[0], ort.generate(ids, mask, greedy).tokens)    # it really sampled
    assert standin._errors == []


def test_top_k_1_sampling_is_greedy(gpt2_tiny, workdir, prompts, sampled_cfg):
    ids, mask = prompts
    ort = gpt2_onnxrt.make_backend(gpt2_tiny, sampled_cfg(True, "onnxrt"), workdir)
    greedy = make_cfg(workdir, "--use-cache", "--output-seq-len", "12", "--repetition-penalty", "1.3").generation
    one = dataclasses.replace(greedy, do_sample=True, top_k=1, temperature=0.5)
    np.testing.assert_array_equal(ort.generate(ids, mask, one).tokens, ort.generate(ids, mask, greedy).tokens)


def test_frameworks_sampling_is_seeded_and_leaves_torch_rng_alone(gpt2_tiny, workdir, prompts, sampled_cfg):
    ids, mask = prompts
    cfg = sampled_cfg(True, "frameworks")
    backend = frameworks_backend(gpt2_tiny, cfg)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = backend.generate(ids, mask, cfg.generation).tokens
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(backend.generate(ids, mask, cfg.generation).tokens, first)
    other = backend.generate(ids, mask, dataclasses.replace(cfg.generation, seed=5)).tokens
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_repetition_penalty_tokens_equal_hf_generate(gpt2_tiny, workdir, prompts, beams):
    cfg = make_cfg(workdir, "--use-cache", "--output-seq-len", "12", "--num-beams", str(beams),
                   "--repetition-penalty", "1.5")
    ids, mask = prompts
    expected = frameworks_backend(gpt2_tiny, cfg).generate(ids, mask, cfg.generation).tokens
    got = gpt2_onnxrt.make_backend(gpt2_tiny, cfg, workdir).generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(got, expected)
    plain = dataclasses.replace(cfg.generation, repetition_penalty=1.0)
    assert not np.array_equal(expected, frameworks_backend(gpt2_tiny, cfg).generate(ids, mask, plain).tokens)


@pytest.mark.parametrize("backend_name", ["frameworks", "onnxrt"])
def test_each_step_streams_its_tokens(gpt2_tiny, workdir, prompts, backend_name):
    cfg = make_cfg(workdir, "--use-cache", "--output-seq-len", "7", backends=(backend_name,))
    backend = (frameworks_backend(gpt2_tiny, cfg) if backend_name == "frameworks"
               else gpt2_onnxrt.make_backend(gpt2_tiny, cfg, workdir))
    ids, mask = prompts
    steps = []
    out = backend.generate(ids, mask, cfg.generation, on_step=lambda t: steps.append(np.array(t)))
    assert len(steps) == out.tokens.shape[1] == 7
    np.testing.assert_array_equal(np.stack(steps, axis=1), out.tokens)


@pytest.mark.parametrize("beams", [1, 2], ids=["greedy", "beam2"])
def test_repetition_penalty_on_an_encoder_decoder_equals_hf(workdir, beams):
    """T5's penalty covers the decoder's own tokens (start token included), not the encoder's input."""
    from NNDF.cli import parse_args
    from NNDF.registry import get_family

    cfg = parse_args(["run", "T5", "frameworks", "onnxrt", "--working-dir", str(workdir.root), "--use-cache",
                      "--num-beams", str(beams), "--repetition-penalty", "2.0", "--output-seq-len", "12"])
    family = get_family("T5")
    loaded = family.load(cfg)
    fw, ort = make_backends(family, loaded, cfg, workdir)
    ids, mask = loaded.encode_prompts(["translate English to German: The house is wonderful."], False, 12)
    expected = fw.generate(ids, mask, cfg.generation).tokens
    np.testing.assert_array_equal(ort.generate(ids, mask, cfg.generation).tokens, expected)


def test_chat_streams_and_compares_with_times(gpt2_tiny, workdir):
    """Printed text grows step by step (seen through a stream that records each write), and with
    --compare each backend's answer is labelled and timed; the JSON turn holds the same text."""
    import io
    import re

    from NNDF.actions import chat
    from NNDF.registry import get_family

    cfg = make_cfg(workdir, "--use-cache", "--output-seq-len", "6", *SAMPLING, action="chat",
                   backends=("frameworks", "onnxrt"))
    backends = make_backends(get_family("GPT2"), gpt2_tiny, cfg, workdir)

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.writes = []

        def write(self, text):
            self.writes.append(text)
            return super().write(text)

    out = Writes()
    result = chat.converse(cfg, gpt2_tiny, backends, stdin=io.StringIO("The lighthouse keeper\n"), out=out)
    turn, = result["turns"]
    printed = out.getvalue()
    for name in ("frameworks", "onnxrt"):
        text = turn["outputs"][name]["output"]
        assert text.startswith("The lighthouse keeper")
        assert re.search(rf"\[{name} \([^)]*\)\] {re.escape(text)}  \(\d+ ms\)\n", printed), printed
    pieces = [w for w in out.writes if w and w not in ("\n", "> ")]
    assert len(pieces) >= 2 * 3, pieces                # several pieces per answer, not one print each




def test_bad_sampling_values_are_one_line_errors(capsys, workdir):
    wd = ["--working-dir", str(workdir.root)]
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--temperature", "0", *wd, match="--temperature must be greater than 0")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--temperature", "-1", *wd, match="--temperature must be greater than 0")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--top-p", "1.5", *wd, match="--top-p must be within (0, 1]")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--top-p", "0", *wd, match="--top-p must be within (0, 1]")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--top-k", "-1", *wd, match="--top-k must be 0")
    one_line_error(capsys, "run", "GPT2", "--repetition-penalty", "0", *wd, match="--repetition-penalty must be greater than 0")
    one_line_error(capsys, "run", "GPT2", "--temperature", "0.5", *wd, match="add --do-sample")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--num-beams", "2", *wd, match="beam sampling) is not supported")
    one_line_error(capsys, "run", "GPT2", "--do-sample", "--temperature", "hot", *wd, match="bad command line")
