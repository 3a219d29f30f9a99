"""One cached decoder step, shared by decoder-only, encoder-decoder and image-to-text models.

Every compiled text decoder here looks the same at its boundary: `input_ids` (the tokens not yet
in its cache), optionally `attention_mask`, `position_ids` and `logits_index`, its self-attention
past in (`past_key_values.*`) and out (`present.*`), and inputs that stay the same for a whole
generation (an encoder's mask, cross-attention keys/values, or, without a cache, the encoder's
states). `CachedDecoder` owns that once: the names, the empty past, feeding new tokens on top of
the cache, beam reordering and the fixed-capacity cache for CUDA graphs. It is the generation
loop's StepModel for decoder-only models as it is; encoder-decoder and image-to-text step models
subclass it and only say what runs before the decoder (`start`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from NNDF.graphs.axes import BATCH, PAST, TOTAL, largest_sizes, positions_from_mask, run_description
from NNDF.graphs.spec import GraphSpec
from NNDF.runtime.session import Handle, Session, concrete_shape

PAST_PREFIX, PRESENT_PREFIX, CROSS_PREFIX = "past_key_values.", "present.", "cross."
CAPACITY_BUCKET = 64   # fixed KV capacity is rounded up to this: generations of similar length share a graph


def decode_capacity(prompt_len: int, new_tokens: int, past_max: int | None) -> int:
    """Slots of a fixed-capacity KV cache for one generation: the past of its last decode step
    (prompt + new - 2), rounded up to a bucket so the next generation of a similar length finds the
    same shapes, but never past what the engine's profile accepts."""
    need = max(prompt_len + new_tokens - 2, 1)
    rounded = -(-need // CAPACITY_BUCKET) * CAPACITY_BUCKET
    return max(need, min(rounded, past_max)) if past_max is not None else rounded


@dataclass
class DecoderState:
    """Where one generation stands in the decoder."""

    # Inputs fed unchanged at every step: the encoder's mask, cross-attention keys/values or, without
    # a cache, the encoder's states. Never reordered: beams of one input share them.
    context: dict[str, Handle] = field(default_factory=dict)
    past: list[Handle] = field(default_factory=list)    # self-attention keys/values, one per past input
    seen: int = 0                                       # decoder tokens already in `past`
    fixed: list[Handle] | None = None                   # fixed-capacity buffers (see CachedDecoder)
    pending: list[Handle] | None = None                 # presents not yet moved into `fixed`


class CachedDecoder:
    """The generation loop's StepModel over one compiled decoder graph (ONNX Runtime, TensorRT).

    Whether it has a cache is the graph's: a decoder graph with past inputs is the cached one.

    Fixed-capacity decoding (sessions with `fixed_shape_steps`, i.e. TensorRT with CUDA graphs): a
    graph replays only the shapes and addresses it was captured with, and a growing cache changes
    both every step. So after the prompt, the past lives in one buffer per layer tensor of C slots
    (`decode_capacity`), right-aligned: the real past fills the last slots, the first ones are
    masked (attention_mask 0). Every decode step feeds that past (C) plus one token and gets
    presents of C + 1; their newest C slots are copied back into the buffer on the device (the
    oldest slot dropped is always a masked one), and beam search reorders rows inside it. Every
    decode step of a generation, and of later generations with the same capacity, then has the
    same shapes and addresses: one captured graph replays them all.

    It is exact because these models take their positions from the mask, not from slot indices:
    position ids (GPT2, OPT, GPT-Neo/J/NeoX) are the count of real tokens before each token, and
    BLOOM's ALiBi distances come from the mask's cumulative sum; masked slots get zero attention
    weight. Relative distances between real tokens are unchanged, as with left-padded prompts.
    Only decoder-only models opt in (`FIXED_CAPACITY`): an encoder-decoder's decoder takes no mask
    over its own past, so its cache grows (the TensorRT session then keeps buffers per shape).
    """

    FIXED_CAPACITY = False

    def __init__(self, session: Session, spec: GraphSpec):
        self.session, self.spec = session, spec
        self.past = [n for n in spec.input_names if n.startswith(PAST_PREFIX)]
        self.cross = [n for n in spec.input_names if n.startswith(CROSS_PREFIX)]
        self.present = [n for n in spec.output_names if n.startswith(PRESENT_PREFIX)]
        self.with_cache = bool(self.past)
        axes = spec.inputs[self.past[0]] if self.past else {}
        self.batch_axis = next((a for a, n in axes.items() if n == BATCH), 0)
        self.past_axis = next((a for a, n in axes.items() if n == PAST), 2)
        self.capacity: int | None = None       # fixed-capacity slots for this generation's decode steps

    def stepwise_logits(self, state: DecoderState, ids: np.ndarray, mask: np.ndarray, first_step: int) -> np.ndarray:
        """Logits of every position of `ids`: the first `first_step` in one pass, then one token per
        step on the cache, as generation feeds it (`cached_logits` of the step models)."""
        stops = [first_step, *range(first_step + 1, ids.shape[1] + 1)]
        return np.concatenate([self.advance(state, ids[:, :stop], mask[:, :stop], all_logits=True) for stop in stops],
                              axis=1)

    def graphs(self) -> dict[str, tuple[Session, GraphSpec]]:
        """Graph name -> (session, spec) of every graph a generation runs (what export-triton serves)."""
        return {self.spec.name: (self.session, self.spec)}

    # ------------------------------------------------------------------ StepModel
    def plan(self, rows: int, prompt_len: int, new_tokens: int) -> None:
        self.plan_decoder(rows, prompt_len, new_tokens, run_description(rows, prompt_len, new_tokens))

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        """A decoder-only model: the prompt is the decoder's first input."""
        return self.empty_state(input_ids.shape[0]), input_ids.astype(np.int64), attention_mask.astype(np.int64)

    def step(self, state: DecoderState, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.capacity is not None and state.seen:
            return self._fixed_step(state, ids, mask)
        logits = self.advance(state, ids, mask)
        if self.capacity is not None:      # the prompt's presents go into the fixed buffers before the next step
            state.pending = state.past
        return logits[:, -1]

    def reorder(self, state: DecoderState, beam_idx: np.ndarray) -> None:
        # Beams of one input share its context (encoder mask, cross keys/values) and beam_idx never
        # crosses inputs, so only the decoder's own past needs reordering.
        if self.capacity is not None and (state.pending or state.fixed):
            self._settle(state, beam_idx)
        else:
            state.past = [self.session.take(h, beam_idx, axis=self.batch_axis) for h in state.past]

    # ------------------------------------------------------------------ building blocks
    def plan_decoder(self, rows: int, prompt_len: int, new_tokens: int, what: str, **other_sizes: int) -> None:
        """Fail now if the decoder cannot take what this generation will feed it; choose the fixed capacity."""
        sizes = {**largest_sizes(rows, prompt_len, new_tokens, self.with_cache), **other_sizes}
        self.capacity = None
        if self.FIXED_CAPACITY and self.with_cache and self.session.fixed_shape_steps and new_tokens > 1:
            self.capacity = decode_capacity(prompt_len, new_tokens, self.session.largest(PAST))
            sizes.update({PAST: self.capacity, TOTAL: self.capacity + 1})
        self.session.check_fits(sizes, what)

    def empty_state(self, rows: int, context: dict[str, Handle] | None = None) -> DecoderState:
        """Nothing seen yet: an empty past (length 0) per past input."""
        past = [self._past_buffer(self.session.zeros, n, rows, 0) for n in self.past]
        return DecoderState(context=dict(context or {}), past=past)

    def advance(self, state: DecoderState, ids: np.ndarray, mask: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Feed the tokens of `ids` not yet in the cache (all of them without one); their logits,
        or the last one's where the graph projects only chosen positions."""
        feed = self.feed(ids, mask, state.seen, all_logits)
        feed.update(state.context)
        feed.update(zip(self.past, state.past))
        host, device = self.session.run(feed, ["logits"], self.present)
        if self.with_cache:
            state.past = [device[n] for n in self.present]
            state.seen = ids.shape[1]
        return host["logits"]

    def feed(self, ids: np.ndarray, mask: np.ndarray, seen: int, all_logits: bool) -> dict:
        """The graph's own inputs for the tokens after the first `seen` (mask: over past and new tokens)."""
        inputs, new = self.spec.inputs, ids.shape[1] - seen
        feed = {"input_ids": ids[:, seen:].astype(np.int64)}
        if "attention_mask" in inputs:
            feed["attention_mask"] = mask.astype(np.int64)
        if "position_ids" in inputs:
            feed["position_ids"] = positions_from_mask(mask)[:, mask.shape[1] - new:]
        if "logits_index" in inputs:
            feed["logits_index"] = (np.arange(new) if all_logits else np.array([new - 1])).astype(np.int64)
        return feed

    def _past_buffer(self, make, name: str, rows: int, length: int) -> Handle:
        return make(name, concrete_shape(self.session.input_shape(name), self.spec.inputs[name],
                                         {BATCH: rows, PAST: length}))

    # ------------------------------------------------------------------ fixed capacity
    def _fixed_step(self, state: DecoderState, ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One token on the fixed-capacity past: same shapes and addresses at every decode step."""
        self._settle(state)
        rows, real = attention_mask.shape         # real: tokens so far, the one fed now included
        mask = np.zeros((rows, self.capacity + 1), np.int64)
        mask[:, self.capacity + 1 - real:] = attention_mask
        feed = self.feed(ids[:, -1:], mask, 0, all_logits=False)
        feed.update(state.context)
        feed.update(zip(self.past, state.fixed))
        host, device = self.session.run(feed, ["logits"], self.present)
        state.pending = [device[n] for n in self.present]      # C + 1 slots; the newest C are kept
        state.seen = ids.shape[1]
        return host["logits"][:, -1]

    def _settle(self, state: DecoderState, beam_idx: np.ndarray | None = None) -> None:
        """Move the last step's presents into the fixed buffers (reordering beams on the way), or
        reorder the buffers in place if they are already there."""
        if state.fixed is None:
            rows = state.pending[0].shape[self.batch_axis]
            state.fixed = [self._past_buffer(self.session.cache_buffer, n, rows, self.capacity) for n in self.past]
        sources, state.pending = state.pending or state.fixed, None
        for target, source in zip(state.fixed, sources):
            self.session.right_align_into(target, source, self.past_axis, beam_idx, self.batch_axis)


# --------------------------------------------------------------------------- after encoders
def decoder_of(specs: dict) -> str:
    """The decoder graph among a run's graphs: the cached one if the run has it."""
    return "decoder" if "decoder" in specs else "decoder_nocache"


class EncoderThenDecoder(CachedDecoder):
    """The shared decoder step (CachedDecoder) of a run whose graphs are an encoder, with the cache a
    cache generator, and the decoder (text or image encoders: Seq2SeqSteps, Vision2Seq's ImageSteps)."""

    def __init__(self, sessions: dict[str, Session], specs: dict[str, GraphSpec]):
        super().__init__(sessions[decoder_of(specs)], specs[decoder_of(specs)])
        self.sessions, self.specs = sessions, specs

    def graphs(self):
        return {name: (self.sessions[name], spec) for name, spec in self.specs.items()}
