"""The graphs of an image-to-text model, and which of them a run needs.

Three graphs, as for Seq2Seq: the vision encoder (pixel values -> image
embeddings); the cross-attention cache generator (image embeddings -> every
decoder layer's cross-attention keys and values, once per image); and the text
decoder, a causal LM that takes its own self-attention past plus those cross
keys/values and returns logits and its new past. Without the cache the decoder
reads the image embeddings and recomputes everything each step.

Unlike Seq2Seq the decoder takes an attention mask and position ids: a text
prefix (conditional captioning) makes prompts of different lengths, which are
left-padded as for decoder-only models. The number of image tokens is fixed by
the model (image size and patch size), so it is a static dimension in every
graph; only the batch, and the decoder's sequence lengths, are dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import DynamicCache, EncoderDecoderCache

from NNDF.graphs.axes import BATCH, KEPT, PAST, SEQ, TOTAL, kv_names, positions_from_mask
from NNDF.graphs.cache_io import cache_from_flat, flat_from_cache
from NNDF.graphs.spec import GraphSpec, needed_graphs, padded_mask, random_tensors
from NNDF.models.images import ImageSettings

WRAPPERS_VERSION = 2   # bump when a wrapper below changes what the graphs compute: it is in every export key


@dataclass(frozen=True)
class Vision2SeqLayout:
    """What one image-to-text architecture declares; the graphs and backends here do the rest."""

    vision_model: Callable[[torch.nn.Module], torch.nn.Module]   # model -> module(pixel_values=...).last_hidden_state
    text_decoder: Callable[[torch.nn.Module], torch.nn.Module]   # model -> causal LM with cross-attention
    vision_config: Callable[[Any], Any]
    text_config: Callable[[Any], Any]
    image_tokens: Callable[[Any], int]                           # vision config -> image embeddings per image
    image_settings: Callable[[Any], ImageSettings]               # model config -> its image processor's settings
    token_ids: Callable[[Any], dict]                             # model config -> {"bos", "eos", "pad"} of captions
    hf_generate: Callable[..., torch.Tensor]                     # the model's own generate: see frameworks backend
    fp16_keep_fp32_ops: tuple[str, ...] = ()

    def dims(self, config) -> dict[str, int]:
        text, vision = self.text_config(config), self.vision_config(config)
        heads = text.num_attention_heads
        return {"layers": text.num_hidden_layers, "heads": heads, "head_dim": text.hidden_size // heads,
                "vocab": text.vocab_size, "image_tokens": self.image_tokens(vision), "vision_hidden": vision.hidden_size,
                "image_size": vision.image_size}


class VisionEncoderWrapper(torch.nn.Module):
    def __init__(self, model, layout: Vision2SeqLayout):
        super().__init__()
        self.vision = layout.vision_model(model)
        d = layout.dims(model.config)
        self.tokens, self.hidden = d["image_tokens"], d["vision_hidden"]

    def forward(self, pixel_values):
        # The traced embedding slices by a runtime size, which leaves the output's dims unknown in
        # the ONNX graph; a reshape to (input batch, constant sizes) states them (a -1 would not).
        states = self.vision(pixel_values=pixel_values).last_hidden_state
        return states.reshape(pixel_values.shape[0], self.tokens, self.hidden)


class CrossCacheWrapper(torch.nn.Module):
    def __init__(self, model, layout: Vision2SeqLayout):
        super().__init__()
        self.decoder, self.text_config = layout.text_decoder(model), layout.text_config(model.config)

    def forward(self, image_embeds):
        # A one-token decoder pass fills an empty cross-attention cache from the image embeddings;
        # only those entries are returned, so the rest of the pass is traced away.
        start = torch.zeros_like(image_embeds[:, :1, 0], dtype=torch.long)
        cache = EncoderDecoderCache(DynamicCache(config=self.text_config), DynamicCache(config=self.text_config))
        self.decoder(input_ids=start, encoder_hidden_states=image_embeds, past_key_values=cache, use_cache=True)
        return flat_from_cache(cache.cross_attention_cache)


class TextDecoderWrapper(torch.nn.Module):
    def __init__(self, model, layout: Vision2SeqLayout, with_cache: bool):
        super().__init__()
        self.decoder, self.text_config = layout.text_decoder(model), layout.text_config(model.config)
        self.with_cache, self.n_layers = with_cache, self.text_config.num_hidden_layers

    def forward(self, input_ids, attention_mask, position_ids, logits_index, *rest):
        # Only the positions in logits_index go through the vocabulary projection.
        common = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      logits_to_keep=logits_index)
        if not self.with_cache:
            image_embeds, = rest
            return self.decoder(**common, encoder_hidden_states=image_embeds, use_cache=False).logits
        n = 2 * self.n_layers
        past, cross = rest[:n], rest[n:]
        # A non-empty cross-attention cache is marked as filled (EncoderDecoderCache.is_updated), so
        # the layers read these keys/values and never project image embeddings. They still need
        # encoder states to exist, so pass a free (batch, image_tokens, 1) view.
        cache = EncoderDecoderCache(cache_from_flat(past, self.n_layers, self.text_config),
                                    cache_from_flat(cross, self.n_layers, self.text_config))
        out = self.decoder(**common, encoder_hidden_states=cross[0][:, 0, :, :1], past_key_values=cache, use_cache=True)
        return (out.logits, *flat_from_cache(out.past_key_values.self_attention_cache))


def graph_specs(model, layout: Vision2SeqLayout) -> dict[str, GraphSpec]:
    """encoder (the vision encoder), cache_generator, decoder (cached) and decoder_nocache."""
    d = layout.dims(model.config)
    past, present, cross = (kv_names(p, d["layers"]) for p in ("past_key_values", "present", "cross"))
    shared = dict(fp16_keep_fp32_ops=layout.fp16_keep_fp32_ops, key_extra={"vision2seq_wrappers": WRAPPERS_VERSION})

    def gen(sizes):
        return torch.Generator().manual_seed(sum(sizes.values()))

    def pixels(s):
        return {"pixel_values": torch.randn(s[BATCH], 3, d["image_size"], d["image_size"], generator=gen(s))}

    def embeds(s):
        return {"image_embeds": torch.randn(s[BATCH], d["image_tokens"], d["vision_hidden"], generator=gen(s))}

    def decoder_inputs(s, with_cache):
        g, b, seq = gen(s), s[BATCH], s[SEQ]
        p = s[PAST] if with_cache else 0
        mask = padded_mask(b, p + seq, "left")
        kept = s.get(KEPT, seq)
        feed = {"input_ids": torch.randint(0, d["vocab"], (b, seq), generator=g), "attention_mask": mask,
                "position_ids": torch.from_numpy(positions_from_mask(mask.numpy())[:, p:]),
                "logits_index": torch.arange(seq - kept, seq)}
        if not with_cache:
            feed["image_embeds"] = torch.randn(b, d["image_tokens"], d["vision_hidden"], generator=g)
            return feed
        feed.update(random_tensors(past, (b, d["heads"], p, d["head_dim"]), g))
        feed.update(random_tensors(cross, (b, d["heads"], d["image_tokens"], d["head_dim"]), g))
        return feed

    text_inputs = {"input_ids": {0: BATCH, 1: SEQ}, "attention_mask": {0: BATCH, 1: TOTAL},
                   "position_ids": {0: BATCH, 1: SEQ}, "logits_index": {0: KEPT}}
    return {
        "encoder": GraphSpec(
            "encoder", {"pixel_values": {0: BATCH}}, {"image_embeds": {0: BATCH}},
            lambda m: VisionEncoderWrapper(m, layout), pixels,
            trace_sizes={BATCH: 2}, verify_sizes=({BATCH: 1}, {BATCH: 3}), float_outputs_fp32=(), **shared),
        "cache_generator": GraphSpec(
            "cache_generator", {"image_embeds": {0: BATCH}}, {name: {0: BATCH} for name in cross},
            lambda m: CrossCacheWrapper(m, layout), embeds,
            trace_sizes={BATCH: 2}, verify_sizes=({BATCH: 1}, {BATCH: 3}), float_outputs_fp32=(), **shared),
        "decoder": GraphSpec(
            "decoder",
            {**text_inputs, **{name: {0: BATCH, 2: PAST} for name in past}, **{name: {0: BATCH} for name in cross}},
            {"logits": {0: BATCH, 1: KEPT}, **{name: {0: BATCH, 2: TOTAL} for name in present}},
            lambda m: TextDecoderWrapper(m, layout, True), lambda s: decoder_inputs(s, True),
            trace_sizes={BATCH: 2, SEQ: 3, PAST: 5},
            verify_sizes=({BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: 3, SEQ: 1, PAST: 1}, {BATCH: 3, SEQ: 1, PAST: 13},
                          {BATCH: 1, SEQ: 4, PAST: 0}, {BATCH: 3, SEQ: 6, PAST: 2, KEPT: 1}), **shared),
        "decoder_nocache": GraphSpec(
            "decoder_nocache", {**text_inputs, "image_embeds": {0: BATCH}}, {"logits": {0: BATCH, 1: KEPT}},
            lambda m: TextDecoderWrapper(m, layout, False), lambda s: decoder_inputs(s, False),
            trace_sizes={BATCH: 2, SEQ: 7},
            verify_sizes=({BATCH: 1, SEQ: 1}, {BATCH: 3, SEQ: 12}, {BATCH: 3, SEQ: 5, KEPT: 1}), **shared),
    }


def specs_for(family, loaded, use_cache: bool) -> dict[str, GraphSpec]:
    """The graphs a run with or without the cache needs, by name, in the loaded model's layout."""
    specs = graph_specs(loaded.model, family.layout(loaded))
    return {name: specs[name] for name in needed_graphs(use_cache)}
