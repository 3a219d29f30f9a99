"""Everything decoder-only families share: graphs, step model, backends.

A family (GPT2, OPT, BLOOM, ...) supplies a `DecoderOnlyLayout` with what
differs (does it take position ids, how its cache tensors are laid out); the
export wrapper, the cached-decoding step model and the three backends are here
once.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache, LogitsProcessorList

from NNDF.axes import BATCH, KEPT, PAST, SEQ, TOTAL, kv_names, largest_sizes, run_description
from NNDF.backends import Backend, TorchBackend, hf_generation_config, positions_from_mask, torch_threads
from NNDF.cache_io import cache_from_flat, flat_from_cache
from NNDF.config import GenerationSettings
from NNDF.generation import GenerationOutput, TokenIds, generate
from NNDF.onnx_export import GraphSpec
from NNDF.session import Session, concrete_shape


@dataclass(frozen=True)
class DecoderOnlyLayout:
    """How one decoder-only architecture differs at its graph boundary."""

    uses_position_ids: bool = True
    past_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH, 2: PAST})      # (batch, heads, past, dim)
    present_axes: dict[int, str] = field(default_factory=lambda: {0: BATCH, 2: TOTAL})
    fp16_keep_fp32_ops: tuple[str, ...] = ()
    fp16_keep_fp32_node_patterns: tuple[str, ...] = ()   # substrings of ONNX node names kept in fp32 (GraphSpec)
    ort_fusions: str | None = None      # onnxruntime.transformers model_type whose fusions onnxrt applies
    ort_rotary: bool = False            # onnxrt fuses rotary embeddings with the model's cos/sin table

    def num_layers(self, config) -> int:
        return config.num_hidden_layers


def kv_shape(config, batch: int, length: int) -> tuple[int, ...]:
    """(batch, kv heads, length, head_dim) from the config: grouped-query attention keeps
    num_key_value_heads heads, and some models set head_dim apart from hidden_size / heads."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (batch, kv_heads, length, head_dim)


class DecoderOnlyWrapper(torch.nn.Module):
    """Flat tensors in and out around a HF causal LM, so the graph has no Cache objects."""

    def __init__(self, model, layout: DecoderOnlyLayout, with_cache: bool):
        super().__init__()
        self.model, self.layout, self.with_cache = model, layout, with_cache
        self.n_layers = layout.num_layers(model.config)

    def forward(self, input_ids, attention_mask, logits_index, *rest):
        position_ids = None
        if self.layout.uses_position_ids:
            position_ids, rest = rest[0], rest[1:]
        cache = cache_from_flat(rest, self.n_layers, self.model.config) if self.with_cache else None
        kwargs = {"position_ids": position_ids} if position_ids is not None else {}
        # Only the positions in logits_index go through the vocabulary projection: generation
        # needs the last one, accuracy all of them (the projection is most of a prefill's work).
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                         use_cache=self.with_cache, logits_to_keep=logits_index, **kwargs)
        if not self.with_cache:
            return out.logits
        return (out.logits, *flat_from_cache(out.past_key_values))


def decoder_spec(model, layout: DecoderOnlyLayout, with_cache: bool) -> GraphSpec:
    config = model.config
    n_layers = layout.num_layers(config)
    inputs: dict[str, dict[int, str]] = {"input_ids": {0: BATCH, 1: SEQ}, "attention_mask": {0: BATCH, 1: TOTAL},
                                         "logits_index": {0: KEPT}}
    if layout.uses_position_ids:
        inputs["position_ids"] = {0: BATCH, 1: SEQ}
    outputs: dict[str, dict[int, str]] = {"logits": {0: BATCH, 1: KEPT}}
    if with_cache:
        inputs.update({n: dict(layout.past_axes) for n in kv_names("past_key_values", n_layers)})
        outputs.update({n: dict(layout.present_axes) for n in kv_names("present", n_layers)})

    def make_inputs(sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(sum(sizes.values()))
        b, s, p = sizes[BATCH], sizes[SEQ], sizes.get(PAST, 0) if with_cache else 0
        mask = torch.ones(b, p + s, dtype=torch.int64)
        if b > 1:  # left-pad row 0 so padded rows are always checked
            mask[0, : min(2, p + s - 1)] = 0
        kept = sizes.get(KEPT, s)
        feed = {"input_ids": torch.randint(0, config.vocab_size, (b, s), generator=gen), "attention_mask": mask,
                "logits_index": torch.arange(s - kept, s)}
        if layout.uses_position_ids:
            feed["position_ids"] = torch.from_numpy(positions_from_mask(mask.numpy())[:, p:])
        if with_cache:
            for name in kv_names("past_key_values", n_layers):
                feed[name] = torch.randn(kv_shape(config, b, p), generator=gen)
        return feed

    trace = {BATCH: 2, SEQ: 3, PAST: 5} if with_cache else {BATCH: 2, SEQ: 7}
    verify = (({BATCH: 1, SEQ: 1, PAST: 37}, {BATCH: 3, SEQ: 4, PAST: 0}, {BATCH: 2, SEQ: 6, PAST: 3, KEPT: 1})
              if with_cache else ({BATCH: 3, SEQ: 11}, {BATCH: 1, SEQ: 5, KEPT: 1}))
    return GraphSpec(
        name="decoder" if with_cache else "decoder_nocache",
        inputs=inputs, outputs=outputs,
        make_module=lambda m: DecoderOnlyWrapper(m, layout, with_cache),
        make_inputs=make_inputs, trace_sizes=trace, verify_sizes=verify,
        fp16_keep_fp32_ops=layout.fp16_keep_fp32_ops, fp16_keep_fp32_node_patterns=layout.fp16_keep_fp32_node_patterns,
    )


# --------------------------------------------------------------------------- compiled backends
CAPACITY_BUCKET = 64   # fixed KV capacity is rounded up to this: generations of similar length share a graph


def decode_capacity(prompt_len: int, new_tokens: int, past_max: int | None) -> int:
    """Slots of a fixed-capacity KV cache for one generation: the past of its last decode step
    (prompt + new - 2), rounded up to a bucket so the next generation of a similar length finds the
    same shapes, but never past what the engine's profile accepts."""
    need = max(prompt_len + new_tokens - 2, 1)
    rounded = -(-need // CAPACITY_BUCKET) * CAPACITY_BUCKET
    return max(need, min(rounded, past_max)) if past_max is not None else rounded


class DecoderOnlySteps:
    """The generation loop's StepModel over any compiled Session (ONNX Runtime, TensorRT).

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
    """

    def __init__(self, session: Session, spec: GraphSpec, with_cache: bool):
        self.session, self.spec, self.with_cache = session, spec, with_cache
        self.past = [n for n in spec.input_names if n.startswith("past_key_values.")]
        self.present = [n for n in spec.output_names if n.startswith("present.")]
        self.uses_positions = "position_ids" in spec.inputs
        self.batch_axis = next((a for a, n in spec.inputs[self.past[0]].items() if n == BATCH), 0) if self.past else 0
        self.past_axis = next((a for a, n in spec.inputs[self.past[0]].items() if n == PAST), 2) if self.past else 2
        self.capacity: int | None = None       # fixed-capacity slots for this generation's decode steps

    def _feed(self, ids: np.ndarray, mask: np.ndarray, seen: int, all_logits: bool = False) -> dict:
        new = ids.shape[1] - seen
        keep = np.arange(new) if all_logits else np.array([new - 1])
        feed = {"input_ids": ids[:, seen:].astype(np.int64), "attention_mask": mask.astype(np.int64),
                "logits_index": keep.astype(np.int64)}
        if self.uses_positions:
            feed["position_ids"] = positions_from_mask(mask)[:, seen:]
        return feed

    def plan(self, rows, prompt_len, new_tokens):
        sizes = largest_sizes(rows, prompt_len, new_tokens, self.with_cache)
        self.capacity = None
        if self.with_cache and self.session.fixed_shape_steps and new_tokens > 1:
            self.capacity = decode_capacity(prompt_len, new_tokens, self.session.largest(PAST))
            sizes.update({PAST: self.capacity, TOTAL: self.capacity + 1})
        self.session.check_fits(sizes, run_description(rows, prompt_len, new_tokens))

    def start(self, input_ids, attention_mask):
        state = {"seen": 0, "cache": None}
        if self.with_cache:
            batch = input_ids.shape[0]
            state["cache"] = [self.session.zeros(n, concrete_shape(self.session.input_shape(n), self.spec.inputs[n],
                                                                   {BATCH: batch, PAST: 0}))
                              for n in self.past]
        return state, input_ids.astype(np.int64), attention_mask.astype(np.int64)

    def step(self, state, decoder_ids, attention_mask):
        if not self.with_cache:
            host, _ = self.session.run(self._feed(decoder_ids, attention_mask, 0), ["logits"])
            return host["logits"][:, -1]
        if self.capacity is not None and state["seen"]:
            return self._fixed_step(state, decoder_ids, attention_mask)
        logits = self._advance(state, decoder_ids, attention_mask)
        if self.capacity is not None:      # the prompt's presents go into the fixed buffers before the next step
            state["pending"] = state["cache"]
        return logits[:, -1]

    def _advance(self, state, ids, mask, all_logits: bool = False) -> np.ndarray:
        """Feed the tokens of `ids` not yet seen on top of the cache; their logits (or the last one's)."""
        feed = self._feed(ids, mask, state["seen"], all_logits)
        feed.update(zip(self.past, state["cache"]))
        host, device = self.session.run(feed, ["logits"], self.present)
        state["cache"] = [device[n] for n in self.present]
        state["seen"] = ids.shape[1]
        return host["logits"]

    def _fixed_step(self, state, decoder_ids, attention_mask):
        """One token on the fixed-capacity past: same shapes and addresses at every decode step."""
        self._settle(state)
        rows, real = attention_mask.shape         # real: tokens so far, the one fed now included
        mask = np.zeros((rows, self.capacity + 1), np.int64)
        mask[:, self.capacity + 1 - real:] = attention_mask
        feed = {"input_ids": decoder_ids[:, -1:].astype(np.int64), "attention_mask": mask,
                "logits_index": np.zeros(1, np.int64)}
        if self.uses_positions:
            feed["position_ids"] = positions_from_mask(mask)[:, -1:]
        feed.update(zip(self.past, state["fixed"]))
        host, device = self.session.run(feed, ["logits"], self.present)
        state["pending"] = [device[n] for n in self.present]      # C + 1 slots; the newest C are kept
        state["seen"] = decoder_ids.shape[1]
        return host["logits"][:, -1]

    def _settle(self, state, beam_idx: np.ndarray | None = None) -> None:
        """Move the last step's presents into the fixed buffers (reordering beams on the way), or
        reorder the buffers in place if they are already there."""
        if state.get("fixed") is None:
            rows = state["pending"][0].shape[self.batch_axis]
            state["fixed"] = [self.session.cache_buffer(n, concrete_shape(
                self.session.input_shape(n), self.spec.inputs[n], {BATCH: rows, PAST: self.capacity}))
                for n in self.past]
        sources = state.pop("pending", None) or state["fixed"]
        for target, source in zip(state["fixed"], sources):
            self.session.right_align_into(target, source, self.past_axis, beam_idx, self.batch_axis)

    def reorder(self, state, beam_idx):
        if self.capacity is not None and (state.get("pending") or state.get("fixed")):
            self._settle(state, beam_idx)
        elif state["cache"] is not None:
            state["cache"] = [self.session.take(h, beam_idx, axis=self.batch_axis) for h in state["cache"]]

    def full_logits(self, input_ids, attention_mask):
        state, ids, mask = self.start(input_ids, attention_mask)
        feed = self._feed(ids, mask, 0, all_logits=True)
        if self.with_cache:
            feed.update(zip(self.past, state["cache"]))
        host, _ = self.session.run(feed, ["logits"])
        return host["logits"]

    def cached_logits(self, input_ids, attention_mask, first_step):
        """Prefill up to first_step, then one token at a time, as generation feeds the cache."""
        length = input_ids.shape[1]
        self.plan(input_ids.shape[0], first_step, length - first_step + 1)
        state, ids, mask = self.start(input_ids, attention_mask)
        parts = [self._advance(state, ids[:, :first_step], mask[:, :first_step], all_logits=True)]
        for t in range(first_step + 1, length + 1):
            parts.append(self._advance(state, ids[:, :t], mask[:, :t], all_logits=True))
        return np.concatenate(parts, axis=1)


class CompiledDecoderOnly(Backend):
    """A decoder-only model on a compiled session; `name` is onnxrt or trt."""

    def __init__(self, name: str, session: Session, spec: GraphSpec, with_cache: bool, token_ids: TokenIds,
                 precision: str, torch_threads_while_running: int = 1):
        super().__init__(token_ids, session.device_name, precision)
        self.name = name
        self.steps = DecoderOnlySteps(session, spec, with_cache)
        self._torch_threads = torch_threads_while_running

    def generate(self, input_ids, attention_mask, settings: GenerationSettings, on_step=None) -> GenerationOutput:
        with torch_threads(self._torch_threads):
            return generate(self.steps, input_ids, attention_mask, settings, self.token_ids, on_step)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch_threads(self._torch_threads):
            return self.steps.full_logits(input_ids, attention_mask).astype(np.float32)

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        if not self.steps.with_cache:   # this backend's graph has no cache: its one pass is what generation runs
            return self.logits(input_ids, attention_mask)
        with torch_threads(self._torch_threads):
            return self.steps.cached_logits(input_ids, attention_mask, first_step).astype(np.float32)


# --------------------------------------------------------------------------- PyTorch reference
class TorchDecoderOnly(TorchBackend):
    """HuggingFace generate on the PyTorch model: the reference every other backend must match."""

    def generate(self, input_ids, attention_mask, settings, on_step=None):
        config = hf_generation_config(settings, self.token_ids)
        out, steps = self._timed(lambda clock, extras: self.model.generate(
            input_ids=self.placement.tensor(input_ids), attention_mask=self.placement.tensor(attention_mask),
            logits_processor=LogitsProcessorList([clock]), generation_config=config, **extras), settings, on_step)
        return GenerationOutput(out[:, input_ids.shape[1]:].numpy(), steps)

    def _forward(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past=None):
        kwargs = {}
        if "position_ids" in inspect.signature(self.model.forward).parameters:
            kwargs["position_ids"] = self.placement.tensor(positions)
        return self.model(input_ids=self.placement.tensor(ids), attention_mask=self.placement.tensor(mask),
                          past_key_values=past, use_cache=past is not None, **kwargs)

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch.inference_mode():
            out = self._forward(input_ids, attention_mask, positions_from_mask(attention_mask))
        return out.logits.float().cpu().numpy()

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        """HF's own cache: the prompt part in one pass, then one token per forward, as generate runs."""
        positions = positions_from_mask(attention_mask)
        parts = []
        with torch.inference_mode():
            past = DynamicCache(config=self.model.config)
            for start, stop in [(0, first_step)] + [(t, t + 1) for t in range(first_step, input_ids.shape[1])]:
                out = self._forward(input_ids[:, start:stop], attention_mask[:, :stop], positions[:, start:stop], past)
                past = out.past_key_values
                parts.append(out.logits.float().cpu().numpy())
        return np.concatenate(parts, axis=1)
