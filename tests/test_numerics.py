"""The comparison rules the GPU tests use (tests/numerics.py), checked on the CPU: on made-up cases
whose answer is known, and on a real pair of precisions (ONNX Runtime's fp16 graph against fp32
PyTorch), so the tolerances are exercised where this machine can run them."""

from __future__ import annotations

import numpy as np

from conftest import make_cfg
import pytest

from numerics import (FP16_RELATIVE, FP32_LOGIT_ATOL, agree_where_clear, assert_generation_agrees, beam_mismatches,
                      encoder_disagreements, encoder_outputs, greedy_mismatches, reference_margins, sequence_logprob,
                      top2_margin, within)


def test_top2_margin_and_agreement_ignore_near_ties():
    want = np.array([[5.0, 1.0, 0.0], [2.0, 1.999, 0.0], [0.0, 0.0, 3.0]])
    assert np.allclose(top2_margin(want), [4.0, 0.001, 3.0])
    got = np.array([[4.9, 1.1, 0.0], [1.999, 2.0, 0.0], [0.0, 3.1, 3.0]])    # row 1 flips a near-tie, row 2 a clear win
    found = agree_where_clear(got, want, margin=0.02)
    assert (found.clear, found.total, found.mismatches) == (2, 3, [(2,)])
    assert not found.ok
    assert agree_where_clear(got[:2], want[:2], margin=0.02).ok
    masked = agree_where_clear(got, want, margin=0.02, valid=np.array([True, True, False]))
    assert masked.ok and masked.total == 2


def test_within_is_relative_to_the_reference_range_and_respects_the_mask():
    want = np.array([[0.0, 10.0], [5.0, 5.0]])
    got = want + np.array([[0.1, 0.0], [0.0, 3.0]])
    assert within(got, want, relative=0.02) > 0                    # 3.0 > 0.02 * 10
    assert within(got, want, relative=0.02, valid=np.array([True, False])) < 0   # only row 0: 0.1 <= 0.2
    assert within(got[:1], want[:1], atol=0.1) <= 0


def test_greedy_tokens_must_agree_until_the_first_near_tie():
    want = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    margins = np.array([[5.0, 5.0, 0.001, 5.0], [5.0, 5.0, 5.0, 5.0]])
    after_tie = np.array([[1, 2, 9, 9], [1, 2, 3, 4]])      # row 0 diverges at its near-tie: allowed
    assert greedy_mismatches(after_tie, want, margins, 0.02) == []
    before_tie = np.array([[1, 7, 3, 4], [1, 2, 3, 8]])     # row 0 at a clear step, row 1 with no tie at all
    assert greedy_mismatches(before_tie, want, margins, 0.02) == [(0, 1), (1, 3)]


def test_beams_may_differ_only_where_their_scores_tie():
    logits = np.log(np.array([[[0.6, 0.4], [0.5, 0.5]]]))      # 1 row, 2 steps, 2 tokens
    want, tie, worse = np.array([[0, 0]]), np.array([[0, 1]]), np.array([[1, 0]])
    assert np.allclose(sequence_logprob(logits, want), np.log(0.6 * 0.5))
    lp = lambda t: sequence_logprob(logits, t)
    assert beam_mismatches(tie, want, lp(tie), lp(want), FP32_LOGIT_ATOL) == []      # same score: either is right
    assert beam_mismatches(worse, want, lp(worse), lp(want), FP32_LOGIT_ATOL) == [0]  # log 0.6/0.4 apart: a real miss
    assert beam_mismatches(want, want, lp(want), lp(want), FP32_LOGIT_ATOL) == []


def test_fp16_rules_hold_for_onnx_runtimes_fp16_graph_on_the_cpu(workdir, gpt2_tiny, prompts):
    """The fp16 bound and the decision rule, applied where this machine can: ONNX Runtime's fp16 GPT2
    graph against fp32 PyTorch. Every clear next-token decision agrees, and most decisions are clear
    (so the rule is not passing by excusing everything)."""
    from GPT2.frameworks import make_backend as frameworks
    from GPT2.onnxrt import make_backend as onnxrt

    ids, mask = prompts
    want = frameworks(gpt2_tiny, make_cfg(workdir, "--cpu")).logits(ids, mask)
    got = onnxrt(gpt2_tiny, make_cfg(workdir, "--fp16", backends=("onnxrt",)), workdir).logits(ids, mask)
    margin = 2 * FP16_RELATIVE * float(want[mask == 1].max() - want[mask == 1].min())
    found = agree_where_clear(got, want, margin, valid=mask)
    assert found.ok, found.mismatches
    assert found.clear >= 0.5 * found.total, (found.clear, found.total)
    assert within(got, want, relative=FP16_RELATIVE, valid=mask) <= 0


@pytest.mark.parametrize("beams", [1, 3], ids=["greedy", "beam3"])
def test_the_gpu_generation_rule_on_the_standin(standin, workdir, gpt2_tiny, prompts, beams):
    """test_trt_gpu.py's rule, run end to end where it can run: trt on the CPU stand-in against fp32
    PyTorch passes it, a token changed at a clear step fails it, and the reference's margins are
    mostly clear (gpt2-tiny's wide weights), so the rule is not passing by excusing everything."""
    from GPT2 import trt
    from GPT2.frameworks import make_backend as frameworks

    ids, mask = prompts
    reference = frameworks(gpt2_tiny, make_cfg(workdir, "--cpu"))
    cfg = make_cfg(workdir, "--use-cache", "--batch-size", "3", "--num-beams", str(beams), "--output-seq-len", "16",
                   backends=("trt",))
    want = reference.generate(ids, mask, cfg.generation).tokens
    got = trt.make_backend(gpt2_tiny, cfg, workdir).generate(ids, mask, cfg.generation).tokens
    assert_generation_agrees(got, want, reference, ids, mask, beams)
    margins, _ = reference_margins(reference, ids, mask, want, reference.token_ids.eos)
    assert (margins > 2 * FP32_LOGIT_ATOL).mean() > 0.75      # 0.81 measured here
    broken, row = want.copy(), int(np.argmax(margins[:, 0]))      # a row whose first step is a clear win
    assert margins[row, 0] > 2 * FP32_LOGIT_ATOL
    broken[row, 0] = (broken[row, 0] + 1) % gpt2_tiny.model.config.vocab_size
    with pytest.raises(AssertionError):
        assert_generation_agrees(broken, want, reference, ids, mask, beams)


ENCODERS = [("BERT", "distilbert-tiny-sst2"), ("BERT", "bert-tiny-squad"), ("BERT", "bert-tiny-ner"),
            ("BERT", "minilm-tiny-embeddings"), ("VIT", "vit-tiny-shapes")]


@pytest.mark.parametrize("family,variant", ENCODERS, ids=[v for _, v in ENCODERS])
def test_the_gpu_encoder_rule_on_onnx_runtime(workdir, family, variant):
    """test_encoders_gpu.py's checks where this machine can run them: ONNX Runtime's fp32 graph within
    FP32_LOGIT_ATOL of PyTorch and its fp16 graph within FP16_RELATIVE, with every clear decision the
    same; and a planted error (one example's outputs shifted) is caught."""
    for flags, tolerance in (((), {"atol": FP32_LOGIT_ATOL}), (("--fp16",), {"relative": FP16_RELATIVE})):
        _, got, want, mask, embeddings = encoder_outputs(family, variant, workdir, "onnxrt", *flags)
        assert encoder_disagreements(got, want, mask, embeddings, **tolerance) == []
    planted = {name: value.copy() for name, value in got.items()}
    for value in planted.values():
        value[0] = value[0][::-1] if embeddings else value[0] + 10 * np.arange(value.shape[-1])
    assert encoder_disagreements(planted, want, mask, embeddings, relative=FP16_RELATIVE) != []
