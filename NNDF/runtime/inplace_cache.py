"""The step model of a decoder graph that writes its KV cache in place (NNDF/export/llama_graph.py,
gpt2_graph.py).

The traced decoders (cached_decoder.py) take the past and give a present one slot longer, so every
step copies the whole cache. A graph built on ONNX Runtime's GroupQueryAttention instead appends the
new keys and values into the buffer it read the past from (past_present_share_buffer): the caller
binds `present.*` to the very buffers it feeds as `past_key_values.*`, and nothing is copied.

Its contract is NNDF/graphs/inplace_io.py. Each row keeps its own tokens in cache slots 0 .. total-1,
in order, so a token's slot is its position: the rotary angles are HF's, a sliding window is a window
of real tokens, and no padding ever enters the cache or costs attention. Rows of one batch may hold different numbers of tokens
(`total_lengths`), which is what lets continuous batching regroup rows without moving a slot
(continuous.py) and beam search reorder rows by gathering them. The capacity (slots per row) is
fixed for a generation: planned from its prompt and new tokens, grown by whole buckets if a caller
feeds more.

Masks from the generation loop are left-padded and the accuracy action's are right-padded: a row's
tokens start at its first unmasked position, and everything after it is taken as the row's sequence
(right padding is then computed like a token and never read, since nothing real follows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from NNDF.graphs.inplace_io import LOGIT_POSITIONS, PAST, PRESENT, QUERY_LENGTHS, TOTAL_LENGTHS
from NNDF.runtime.generation import leading_pads
from NNDF.runtime.session import Handle, Session

if TYPE_CHECKING:
    from NNDF.graphs.spec import GraphSpec

CAPACITY_BUCKET = 64           # capacity grows by whole buckets when a caller feeds past the plan


def round_up(n: int, bucket: int = CAPACITY_BUCKET) -> int:
    return -(-n // bucket) * bucket


@dataclass
class InPlaceState:
    """Where one batch stands: its cache buffers and, per row, the tokens in them."""

    buffers: list[Handle]          # one per past input, [rows, kv_heads, capacity, head_dim]
    capacity: int                  # slots per row in the buffers
    lengths: np.ndarray            # (rows,) tokens in each row's slots
    offsets: np.ndarray            # (rows,) leading pads of the rows as the caller gave them
    fed: int = 0                   # positions of the caller's sequences already in the cache


class InPlaceCacheDecoder:
    """The generation loop's StepModel over an in-place graph (see the module docstring)."""

    with_cache = True
    batch_axis, slot_axis = 0, 2

    def __init__(self, session: Session, spec: GraphSpec):
        self.session, self.spec = session, spec
        self.past = [n for n in spec.input_names if n.startswith(PAST + ".")]
        self.present = [PRESENT + n[len(PAST):] for n in self.past]
        shape = session.input_shape(self.past[0])
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self._planned = 0          # slots the next generation needs (plan)

    def graphs(self) -> dict[str, tuple[Session, GraphSpec]]:
        return {self.spec.name: (self.session, self.spec)}

    # ------------------------------------------------------------------ StepModel
    def plan(self, rows: int, prompt_len: int, new_tokens: int) -> None:
        # the last step feeds the token before the last new one: prompt + new - 1 tokens in the cache
        self._planned = prompt_len + max(new_tokens, 1) - 1

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        ids, mask = input_ids.astype(np.int64), attention_mask.astype(np.int64)
        state = self.empty_state(ids.shape[0], max(self._planned, ids.shape[1]))
        state.offsets = leading_pads(mask).astype(np.int64)
        self._planned = 0
        return state, ids, mask

    def step(self, state: InPlaceState, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.advance(state, ids)[:, -1]

    def reorder(self, state: InPlaceState, beam_idx: np.ndarray) -> None:
        state.buffers = [self.session.take(h, beam_idx, axis=self.batch_axis) for h in state.buffers]
        state.lengths, state.offsets = state.lengths[beam_idx], state.offsets[beam_idx]

    # ------------------------------------------------------------------ teacher-forced scoring
    def full_logits(self, input_ids, attention_mask, decoder_ids=None) -> np.ndarray:
        state, ids, _ = self.start(input_ids, attention_mask)
        return self.advance(state, ids, all_logits=True)

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None) -> np.ndarray:
        """Prefill up to first_step, then one token at a time, as generation feeds the cache."""
        self.plan(input_ids.shape[0], first_step, input_ids.shape[1] - first_step + 1)
        state, ids, _ = self.start(input_ids, attention_mask)
        stops = [first_step, *range(first_step + 1, ids.shape[1] + 1)]
        return np.concatenate([self.advance(state, ids[:, :stop], all_logits=True) for stop in stops], axis=1)

    # ------------------------------------------------------------------ building blocks
    def empty_state(self, rows: int, capacity: int) -> InPlaceState:
        return InPlaceState(self.buffers(rows, capacity), capacity, np.zeros(rows, np.int64), np.zeros(rows, np.int64))

    def buffers(self, rows: int, capacity: int) -> list[Handle]:
        """Fresh cache buffers; their slots are written before they are read, so they start uninitialised."""
        return [self.session.slot_buffer(name, [rows, self.kv_heads, capacity, self.head_dim]) for name in self.past]

    def advance(self, state: InPlaceState, ids: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Feed each row's tokens of `ids` (the caller's sequences so far) not yet in its cache. Logits of
        the positions fed, in the caller's coordinates ((rows, new, vocab), zero where a row has a pad),
        or with all_logits False of each row's last position ((rows, 1, vocab))."""
        first = np.maximum(state.fed, state.offsets)            # each row's first position to feed
        query = ids.shape[1] - first
        if (query <= 0).any():
            raise ValueError("every row needs at least one token to feed (a row of the mask is all padding)")
        width = int(query.max())
        chunk = np.zeros((ids.shape[0], width), np.int64)
        for row, start in enumerate(first):
            chunk[row, :query[row]] = ids[row, start:]
        positions = np.tile(np.arange(width), (ids.shape[0], 1)) if all_logits else (query - 1)[:, None]
        logits = self.run(state, chunk, query, positions)
        new = ids.shape[1] - state.fed
        state.fed = ids.shape[1]
        if not all_logits:
            return logits
        out = np.zeros((ids.shape[0], new, logits.shape[-1]), logits.dtype)
        for row, start in enumerate(first):
            out[row, start - (ids.shape[1] - new):] = logits[row, :query[row]]
        return out

    def run(self, state: InPlaceState, chunk: np.ndarray, query: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """One call of the graph: `chunk` (rows, width) holds each row's `query` new tokens left-aligned;
        logits at `positions` (rows, kept) of the chunk."""
        total = state.lengths + query
        self.ensure_capacity(state, int(state.lengths.max()) + chunk.shape[1])   # the graph's rule: past + width <= capacity
        feed = {"input_ids": chunk, QUERY_LENGTHS: query.astype(np.int32), TOTAL_LENGTHS: total.astype(np.int32),
                LOGIT_POSITIONS: positions.astype(np.int64), **dict(zip(self.past, state.buffers))}
        host = self.session.run_into(feed, ["logits"], dict(zip(self.present, state.buffers)))
        state.lengths = total
        return host["logits"]

    def ensure_capacity(self, state: InPlaceState, slots: int) -> None:
        """Grow the buffers (by whole buckets, keeping every row's slots) if `slots` do not fit."""
        if slots <= state.capacity:
            return
        rows, capacity = len(state.lengths), round_up(slots)
        grown = self.buffers(rows, capacity)
        used = int(state.lengths.max(initial=0))
        for target, source in zip(grown, state.buffers):
            self.session.copy_slots(target, source, np.arange(rows), 0, used, self.batch_axis, self.slot_axis)
        state.buffers, state.capacity = grown, capacity
