"""The image-to-text step model: the vision encoder (and, with the cache, the cross-attention
cache generator) runs once per image when a generation starts; the text decoder then steps on
the shared CachedDecoder (through encoder_decoder's EncoderThenDecoder)."""

from __future__ import annotations

import numpy as np

from NNDF.graphs.spec import GraphSpec
from NNDF.runtime.cached_decoder import EncoderThenDecoder
from NNDF.runtime.session import Session


class ImageSteps(EncoderThenDecoder):
    """The decoder step after the vision encoder and, with the cache, the cache generator, for one
    batch of images."""

    def __init__(self, sessions: dict[str, Session], specs: dict[str, GraphSpec]):
        super().__init__(sessions, specs)
        self.pixel_values: np.ndarray | None = None     # the images the next generation starts from

    # plan: the vision side's only dynamic axis is the batch of images, which the engines are built for,
    # so only the decoder is checked (CachedDecoder.plan).

    def start(self, input_ids, attention_mask):
        """Vision encoder (+ cache generator) per image; the loop has already repeated the text rows per beam."""
        rows, images = input_ids.shape[0], self.pixel_values.shape[0]
        encoder = self.sessions["encoder"]
        pixels = self.pixel_values.astype(encoder.input_dtype("pixel_values"), copy=False)
        _, context = encoder.run({"pixel_values": pixels}, [], ["image_embeds"])
        if self.with_cache:
            _, context = self.sessions["cache_generator"].run(context, [], self.cross)
        if rows != images:   # beam search: row i continues image i // beams
            idx = np.repeat(np.arange(images), rows // images)
            context = {name: self.session.take(h, idx, axis=0) for name, h in context.items()}
        return self.empty_state(rows, context), input_ids.astype(np.int64), attention_mask.astype(np.int64)

    def full_logits(self, prompts_ids, attention_mask, decoder_ids=None):
        """Every position's logits of the decoder sequences, the images' context computed first."""
        state, ids, mask = self.start(prompts_ids, attention_mask)
        return self.advance(state, ids, mask, all_logits=True)

    def cached_logits(self, prompts_ids, attention_mask, first_step, decoder_ids=None):
        """Up to first_step in one pass on the cache, then one token at a time, as generation feeds it."""
        self.plan(prompts_ids.shape[0], first_step, prompts_ids.shape[1] - first_step + 1)
        state, ids, mask = self.start(prompts_ids, attention_mask)
        return self.stepwise_logits(state, ids, mask, first_step)
