"""The decoder-only step model: the prompt goes straight into the decoder, whose mask covers its
own past, so it can keep a fixed-capacity cache (NNDF/runtime/cached_decoder.py)."""

from __future__ import annotations

from NNDF.runtime.cached_decoder import CachedDecoder


class DecoderOnlySteps(CachedDecoder):
    """The generation loop's StepModel over a decoder-only graph: the prompt goes straight into the
    decoder, whose mask covers its own past, so it can keep a fixed-capacity cache (CachedDecoder)."""

    FIXED_CAPACITY = True

    def full_logits(self, input_ids, attention_mask, decoder_ids=None):
        state, ids, mask = self.start(input_ids, attention_mask)
        return self.advance(state, ids, mask, all_logits=True)

    def cached_logits(self, input_ids, attention_mask, first_step, decoder_ids=None):
        """Prefill up to first_step, then one token at a time, as generation feeds the cache."""
        self.plan(input_ids.shape[0], first_step, input_ids.shape[1] - first_step + 1)
        state, ids, mask = self.start(input_ids, attention_mask)
        return self.stepwise_logits(state, ids, mask, first_step)


