"""Everything encoder-decoder families (T5, BART, and BLIP's text side) share.

Three graphs: the encoder; the cross-attention cache generator, which turns
encoder states into every decoder layer's cross-attention keys and values once
per sequence; and the decoder, which with the cache takes those keys and values
plus its own self-attention past, so nothing about the encoder is recomputed
or re-emitted per token. Without the cache the decoder reads encoder states
and recomputes everything each step.

Nothing here is family-specific: the cache generator runs the model's own
decoder into an empty cache and keeps only the cross-attention entries, which
the exporter's dead-code elimination reduces to the key/value projections.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, EncoderDecoderCache, LogitsProcessorList

from NNDF.axes import BATCH, ENC, PAST, SEQ, TOTAL, kv_names, run_description
from NNDF.backends import CompiledBackend, TorchBackend, hf_generation_config
from NNDF.cache_io import cache_from_flat, flat_from_cache
from NNDF.cached_decoder import CachedDecoder
from NNDF.generation import GenerationOutput, TokenIds
from NNDF.onnx_export import GraphSpec, padded_mask, random_tensors
from NNDF.session import Session
from NNDF.torch_placement import Placement

KV_AXES_PAST = {0: BATCH, 2: PAST}
KV_AXES_TOTAL = {0: BATCH, 2: TOTAL}
KV_AXES_CROSS = {0: BATCH, 2: ENC}


@dataclass(frozen=True)
class Seq2SeqLayout:
    """What differs between encoder-decoder architectures at the graph boundary."""

    fp16_keep_fp32_ops: tuple[str, ...] = ()
    fp16_keep_fp32_node_patterns: tuple[str, ...] = ()   # substrings of ONNX node names kept in fp32 (GraphSpec)

    # Read the decoder's own fields: num_hidden_layers means the *encoder* depth in BART and T5,
    # and get_text_config(decoder=True) rebuilds BART's config with default head counts.
    @staticmethod
    def decoder_config(config):
        return getattr(config, "text_config", None) or config

    @classmethod
    def num_layers(cls, config) -> int:
        c = cls.decoder_config(config)
        return getattr(c, "decoder_layers", None) or getattr(c, "num_decoder_layers", None) or c.num_hidden_layers

    @classmethod
    def kv_dims(cls, config) -> tuple[int, int]:
        """(heads, head_dim) of decoder attention."""
        c = cls.decoder_config(config)
        heads = getattr(c, "decoder_attention_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "d_kv", None) or c.hidden_size // heads
        return heads, head_dim


class EncoderWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class CacheGeneratorWrapper(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, encoder_hidden_states):
        # A one-token decoder pass fills the cross-attention cache from the encoder states;
        # only those entries are returned, so the rest of the pass is traced away.
        start = torch.zeros_like(encoder_hidden_states[:, :1, 0], dtype=torch.long)
        cache = EncoderDecoderCache(DynamicCache(config=self.model.config), DynamicCache(config=self.model.config))
        self.model(decoder_input_ids=start, encoder_outputs=(encoder_hidden_states,), past_key_values=cache,
                   use_cache=True)
        return flat_from_cache(cache.cross_attention_cache)


class DecoderWrapper(torch.nn.Module):
    def __init__(self, model, with_cache: bool):
        super().__init__()
        self.model, self.with_cache = model, with_cache
        self.n_layers = Seq2SeqLayout.num_layers(model.config)

    def forward(self, input_ids, encoder_attention_mask, *rest):
        if not self.with_cache:
            encoder_hidden_states, = rest
            return self.model(decoder_input_ids=input_ids, encoder_outputs=(encoder_hidden_states,),
                              attention_mask=encoder_attention_mask, use_cache=False).logits
        n = 2 * self.n_layers
        past, cross = rest[:n], rest[n:]
        cache = EncoderDecoderCache(cache_from_flat(past, self.n_layers, self.model.config),
                                    cache_from_flat(cross, self.n_layers, self.model.config))
        # Cross keys/values come from the cache; the model still wants encoder states to size
        # the encoder mask, so give it a free (batch, enc_seq, 1) view of the right dtype.
        shape_only = cross[0][:, 0, :, :1]
        out = self.model(decoder_input_ids=input_ids, encoder_outputs=(shape_only,),
                         attention_mask=encoder_attention_mask, past_key_values=cache, use_cache=True)
        return (out.logits, *flat_from_cache(out.past_key_values.self_attention_cache))


def graph_specs(model, layout: Seq2SeqLayout) -> dict[str, GraphSpec]:
    """encoder, cache_generator, decoder (cached) and decoder_nocache."""
    config = model.config
    n = layout.num_layers(config)
    heads, head_dim = layout.kv_dims(config)
    text = layout.decoder_config(config)
    hidden, vocab = text.hidden_size, text.vocab_size
    past, present, cross = kv_names("past_key_values", n), kv_names("present", n), kv_names("cross", n)
    fp16 = dict(fp16_keep_fp32_ops=layout.fp16_keep_fp32_ops, fp16_keep_fp32_node_patterns=layout.fp16_keep_fp32_node_patterns)

    def gen(sizes):
        return torch.Generator().manual_seed(sum(sizes.values()))

    def encoder_inputs(s):
        return {"input_ids": torch.randint(0, vocab, (s[BATCH], s[ENC]), generator=gen(s)),
                "attention_mask": padded_mask(s[BATCH], s[ENC], "right")}

    def states(s):
        return torch.randn(s[BATCH], s[ENC], hidden, generator=gen(s))

    def decoder_inputs(s, with_cache):
        g = gen(s)
        feed = {"input_ids": torch.randint(0, vocab, (s[BATCH], s[SEQ]), generator=g),
                "encoder_attention_mask": padded_mask(s[BATCH], s[ENC], "right")}
        if not with_cache:
            feed["encoder_hidden_states"] = torch.randn(s[BATCH], s[ENC], hidden, generator=g)
            return feed
        feed.update(random_tensors(past, (s[BATCH], heads, s[PAST], head_dim), g))
        feed.update(random_tensors(cross, (s[BATCH], heads, s[ENC], head_dim), g))
        return feed

    return {
        "encoder": GraphSpec(
            "encoder", {"input_ids": {0: BATCH, 1: ENC}, "attention_mask": {0: BATCH, 1: ENC}},
            {"encoder_hidden_states": {0: BATCH, 1: ENC}}, EncoderWrapper, encoder_inputs,
            trace_sizes={BATCH: 2, ENC: 6}, verify_sizes=({BATCH: 1, ENC: 3}, {BATCH: 3, ENC: 17}),
            float_outputs_fp32=(), **fp16),
        "cache_generator": GraphSpec(
            "cache_generator", {"encoder_hidden_states": {0: BATCH, 1: ENC}},
            {name: dict(KV_AXES_CROSS) for name in cross}, CacheGeneratorWrapper, lambda s: {"encoder_hidden_states": states(s)},
            trace_sizes={BATCH: 2, ENC: 6}, verify_sizes=({BATCH: 1, ENC: 2}, {BATCH: 3, ENC: 19}),
            float_outputs_fp32=(), **fp16),
        "decoder": GraphSpec(
            "decoder",
            {"input_ids": {0: BATCH, 1: SEQ}, "encoder_attention_mask": {0: BATCH, 1: ENC},
             **{name: dict(KV_AXES_PAST) for name in past}, **{name: dict(KV_AXES_CROSS) for name in cross}},
            {"logits": {0: BATCH, 1: SEQ}, **{name: dict(KV_AXES_TOTAL) for name in present}},
            lambda m: DecoderWrapper(m, True), lambda s: decoder_inputs(s, True),
            trace_sizes={BATCH: 2, SEQ: 3, PAST: 4, ENC: 6},
            verify_sizes=({BATCH: 1, SEQ: 1, PAST: 0, ENC: 5}, {BATCH: 3, SEQ: 1, PAST: 37, ENC: 11},
                          {BATCH: 3, SEQ: 4, PAST: 1, ENC: 2}), **fp16),
        "decoder_nocache": GraphSpec(
            "decoder_nocache",
            {"input_ids": {0: BATCH, 1: SEQ}, "encoder_attention_mask": {0: BATCH, 1: ENC},
             "encoder_hidden_states": {0: BATCH, 1: ENC}},
            {"logits": {0: BATCH, 1: SEQ}}, lambda m: DecoderWrapper(m, False), lambda s: decoder_inputs(s, False),
            trace_sizes={BATCH: 2, SEQ: 3, ENC: 6},
            verify_sizes=({BATCH: 1, SEQ: 1, ENC: 4}, {BATCH: 3, SEQ: 9, ENC: 13}), **fp16),
    }


def needed_graphs(use_cache: bool) -> tuple[str, ...]:
    return ("encoder", "cache_generator", "decoder") if use_cache else ("encoder", "decoder_nocache")


# --------------------------------------------------------------------------- compiled backends
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


class Seq2SeqSteps(EncoderThenDecoder):
    """The decoder step after a text encoder and, with the cache, the cache generator."""

    def __init__(self, sessions: dict[str, Session], specs: dict[str, GraphSpec], start_id: int):
        super().__init__(sessions, specs)
        self.start_id = start_id

    def plan(self, rows, prompt_len, new_tokens):
        what = run_description(rows, prompt_len, new_tokens)
        for name in ("encoder", "cache_generator") if self.with_cache else ("encoder",):
            self.sessions[name].check_fits({BATCH: rows, ENC: prompt_len}, what)
        # the decoder's own sequence starts at the one start token
        self.plan_decoder(rows, 1, new_tokens, what, **{ENC: prompt_len})

    def start(self, input_ids, attention_mask):
        enc_mask = attention_mask.astype(np.int64)
        _, out = self.sessions["encoder"].run({"input_ids": input_ids.astype(np.int64), "attention_mask": enc_mask},
                                              [], ["encoder_hidden_states"])
        context = {"encoder_attention_mask": enc_mask}
        if self.with_cache:
            _, cross = self.sessions["cache_generator"].run(out, [], self.cross)
            context.update(cross)
        else:
            context.update(out)
        ids = np.full((input_ids.shape[0], 1), self.start_id, np.int64)
        return self.empty_state(input_ids.shape[0], context), ids, np.ones_like(ids)

    def full_logits(self, input_ids, attention_mask, decoder_ids):
        state, _, _ = self.start(input_ids, attention_mask)
        return self.advance(state, decoder_ids, np.ones_like(decoder_ids), all_logits=True)

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids):
        """The decoder sequence up to first_step in one pass on the cache, then one token at a time."""
        self.plan(input_ids.shape[0], input_ids.shape[1], decoder_ids.shape[1])
        state, _, _ = self.start(input_ids, attention_mask)
        return self.stepwise_logits(state, decoder_ids, np.ones_like(decoder_ids), first_step)


class CompiledSeq2Seq(CompiledBackend):
    def __init__(self, name: str, sessions: dict[str, Session], specs: dict[str, GraphSpec], token_ids: TokenIds,
                 start_id: int, precision: str):
        super().__init__(name, Seq2SeqSteps(sessions, specs, start_id), token_ids, sessions["encoder"].device_name,
                         precision)


# --------------------------------------------------------------------------- PyTorch reference
class TorchSeq2Seq(TorchBackend):
    def __init__(self, model, token_ids: TokenIds, start_id: int, placement: Placement):
        super().__init__(model, token_ids, placement)
        self.start_id = start_id
        self._encoder_times = encoder_timer(self.model.get_encoder(), placement)

    def generate(self, input_ids, attention_mask, settings, on_step=None):
        config = hf_generation_config(settings, self.token_ids, self.start_id)
        self._encoder_times.clear()
        out, steps = self._timed(lambda clock, extras: self.model.generate(
            input_ids=self.placement.tensor(input_ids), attention_mask=self.placement.tensor(attention_mask),
            generation_config=config, logits_processor=LogitsProcessorList([clock]), **extras), settings, on_step)
        return GenerationOutput(out[:, 1:].numpy(), steps, start_s=sum(self._encoder_times))

    def logits(self, input_ids, attention_mask, decoder_ids=None):
        with torch.inference_mode():
            out = self.model(input_ids=self.placement.tensor(input_ids),
                             attention_mask=self.placement.tensor(attention_mask),
                             decoder_input_ids=self.placement.tensor(decoder_ids), use_cache=False)
        return out.logits.float().cpu().numpy()

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        """The encoder once, then HF's decoder cache: up to first_step in one pass, then one token per forward."""
        mask = self.placement.tensor(attention_mask)
        parts = []
        with torch.inference_mode():
            encoded = self.model.get_encoder()(input_ids=self.placement.tensor(input_ids), attention_mask=mask)
            past = EncoderDecoderCache(DynamicCache(config=self.model.config), DynamicCache(config=self.model.config))
            for start, stop in [(0, first_step)] + [(t, t + 1) for t in range(first_step, decoder_ids.shape[1])]:
                out = self.model(encoder_outputs=encoded, attention_mask=mask, past_key_values=past, use_cache=True,
                                 decoder_input_ids=self.placement.tensor(decoder_ids[:, start:stop]))
                past = out.past_key_values
                parts.append(out.logits.float().cpu().numpy())
        return np.concatenate(parts, axis=1)


def encoder_timer(encoder: torch.nn.Module, placement: Placement) -> list[float]:
    """A list that collects -start, +end of every forward of `encoder` (its sum is the time spent
    there); the caller clears it before each generation."""
    times: list[float] = []

    def stamp(sign: int):
        placement.synchronize()
        times.append(sign * time.perf_counter())

    encoder.register_forward_pre_hook(lambda *_: stamp(-1))
    encoder.register_forward_hook(lambda *_: stamp(1))
    return times
