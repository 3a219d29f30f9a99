"""Continuous batching: rows of one cached decoder-only graph that join and leave between decode steps.

The generation loop (generation.py) runs one batch from its prompt to its end. A server wants more:
a request that arrives while others decode should start at the next step, and a row that finishes
should stop costing anything at once. `BatchDecoder` gives a scheduler (NNDF/serving/continuous.py)
the three moves that takes, on the same graph and sessions as generation:

- `prefill(prompts)`: newcomers' prompts, left-padded into one batch, on an empty past; their KV
  cache (a `RowCache`) and logits;
- `step(cache, tokens)`: one decode step of every row: each row's newest token on its past;
- `regroup(parts)`: a new cache of chosen rows of several caches (the rows still running and the
  newcomers), at step boundaries only.

`batch_decoder(steps)` gives them for the step model's cache layout: `BatchDecoder` for the traced
graphs' growing cache (below), `InPlaceBatchDecoder` for a cache written in place (inplace_cache.py).

A `RowCache` is the fixed-capacity cache of cached_decoder.py in its growing form: rows are
right-aligned on a shared number of slots, a row's first slots masked (attention_mask 0) where it is
shorter than the longest. That is exact for these models because they take their positions from
the mask (position ids count a row's real tokens; BLOOM's ALiBi uses the mask's cumulative sum) and
masked slots get no attention weight, as with left-padded prompts. Each step appends one slot to
every row (the graph's present is its past plus the new token, fed back as the next past, so a step
costs what a batched generation step costs); `regroup` keeps exactly as many slots as the longest
remaining row needs, so the cache shrinks again when long rows leave and grows to whatever a
newcomer needs: capacity is never fixed in advance, only bounded by the model's positions (and a
TensorRT engine's profile, checked before a request is queued).

Token choice per row (`RowChooser`) is the generation loop's: HF's processors in HF's order, then
greedy argmax or the seeded sampler, with one sampler per row: a sampled row draws one number per
step from its own seed, so its tokens do not depend on which rows decode beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from NNDF.base.config import GenerationSettings, TokenIds
from NNDF.graphs.axes import largest_sizes, run_description
from NNDF.runtime.cached_decoder import CachedDecoder
from NNDF.runtime.generation import Sampler, log_softmax, process_scores, top_k, warp_for_sampling
from NNDF.runtime.inplace_cache import InPlaceCacheDecoder, InPlaceState, round_up
from NNDF.runtime.session import Handle


@dataclass
class RowCache:
    """The KV cache of some rows: per past input one handle (rows along the batch axis, slots along the
    past axis), right-aligned, and the mask over the slots (1: a real token)."""

    past: list[Handle]
    mask: np.ndarray     # (rows, slots) int64
    capacity: int = 0    # slots per row in the buffers of a cache written in place (InPlaceBatchDecoder)
    pool: RowPool | None = None   # the row pool `past` are views of (InPlaceBatchDecoder)

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def slots(self) -> int:
        return self.mask.shape[1]


@dataclass
class Prefilled:
    cache: RowCache
    logits: list[np.ndarray]   # per prompt: (its length, vocab) when every position was asked for, else (vocab,)


class BatchDecoder:
    """The three moves of continuous batching over one decoder-only graph with a KV cache."""

    def __init__(self, steps: CachedDecoder):
        if not steps.with_cache:
            raise ValueError("continuous batching needs the decoder graph with a KV cache")
        self.steps, self.session = steps, steps.session

    def check_fits(self, rows: int, prompt_len: int, new_tokens: int) -> None:
        """Fail (one UsageError line) if the session cannot take these sizes (a TensorRT profile)."""
        sizes = largest_sizes(rows, prompt_len, new_tokens, True)
        self.session.check_fits(sizes, run_description(rows, prompt_len, new_tokens))

    def prefill(self, prompts: Sequence[Sequence[int]], all_logits: bool = False) -> Prefilled:
        """The prompts (each at least one token) as one left-padded batch on an empty past."""
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = prompt
            mask[i, width - len(prompt):] = 1
        state = self.steps.empty_state(len(prompts))
        logits = self.steps.advance(state, ids, mask, all_logits=all_logits)
        rows = [logits[i, logits.shape[1] - len(p):] if all_logits else logits[i, -1] for i, p in enumerate(prompts)]
        return Prefilled(RowCache(state.past, mask), rows)

    def step(self, cache: RowCache, tokens: np.ndarray) -> tuple[RowCache, np.ndarray]:
        """Every row's newest token (not yet in the cache) on its past: the next cache and logits (rows, vocab)."""
        mask = np.concatenate([cache.mask, np.ones((cache.rows, 1), np.int64)], axis=1)
        feed = self.steps.feed(np.asarray(tokens, np.int64).reshape(-1, 1), mask, 0, all_logits=False)
        feed.update(zip(self.steps.past, cache.past))
        host, device = self.session.run(feed, ["logits"], self.steps.present)
        return RowCache([device[n] for n in self.steps.present], mask), host["logits"][:, -1]

    def regroup(self, parts: Sequence[tuple[RowCache, Sequence[int]]]) -> RowCache:
        """The chosen rows of each cache, in order, on as many slots as the longest of them fills."""
        parts = [(cache, list(rows)) for cache, rows in parts if len(rows)]
        length = max(int(cache.mask[rows].sum(axis=1).max()) for cache, rows in parts)
        mask = np.concatenate([_right_aligned(cache.mask[rows], length) for cache, rows in parts])
        past = [self.session.regroup(name, [(cache.past[k], rows) for cache, rows in parts], self.steps.batch_axis,
                                     self.steps.past_axis, length)
                for k, name in enumerate(self.steps.past)]
        return RowCache(past, mask)


class InPlaceBatchDecoder(BatchDecoder):
    """The three moves on a graph whose cache is written in place (inplace_cache.py). A RowCache's rows keep
    their tokens in slots 0 .. n-1 (its mask is left-aligned: ones, then zeros), since slot = position in
    that graph, so a row can move to another row of the buffers without moving a slot.

    The running rows live in a row pool (`RowPool`): per past input one buffer [pool rows, kv_heads,
    capacity, head_dim] kept from step to step, whose first n rows are the batch. A step reads and writes a
    view of those rows, nothing copied. A regroup keeps rows where they are: a row that stays keeps its
    pool row, the holes that leaving rows open below n are filled by the rows above n (one row copied per
    row that left, where copying the whole batch cost 29 ms of a 16-row GPT2 boundary), and the
    newcomers' prompt slots are copied behind them. The pool is replaced by a bigger one, its rows copied
    once, when more rows run than it holds or a row needs more slots than its capacity (grown by a bucket,
    so once every 64 steps of the longest row)."""

    steps: InPlaceCacheDecoder

    def __init__(self, steps: InPlaceCacheDecoder):
        super().__init__(steps)
        self.pool: RowPool | None = None

    def prefill(self, prompts: Sequence[Sequence[int]], all_logits: bool = False) -> Prefilled:
        lengths = np.array([len(p) for p in prompts])
        width = int(lengths.max())
        ids = np.zeros((len(prompts), width), np.int64)
        for i, prompt in enumerate(prompts):
            ids[i, :len(prompt)] = prompt
        state = self.steps.empty_state(len(prompts), round_up(width + 1))
        positions = np.tile(np.arange(width), (len(prompts), 1)) if all_logits else (lengths - 1)[:, None]
        logits = self.steps.run(state, ids, lengths, positions)
        rows = [logits[i, :len(p)] if all_logits else logits[i, 0] for i, p in enumerate(prompts)]
        return Prefilled(RowCache(state.buffers, _left_aligned(lengths, width), state.capacity), rows)

    def step(self, cache: RowCache, tokens: np.ndarray) -> tuple[RowCache, np.ndarray]:
        if cache.slots + 1 > cache.capacity:        # the step writes each row's slot `length`: grow the pool first
            cache = self.regroup([(cache, range(cache.rows))])
        lengths = cache.mask.sum(axis=1)
        state = InPlaceState(cache.past, cache.capacity, lengths, np.zeros_like(lengths))
        rows = cache.rows
        logits = self.steps.run(state, np.asarray(tokens, np.int64).reshape(rows, 1), np.ones(rows, np.int64),
                                np.zeros((rows, 1), np.int64))
        return (RowCache(state.buffers, _left_aligned(state.lengths, cache.slots + 1), state.capacity, cache.pool),
                logits[:, 0])

    def regroup(self, parts: Sequence[tuple[RowCache, Sequence[int]]]) -> RowCache:
        parts = [(cache, list(rows)) for cache, rows in parts if len(rows)]
        lengths = np.concatenate([cache.mask[rows].sum(axis=1) for cache, rows in parts])
        length = int(lengths.max())
        pool = self.pool
        in_pool = [pool is not None and cache.pool is pool for cache, _ in parts]
        base, moves = None, []
        if in_pool[0] and not any(in_pool[1:]):
            moves = [(source, target) for target, source in enumerate(parts[0][1]) if source != target]
            if not {s for s, _ in moves} & {t for _, t in moves}:
                base = parts[0]             # else rows trade places: they are copied into a fresh pool
        if pool is None or any(in_pool) and base is None or len(lengths) > pool.rows or length + 1 > pool.capacity:
            pool = self.pool = self._new_pool(len(lengths), length + 1)     # the parts keep the old one alive
            base = None
        at = 0
        if base is not None:                # the pool's own rows: only those that fill a hole move
            for source, target in moves:
                for buffer in pool.buffers:
                    self.session.copy_slots(buffer, buffer, [source], target, int(base[0].mask[source].sum()),
                                            self.steps.batch_axis, self.steps.slot_axis)
            at = len(base[1])
        for cache, rows in parts[1 if base is not None else 0:]:
            for target, source in zip(pool.buffers, cache.past):
                self.session.copy_slots(target, source, rows, at, min(cache.slots, length), self.steps.batch_axis,
                                        self.steps.slot_axis)
            at += len(rows)
        past = [self.session.leading_rows(buffer, len(lengths)) for buffer in pool.buffers]
        return RowCache(past, _left_aligned(lengths, length), pool.capacity, pool)

    def _new_pool(self, rows: int, slots: int) -> RowPool:
        """Fresh pool buffers for at least `rows` rows (a power of two, at least what the old pool held) of
        `slots` slots rounded up to a bucket."""
        old = self.pool
        rows = max(1 << (rows - 1).bit_length(), old.rows if old is not None else 0)
        capacity = round_up(slots)
        shape = [rows, self.steps.kv_heads, capacity, self.steps.head_dim]
        return RowPool([self.session.slot_buffer(name, shape) for name in self.steps.past], rows, capacity)


@dataclass
class RowPool:
    """The buffers the running rows of an InPlaceBatchDecoder live in, one per past input."""

    buffers: list[Handle]     # [rows, kv_heads, capacity, head_dim]
    rows: int
    capacity: int


def filled_holes(alive: Sequence[bool]) -> list[int]:
    """The indices of the alive rows, each at its own index where it can be: the alive rows beyond their
    count fill, in order, the holes the dead rows leave below it. With a pooled cache (InPlaceBatchDecoder)
    a regroup in this order moves one row per row that left, not every row behind it."""
    alive = list(alive)
    count = sum(alive)
    movers = iter(i for i in range(count, len(alive)) if alive[i])
    return [i if alive[i] else next(movers) for i in range(count)]


def batch_decoder(steps) -> BatchDecoder:
    """The continuous-batching moves for a step model's cache layout."""
    return InPlaceBatchDecoder(steps) if isinstance(steps, InPlaceCacheDecoder) else BatchDecoder(steps)


def _left_aligned(lengths: np.ndarray, slots: int) -> np.ndarray:
    """Mask rows on `slots` slots whose first lengths[row] slots are real."""
    return (np.arange(slots)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def _right_aligned(mask: np.ndarray, length: int) -> np.ndarray:
    """Mask rows on `length` slots, their last slots kept (the dropped first ones are all masked)."""
    if mask.shape[1] >= length:
        return mask[:, mask.shape[1] - length:]
    return np.concatenate([np.zeros((mask.shape[0], length - mask.shape[1]), mask.dtype), mask], axis=1)


# --------------------------------------------------------------------------- one row's tokens
@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model, and the `top` most likely tokens' (id, log-probability),
    best first, all taken from one float32 log-softmax: the token's value equals the first top value
    exactly when it is the most likely token."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


def logprobs_of(logits: np.ndarray, tokens: Sequence[int], top: int) -> list[TokenLogprob]:
    """Per row of `logits` (rows, vocab), the log-probability of `tokens[row]` and the `top` best."""
    lp = log_softmax(np.asarray(logits, np.float32).reshape(len(tokens), -1))
    if top > 0:
        values, ids = top_k(lp, min(top, lp.shape[-1]))
    out = []
    for i, token in enumerate(tokens):
        best = tuple(zip(ids[i].tolist(), values[i].tolist())) if top > 0 else ()
        out.append(TokenLogprob(int(token), float(lp[i, int(token)]), best))
    return out


class RowChooser:
    """The next token of one row, with that row's own settings and sampler (see the module docstring)."""

    def __init__(self, prompt: Sequence[int], settings: GenerationSettings, token_ids: TokenIds):
        self.tokens = [int(t) for t in prompt]
        self.prompt_len = len(self.tokens)
        self.settings, self.token_ids = settings, token_ids
        self.sampler = Sampler(settings.seed) if settings.do_sample else None
        self._plain = (self.sampler is None and settings.repetition_penalty == 1.0 and settings.min_new_tokens == 0
                       and token_ids.forced_bos is None and token_ids.forced_eos is None)

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_len

    def choose(self, logits: np.ndarray) -> int:
        """Pick the next token from this row's raw logits (vocab,) and append it."""
        if self._plain:
            token = int(np.argmax(logits))
        else:
            scores = np.array(logits, np.float32, copy=True)[None]
            process_scores(scores, np.asarray(self.tokens, np.int64)[None], np.zeros(1, np.int64), self.prompt_len,
                           self.settings, self.token_ids)
            if self.sampler is not None:
                token = int(self.sampler(warp_for_sampling(scores, self.settings))[0])
            else:
                token = int(scores[0].argmax())
        self.tokens.append(token)
        return token
