"""Teacher-forced scoring, with the original demo's definitions: what accuracy (LAMBADA) and run
(label perplexity) both compute. logits[k] predicts seq[k + 1]; one sample's mean cross-entropy is
capped at MAX_LOG_PPL and a reported perplexity at MAX_PPL, as the demo capped them."""

from __future__ import annotations

import numpy as np

from NNDF.kinds.image_to_text.model import ImagePrompts
from NNDF.models.family import LoadedModel
from NNDF.models.tokenizers import pad_rows
from NNDF.runtime.backends import Backend
from NNDF.runtime.generation import log_softmax

MAX_LOG_PPL = 12.0     # the demo's cap on one sample's mean cross-entropy
MAX_PPL = 1e5          # and on a reported perplexity


def score_sample(logits: np.ndarray, seq: np.ndarray, n_targets: int, top_ns: list[int]) -> dict:
    """logits[k] predicts seq[k + 1]. Mean cross-entropies are capped at MAX_LOG_PPL, as the demo did."""
    logp = log_softmax(logits[:-1])
    nll = -logp[np.arange(len(seq) - 1), seq[1:]]
    predicted = logits[len(seq) - 1 - n_targets: len(seq) - 1]
    targets = seq[-n_targets:]
    ranks = (predicted > predicted[np.arange(n_targets), targets][:, None]).sum(axis=1)  # 0 = best
    return {"hits": {n: float(np.mean(ranks < n)) for n in top_ns},
            "target_nll": min(float(nll[-n_targets:].mean()), MAX_LOG_PPL),
            "seq_nll": min(float(nll.mean()), MAX_LOG_PPL)}


def batch_logits(backend: Backend, loaded: LoadedModel, batch: list[tuple[np.ndarray, np.ndarray | None]],
                 n_targets: int, num_beams: int, use_cache: bool) -> list[np.ndarray]:
    """Teacher-forced logits of each (sequence, encoder input) in one batch, trimmed to its length.
    The encoder input is None (decoder-only), token ids (encoder-decoder) or an image (image-to-text).

    Rows are right-padded, so each sequence keeps positions 0..len-1 and no real token sees
    a pad. With use_cache everything from the earliest target on is computed by one-token
    steps on the cache (some rows then step through context too: the same logits).
    """
    pad = loaded.generation_defaults["pad_token_id"] or 0
    seqs = [np.repeat(seq[None], num_beams, axis=0) for seq, _ in batch]
    ids, mask = pad_rows([row for s in seqs for row in s], pad, "right")
    first_step = min(len(seq) for seq, _ in batch) - n_targets
    if batch[0][1] is None:
        logits = (backend.cached_logits(ids, mask, first_step) if use_cache else backend.logits(ids, mask))
    elif loaded.reads_images:   # the "encoder input" is an image's pixel values; the sequence its caption
        prompts = ImagePrompts(np.stack([image for _, image in batch for _ in range(num_beams)]), ids)
        logits = (backend.cached_logits(prompts, mask, first_step) if use_cache else backend.logits(prompts, mask))
    else:
        enc_ids, enc_mask = pad_rows([enc for _, enc in batch for _ in range(num_beams)], pad, "right")
        logits = (backend.cached_logits(enc_ids, enc_mask, first_step, decoder_ids=ids) if use_cache
                  else backend.logits(enc_ids, enc_mask, ids))
    return [logits[i * num_beams, :len(seq)] for i, (seq, _) in enumerate(batch)]
