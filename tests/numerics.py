"""How results from different hardware or precisions are compared (issue 24): exactly only where
physics says they must agree, elsewhere within a stated tolerance, each with its reason.

A GPU computes the same fp32 graph as the CPU with its sums in another order (kernels split and fuse
reductions differently), so two backends agree on a decision (a greedy token, a class) only where the
reference's winner leads its runner-up by more than the numerical error; a near-tie may flip, and
after a flipped token a generation's inputs differ, so may everything after it. The gpu-marked tests
use these checks; their logic is tested on the CPU (tests/test_numerics.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP32_LOGIT_ATOL = 1e-2
"""fp32 with TF32 off on both sides (TensorRT's TF32 flag cleared, PyTorch on the CPU): only the
order of summation differs. A sum of K fp32 terms carries up to about K * 2^-24 relative error; the
tiny models (2 layers, width 64-256, logits of magnitude ~10) stay near 1e-4 absolute. 1e-2 leaves
two orders of magnitude for TensorRT's fused softmax/GELU kernels, which approximate differently."""

FP16_RELATIVE = 2e-2
"""fp16 activations (11-bit significand: 2^-11, about 4.9e-4, per rounding) through two layers
against the fp32 reference, relative to the output's range: the encoders' fp16 graphs measured
within 2e-2 of fp32 on the CPU stand-in (README, Encoders). A GPU's fp16 kernels accumulate in fp32
or fp16 by their own choice, so this is a bound to be confirmed on a GPU, not a measured one."""


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """How far each row's (last axis) largest value leads its second largest."""
    part = np.partition(np.asarray(logits, np.float64), -2, axis=-1)
    return part[..., -1] - part[..., -2]


@dataclass
class Agreement:
    clear: int            # decisions whose reference winner leads by more than the margin
    total: int
    mismatches: list      # indices of clear decisions the two disagree on

    @property
    def ok(self) -> bool:
        return not self.mismatches


def agree_where_clear(got: np.ndarray, want: np.ndarray, margin: float, valid: np.ndarray | None = None) -> Agreement:
    """Argmax agreement along the last axis wherever `want`'s winner leads by more than `margin`
    (and `valid`, of the leading shape, says the position counts)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    counted = np.ones(want.shape[:-1], bool) if valid is None else np.asarray(valid, bool)
    clear = counted & (top2_margin(want) > margin)
    differ = clear & (got.argmax(-1) != want.argmax(-1))
    return Agreement(int(clear.sum()), int(counted.sum()), [tuple(int(i) for i in ix) for ix in np.argwhere(differ)])


def within(got: np.ndarray, want: np.ndarray, atol: float = 0.0, relative: float = 0.0,
           valid: np.ndarray | None = None) -> float:
    """The largest |got - want| over valid entries, minus the allowed `atol + relative * range(want)`:
    <= 0 means within. (`valid` has the leading shape and is broadcast over the rest.)"""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if valid is not None:
        mask = np.broadcast_to(np.asarray(valid, bool).reshape(np.shape(valid) + (1,) * (want.ndim - np.ndim(valid))),
                               want.shape)
        got, want = got[mask], want[mask]
    if want.size == 0:
        return 0.0
    return float(np.abs(got - want).max() - (atol + relative * (want.max() - want.min())))


def greedy_mismatches(got: np.ndarray, want: np.ndarray, want_margins: np.ndarray, margin: float) -> list[tuple]:
    """(row, step) of every row whose greedy tokens differ before that row's first near-tie.

    want_margins[row, step] is the reference's lead of its chosen token at that step. Tokens must be
    equal up to the first step whose lead is within `margin` (where a legitimate flip may happen);
    from there on the inputs may differ, and so may every later token."""
    found = []
    for row in range(want.shape[0]):
        near = np.flatnonzero(want_margins[row] <= margin)
        decided = near[0] if near.size else want.shape[1]
        differ = np.flatnonzero(got[row, :decided] != want[row, :decided])
        if differ.size:
            found.append((row, int(differ[0])))
    return found


def sequence_logprob(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Per row, the sum over steps of log softmax(logits[row, step])[tokens[row, step]]."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0].sum(-1)


def beam_mismatches(got: np.ndarray, want: np.ndarray, got_logprob: np.ndarray, want_logprob: np.ndarray,
                    per_step: float) -> list[int]:
    """Rows whose beam-search outputs differ although their scores do not tie.

    Beam search keeps the best hypotheses by summed log-probability, so two backends may return
    different beams only where those beams score the same within the numerical error: a log softmax
    moves by at most twice the logits' error, hence per step 2 x (the logit tolerance). Both scores
    are computed by one model (the reference), so only the choice is being compared."""
    steps = want.shape[1]
    return [row for row in range(want.shape[0])
            if not np.array_equal(got[row], want[row])
            and abs(float(got_logprob[row]) - float(want_logprob[row])) > 2 * per_step * steps]


def reference_margins(reference, ids, mask, tokens, eos: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference's teacher-forced logits over `tokens` after the prompt: (the lead of each step's
    chosen token over the runner-up, each row's summed log-probability of those tokens). Steps after
    a row's first `eos` are padding, not choices: their lead is infinite and they add no log-probability."""
    full = np.concatenate([ids, tokens], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(tokens)], axis=1)
    logits = np.asarray(reference.logits(full, full_mask), np.float64)[:, ids.shape[1] - 1:-1]   # each token's logits
    chosen = np.take_along_axis(logits, tokens[..., None], -1)[..., 0]
    runner_up = np.where(np.arange(logits.shape[-1]) == tokens[..., None], -np.inf, logits).max(-1)
    after_eos = np.zeros(tokens.shape, bool)
    if eos is not None:
        hit = np.cumsum(tokens == eos, axis=1)
        after_eos = (hit - (tokens == eos)) > 0
    shifted = logits - logits.max(-1, keepdims=True)
    logp = np.take_along_axis(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)), tokens[..., None], -1)[..., 0]
    return np.where(after_eos, np.inf, chosen - runner_up), np.where(after_eos, 0.0, logp).sum(-1)


def assert_generation_agrees(got: np.ndarray, want: np.ndarray, reference, ids, mask, beams: int) -> None:
    """Another fp32 backend's tokens (`got`; a GPU engine with TF32 off) against the fp32 reference's
    (`want`): greedy tokens equal up to each row's first near-tie (a step whose winner leads by at most
    twice the logit tolerance may flip), beam outputs equal unless their scores tie within the error."""
    eos = reference.token_ids.eos
    if beams == 1:
        margins, _ = reference_margins(reference, ids, mask, want, eos)
        assert greedy_mismatches(got, want, margins, 2 * FP32_LOGIT_ATOL) == [], (got, want)
    else:
        _, want_score = reference_margins(reference, ids, mask, want, eos)
        _, got_score = reference_margins(reference, ids, mask, got, eos)
        assert beam_mismatches(got, want, got_score, want_score, FP32_LOGIT_ATOL) == [], (got, want)


EMBEDDING_COSINE = 0.999
"""Two backends' embeddings are the same answer at cosine >= 0.999 (README, Encoders: compare's rule)."""


def encoder_disagreements(got: dict, want: dict, mask: np.ndarray | None, embeddings: bool,
                          atol: float = 0.0, relative: float = 0.0) -> list[str]:
    """What is wrong between two encoders' outputs (name -> array), empty if nothing: every value within
    `atol + relative * range`, and every decision (the class of a row or token, a QA span's start or
    end token) the same wherever the reference's winner leads by more than twice that; embeddings by
    cosine. `mask` [batch, tokens] marks real tokens (None for images)."""
    problems = []
    for name, w in want.items():
        g, w = np.asarray(got[name], np.float64), np.asarray(w, np.float64)
        if embeddings:
            cos = (g * w).sum(-1) / (np.linalg.norm(g, axis=-1) * np.linalg.norm(w, axis=-1))
            if cos.min() < EMBEDDING_COSINE:
                problems.append(f"{name}: cosine {cos.min():.5f} < {EMBEDDING_COSINE}")
            continue
        per_token = mask is not None and w.shape == mask.shape             # QA: a score per token
        valid = mask if mask is not None and w.ndim == 3 else None         # NER: a class per real token
        if per_token:
            excess = within(g[mask == 1], w[mask == 1], atol, relative)
            g, w = np.where(mask == 1, g, -1e9), np.where(mask == 1, w, -1e9)   # a span never starts on padding
        else:
            excess = within(g, w, atol, relative, valid=valid)
        if excess > 0:
            problems.append(f"{name}: off by {excess:.3g} more than allowed")
        real = w[mask == 1] if per_token else w
        margin = 2 * (atol + relative * float(real.max() - real.min()))
        found = agree_where_clear(g, w, margin, valid=valid)
        if not found.ok:
            problems.append(f"{name}: clear decisions differ at {found.mismatches[:5]}")
    return problems


def encoder_outputs(family: str, variant: str, workdir, backend: str, *flags: str):
    """(the backend's outputs, PyTorch fp32's on the host, the batch's token mask, whether embeddings)
    for every checkpoint.toml example of the variant in one batch."""
    from NNDF.actions.encoder import examples
    from NNDF.cli import parse_args
    from NNDF.kinds.encoder_only.backends import TorchEncoder
    from NNDF.kinds.encoder_only.inputs import encode
    from NNDF.kinds.encoder_only.tasks import Task
    from NNDF.kinds.makers import make_backends
    from NNDF.registry import get_family
    from NNDF.runtime.placement import framework_placement

    cfg = parse_args(["run", family, backend, "--variant", variant, "--working-dir", str(workdir.root), *flags])
    fam = get_family(family)
    loaded = fam.load(cfg)
    rows = [row for _, batch_rows, _, _ in examples(cfg, fam, loaded, backend, cfg.graph_precision) for row in batch_rows]
    batch = encode(loaded, rows)
    made, = make_backends(fam, loaded, cfg, workdir)
    reference = TorchEncoder(loaded, framework_placement(True, False))
    return (made, made.forward(batch.feed), reference.forward(batch.feed), batch.feed.get("attention_mask"),
            loaded.task is Task.EMBEDDINGS)
