"""One generation loop for every compiled backend.

The loop owns token bookkeeping (greedy, sampling and beam search, EOS,
min/max new tokens); a `StepModel` owns the model (prefill, cache, encoder).
Greedy and beam search follow HuggingFace `generate` step for step (same
scores, same tie-free choices, same stopping rules), so the same settings give
the same tokens on every backend, which is what the tests check. Sampling
applies HF's logits processors in HF's order and draws with one seeded numpy
generator, so onnxrt and trt give the same tokens for the same seed (PyTorch
draws with torch's generator, so its samples differ).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from NNDF.base.config import GenerationSettings, TokenIds

NEG = np.float32(-1e9)


class StepModel(Protocol):
    def plan(self, rows: int, prompt_len: int, new_tokens: int) -> None:
        """Before anything runs: fail (one UsageError line) if `rows` rows with a `prompt_len`-token
        prompt and up to `new_tokens` new tokens would need sizes a session cannot take."""

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        """Consume the prompt side; return (state, first decoder ids, their mask).

        Decoder-only models return the prompt and its mask; encoder-decoders run
        the encoder (and cross-attention cache generator) and return the start token.
        """

    def step(self, state: Any, decoder_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits (batch, vocab) for the next token after `decoder_ids` (all tokens so far)."""

    def reorder(self, state: Any, beam_idx: np.ndarray) -> None:
        """Beam search: row i of the state now continues row beam_idx[i]."""


@dataclass
class GenerationOutput:
    tokens: np.ndarray                          # (batch, new_tokens), rows finished early padded like HF
    step_times: list[float] = field(default_factory=list)   # seconds per model step, first one is the prefill
    start_s: float = 0.0                        # consuming the prompt side: the encoder (+ cache generator)

    @property
    def prefill_s(self) -> float:
        return self.step_times[0] if self.step_times else 0.0

    @property
    def decode_step_s(self) -> list[float]:
        return self.step_times[1:]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest k along the last axis, sorted descending (like torch.topk)."""
    part = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(x, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(vals, order, axis=-1), np.take_along_axis(part, order, axis=-1)


def _gather_beams(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x: (batch, beams, ...), idx: (batch, k) -> (batch, k, ...)."""
    return np.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


# Called once per step of greedy search or sampling with that step's new token of every row
# (finished rows get the pad token, as in the returned tokens). Beam search has no final
# tokens until it ends, so it does not stream.
OnStep = Callable[[np.ndarray], None]


def generate(model: StepModel, input_ids: np.ndarray, attention_mask: np.ndarray,
             settings: GenerationSettings, ids: TokenIds, on_step: OnStep | None = None) -> GenerationOutput:
    model.plan(input_ids.shape[0] * settings.num_beams, input_ids.shape[1], settings.max_new_tokens)
    if settings.num_beams > 1:
        return _beam_search(model, input_ids, attention_mask, settings, ids)
    return _greedy_or_sample(model, input_ids, attention_mask, settings, ids, on_step)


class _Timer:
    def __init__(self):
        self.times: list[float] = []

    def call(self, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.times.append(time.perf_counter() - start)
        return out


def leading_pads(mask: np.ndarray) -> np.ndarray:
    """Per row, the number of left-padding positions (HF's repetition penalty ignores them)."""
    return (mask != 0).argmax(axis=1)


def apply_repetition_penalty(scores: np.ndarray, seqs: np.ndarray, pads: np.ndarray, penalty: float) -> None:
    """HF's RepetitionPenaltyLogitsProcessor, in place: every token already in a row (its prompt
    after the left padding, and what was generated) is made less likely: a positive score is
    divided by the penalty, a negative one multiplied."""
    rows, vocab = scores.shape
    seen_ids = np.where(np.arange(seqs.shape[1])[None, :] < pads[:, None], vocab, np.minimum(seqs, vocab))
    seen = np.zeros((rows, vocab + 1), bool)   # column `vocab` absorbs padding and ids beyond the logits
    seen[np.arange(rows)[:, None], seen_ids] = True
    p = np.float32(penalty)
    penalised = np.where(scores < 0, scores * p, scores / p)
    scores[...] = np.where(seen[:, :vocab], penalised, scores)


def process_scores(scores: np.ndarray, seqs: np.ndarray, pads: np.ndarray, prompt_len: int,
                    settings: GenerationSettings, ids: TokenIds) -> None:
    """HF's logits processors that our settings can switch on, in HF's order: the repetition
    penalty, EOS held back until min_new_tokens, then the forced first and last tokens (which
    win over it). `seqs` are all tokens so far, (rows, cur_len)."""
    cur_len = seqs.shape[1]
    if settings.repetition_penalty != 1.0:
        apply_repetition_penalty(scores, seqs, pads, settings.repetition_penalty)
    if ids.eos is not None and cur_len - prompt_len < settings.min_new_tokens:
        scores[..., ids.eos] = -np.inf
    forced = ids.forced_bos if cur_len == 1 else None
    if cur_len == prompt_len + settings.max_new_tokens - 1 and ids.forced_eos is not None:
        forced = ids.forced_eos
    if forced is not None:
        scores[...] = -np.inf
        scores[..., forced] = 0.0


def warp_for_sampling(scores: np.ndarray, settings: GenerationSettings, min_keep: int = 1) -> np.ndarray:
    """HF's sampling warpers in HF's order: temperature, top-k, top-p (each only when it changes
    something, as HF adds them). Filtered tokens get -inf."""
    vocab = scores.shape[-1]
    if settings.temperature != 1.0:
        scores = scores / np.float32(settings.temperature)
    if settings.top_k != 0:
        k = min(max(settings.top_k, min_keep), vocab)
        kth = top_k(scores, k)[0][..., -1:]
        scores = np.where(scores < kth, -np.inf, scores).astype(np.float32)
    if settings.top_p < 1.0:
        order = np.argsort(scores, axis=-1, kind="stable")                 # ascending, as HF sorts
        ascending = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(softmax(ascending), axis=-1, dtype=np.float32)
        drop_sorted = cumulative <= np.float32(1 - settings.top_p)
        drop_sorted[..., -min_keep:] = False
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        scores = np.where(drop, -np.inf, scores).astype(np.float32)
    return scores


def softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Sampler:
    """Draws one token per row from softmax(scores) with a seeded numpy generator.

    Inverse-CDF draws in float64: one uniform number per row and step, so two backends
    whose logits agree draw the same tokens; a token of probability 0 is never drawn."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        shifted = scores.astype(np.float64) - scores.max(axis=-1, keepdims=True)
        cdf = np.cumsum(np.exp(shifted), axis=-1)
        u = self.rng.random(scores.shape[0]) * cdf[:, -1]
        return np.minimum((cdf <= u[:, None]).sum(axis=-1), scores.shape[-1] - 1).astype(np.int64)


def _greedy_or_sample(model, input_ids, attention_mask, settings, ids, on_step: OnStep | None) -> GenerationOutput:
    timer = _Timer()
    state, seq, mask = timer.call(model.start, input_ids, attention_mask)
    start_s = timer.times.pop()
    batch, prompt_len = seq.shape
    pads = leading_pads(mask)
    sampler = Sampler(settings.seed) if settings.do_sample else None
    unfinished = np.ones(batch, dtype=bool)
    pad = ids.pad if ids.pad is not None else ids.eos
    new = []
    for step in range(settings.max_new_tokens):
        logits = timer.call(model.step, state, seq, mask).astype(np.float32, copy=True)
        process_scores(logits, seq, pads, prompt_len, settings, ids)
        if sampler is not None:
            nxt = sampler(warp_for_sampling(logits, settings))
        else:
            nxt = logits.argmax(axis=-1).astype(np.int64)
        if ids.eos is not None:
            nxt = np.where(unfinished, nxt, pad)
            unfinished &= nxt != ids.eos
        new.append(nxt)
        if on_step is not None:
            on_step(nxt)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones((batch, 1), mask.dtype)], axis=1)
        if not unfinished.any():
            break
    tokens = np.stack(new, axis=1) if new else np.zeros((batch, 0), np.int64)
    return GenerationOutput(tokens, timer.times, start_s)


def _beam_search(model, input_ids, attention_mask, settings, ids) -> GenerationOutput:
    """A numpy port of transformers' vectorised beam search (5.x `_beam_search`)."""
    timer = _Timer()
    nb = settings.num_beams
    batch = input_ids.shape[0]
    state, seq, mask = timer.call(model.start, np.repeat(input_ids, nb, axis=0), np.repeat(attention_mask, nb, axis=0))
    start_s = timer.times.pop()
    prompt_len = cur_len = seq.shape[1]
    max_length = prompt_len + settings.max_new_tokens
    eos, lp, early = ids.eos, ids.length_penalty, ids.early_stopping
    keep = max(2, 1 + (eos is not None)) * nb
    fill = (ids.pad or eos) if eos is not None else -1
    top_beams = np.arange(keep) < nb
    pads = leading_pads(mask)

    running = np.full((batch, nb, max_length), fill, np.int64)
    running[:, :, :cur_len] = seq.reshape(batch, nb, cur_len)
    finished_seqs = running.copy()
    running_scores = np.zeros((batch, nb), np.float32)
    running_scores[:, 1:] = NEG
    finished_scores = np.full((batch, nb), NEG, np.float32)
    is_finished = np.zeros((batch, nb), bool)
    improvable = np.ones((batch, 1), bool)
    running_idx = np.full((batch, nb, settings.max_new_tokens), -1, np.int64)
    finished_idx = running_idx.copy()
    offsets = (np.arange(batch) * nb)[:, None]

    while True:
        flat = running[:, :, :cur_len].reshape(batch * nb, cur_len)
        logits = timer.call(model.step, state, flat, mask)
        log_probs = log_softmax(logits)
        process_scores(log_probs, flat, pads, prompt_len, settings, ids)
        vocab = log_probs.shape[-1]
        scores = (log_probs.reshape(batch, nb, vocab) + running_scores[:, :, None]).reshape(batch, nb * vocab)

        topk_scores, topk_flat = top_k(scores, keep)
        src_beam, token = topk_flat // vocab, topk_flat % vocab
        topk_seqs = _gather_beams(running, src_beam)
        topk_seqs[:, :, cur_len] = token
        topk_idx = _gather_beams(running_idx, src_beam)
        topk_idx[:, :, cur_len - prompt_len] = src_beam + offsets
        hits = np.full(token.shape, cur_len + 1 >= max_length)
        if eos is not None:
            hits |= token == eos

        # beams that continue: best `nb` candidates that did not stop
        cont_scores = topk_scores + hits.astype(np.float32) * NEG
        _, nxt = top_k(cont_scores, nb)
        running = _gather_beams(topk_seqs, nxt)
        running_scores = _gather_beams(cont_scores, nxt)
        running_idx = _gather_beams(topk_idx, nxt)

        # candidates that stopped among the top `nb` may enter the finished set
        just_done = hits & top_beams[None, :]
        done_scores = topk_scores / np.float32((cur_len + 1 - prompt_len) ** lp)
        full = is_finished.all(axis=-1, keepdims=True) & (early is True)
        done_scores = done_scores + full * NEG + (~improvable) * NEG + (~just_done) * NEG
        merged_scores = np.concatenate([finished_scores, done_scores.astype(np.float32)], axis=1)
        _, best = top_k(merged_scores, nb)
        finished_seqs = _gather_beams(np.concatenate([finished_seqs, topk_seqs], axis=1), best)
        finished_scores = _gather_beams(merged_scores, best)
        finished_idx = _gather_beams(np.concatenate([finished_idx, topk_idx], axis=1), best)
        is_finished = _gather_beams(np.concatenate([is_finished, just_done], axis=1), best)

        model.reorder(state, running_idx[..., cur_len - prompt_len].reshape(-1))
        cur_len += 1
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), mask.dtype)], axis=1)

        best_len = (max_length if (early == "never" and lp > 0) else cur_len) - prompt_len
        best_possible = running_scores[:, :1] / np.float32(best_len ** lp)
        worst_done = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), NEG)
        improvable = improvable & (best_possible > worst_done).any(axis=-1, keepdims=True)
        open_beams = not (is_finished.all() and early is True)
        if not (improvable.any() and open_beams and not hits.all()):
            break

    best_idx = finished_idx[:, 0, :]
    gen_len = int((best_idx >= 0).sum(axis=1).max())
    return GenerationOutput(finished_seqs[:, 0, prompt_len:prompt_len + gen_len], timer.times, start_s)
