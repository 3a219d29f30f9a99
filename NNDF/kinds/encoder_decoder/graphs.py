"""Encoder-decoder graphs (T5, BART, and BLIP's text side): three of them.

The encoder; the cross-attention cache generator, which turns encoder states into every decoder
layer's cross-attention keys and values once per sequence; and the decoder, which with the cache
takes those keys and values plus its own self-attention past, so nothing about the encoder is
recomputed or re-emitted per token. Without the cache the decoder reads encoder states and
recomputes everything each step.

Nothing here is family-specific: the cache generator runs the model's own decoder into an empty
cache and keeps only the cross-attention entries, which the exporter's dead-code elimination
reduces to the key/value projections.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, EncoderDecoderCache

from NNDF.graphs.axes import BATCH, ENC, PAST, SEQ, TOTAL, kv_names
from NNDF.graphs.cache_io import cache_from_flat, flat_from_cache
from NNDF.graphs.spec import GraphSpec, needed_graphs, padded_mask, random_tensors

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


def specs_for(family, loaded, use_cache: bool) -> dict[str, GraphSpec]:
    """The graphs a run with or without the cache needs, by name, in the loaded model's layout."""
    specs = graph_specs(loaded.model, family.layout(loaded))
    return {name: specs[name] for name in needed_graphs(use_cache)}
