"""The encoder-decoder step model: the encoder (and, with the cache, the cross-attention cache
generator) runs once when a generation starts; the decoder then steps on the shared CachedDecoder."""

from __future__ import annotations

import numpy as np

from NNDF.graphs.axes import BATCH, ENC, run_description
from NNDF.graphs.spec import GraphSpec
from NNDF.runtime.cached_decoder import EncoderThenDecoder
from NNDF.runtime.session import Session


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
